/*
 * patscan: the fast path of regexp:/pcre: table parsing.
 *
 * Opening a large pattern table is dominated by compiling its patterns;
 * compilation runs on several threads (proxymapd_native.c), so the
 * parsing that feeds it must not be the slow part. This scanner splits
 * the source into logical lines as Postfix's readllines() does and takes
 * the rules that parse without any warning: a match rule
 *
 *     [!...]<d>pattern<d>flags value
 *
 * with known flags, a non-empty value whose $ references are all plain
 * group numbers, an "if <d>pattern<d>flags" with nothing after it, and a
 * bare "endif". Their patterns go to the compiler at once. Every other
 * line (anything that would produce a warning, the regexp two-pattern
 * form, continued lines, lines with NUL bytes) is left to the full parser
 * in src/tables/pattern/pattern.ts, which holds Postfix's warning texts; a test
 * checks that both give the same rules for every line this one takes.
 */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8

#include "patscan.h"

#include <pcre2.h>
#include <regex.h>
#include <string.h>

/* ISSPACE in the C locale: SP HT LF VT FF CR. */
static int is_space(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13); }

/* ISALNUM in the C locale (ASCII only). */
static int is_alnum(unsigned char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }

static size_t skip_space(const char *t, size_t pos, size_t end) {
  while (pos < end && is_space((unsigned char)t[pos])) pos++;
  return pos;
}

/* The line [s, e) starts with `word` (ASCII case-insensitive, as (c | 0x20) == w) and then a non-alphanumeric byte or its end. */
static int starts_with_word(const char *t, size_t s, size_t e, const char *word) {
  size_t n = strlen(word);
  if (e - s < n) return 0;
  for (size_t i = 0; i < n; i++)
    if (((unsigned char)t[s + i] | 0x20) != (unsigned char)word[i]) return 0;
  return s + n == e || !is_alnum((unsigned char)t[s + n]);
}

typedef struct {
  size_t pat_start, pat_end; /* the pattern (escapes kept) */
  size_t end;                /* just after the flags */
  int match;                 /* 0 after an odd number of '!' */
  uint32_t options;          /* regcomp cflags / pcre2 options */
} Pattern;

/*
 * "[!...]<d>pattern<d>flags" at t[pos..e): 1 when it parses without a
 * warning, else 0 (no pattern, a backslash delimiter, no closing
 * delimiter, a trailing backslash, an unknown or obsolete flag).
 */
static int scan_pattern(int dialect, const char *t, size_t pos, size_t e, Pattern *out) {
  int match = 1;
  for (; pos < e; pos++) {
    unsigned char c = (unsigned char)t[pos];
    if (c == '!')
      match = !match;
    else if (!is_space(c))
      break;
  }
  if (pos >= e) return 0;
  char d = t[pos++];
  if (d == '\\') return 0;
  size_t start = pos;
  for (;;) {
    if (pos >= e) return 0;
    char c = t[pos];
    if (c == '\\') {
      if (pos + 1 >= e) return 0; /* regexp and pcre treat a final backslash differently: the full parser decides */
      pos += 2;
      continue;
    }
    if (c == d) break;
    pos++;
  }
  out->pat_start = start;
  out->pat_end = pos;
  out->match = match;
  uint32_t opt;
  size_t p = pos + 1;
  if (dialect == PATSCAN_PCRE) {
    opt = PCRE2_CASELESS | PCRE2_DOTALL;
    for (; p < e && !is_space((unsigned char)t[p]); p++) {
      switch (t[p]) {
        case 'i': opt ^= PCRE2_CASELESS; break;
        case 'm': opt ^= PCRE2_MULTILINE; break;
        case 's': opt ^= PCRE2_DOTALL; break;
        case 'x': opt ^= PCRE2_EXTENDED; break;
        case 'A': opt ^= PCRE2_ANCHORED; break;
        case 'E': opt ^= PCRE2_DOLLAR_ENDONLY; break;
        case 'U': opt ^= PCRE2_UNGREEDY; break;
        default: return 0; /* 'X' (obsolete) and unknown flags warn */
      }
    }
  } else {
    opt = REG_EXTENDED | REG_ICASE;
    for (; p < e; p++) {
      unsigned char c = (unsigned char)t[p];
      if (is_space(c) || c == '!') break;
      switch (c) {
        case 'i': opt ^= REG_ICASE; break;
        case 'm': opt ^= REG_NEWLINE; break;
        case 'x': opt ^= REG_EXTENDED; break;
        default: return 0;
      }
    }
  }
  out->options = opt;
  out->end = p;
  return 1;
}

/*
 * The value t[s..e) (non-empty): *has_dollar when it holds a '$', *max_sub
 * the largest $n. 0 when a reference is not a plain group number of 1 to 9
 * digits ($name, $0, empty or unclosed references): those warn.
 */
static int scan_value(const char *t, size_t s, size_t e, int *has_dollar, int32_t *max_sub) {
  *has_dollar = 0;
  *max_sub = 0;
  const char *q0 = memchr(t + s, '$', e - s);
  if (q0 == NULL) return 1;
  *has_dollar = 1;
  size_t q = (size_t)(q0 - t);
  while (q < e) {
    if (t[q] != '$') {
      q++;
      continue;
    }
    if (q + 1 < e && t[q + 1] == '$') {
      q += 2;
      continue;
    }
    q++;
    size_t ns, ne;
    if (q < e && (t[q] == '{' || t[q] == '(')) {
      char close = t[q] == '{' ? '}' : ')';
      ns = ne = q + 1;
      while (ne < e && t[ne] >= '0' && t[ne] <= '9') ne++;
      if (ne >= e || t[ne] != close) return 0;
      q = ne + 1;
    } else {
      ns = ne = q;
      while (ne < e && (is_alnum((unsigned char)t[ne]) || t[ne] == '_')) ne++;
      q = ne;
    }
    if (ne - ns < 1 || ne - ns > 9) return 0;
    int32_t n = 0;
    for (size_t i = ns; i < ne; i++) {
      if (t[i] < '0' || t[i] > '9') return 0;
      n = n * 10 + (t[i] - '0');
    }
    if (n < 1) return 0;
    if (n > *max_sub) *max_sub = n;
  }
  return 1;
}

typedef struct {
  int dialect;
  char *t;
  int fast;
  int no_regsub;
  int32_t *rec;
  long count;
  patscan_add_fn add;
  void *ctx;
  int failed;
} Scan;

static int32_t *new_record(Scan *sc, int32_t type, size_t line_no) {
  int32_t *r = sc->rec + (size_t)sc->count++ * PATSCAN_FIELDS;
  memset(r, 0, PATSCAN_FIELDS * sizeof(int32_t));
  r[0] = type;
  r[1] = (int32_t)line_no;
  return r;
}

static void span_record(Scan *sc, int32_t type, size_t line_no, size_t s, size_t e) {
  int32_t *r = new_record(sc, type, line_no);
  r[2] = (int32_t)s;
  r[3] = (int32_t)e;
}

/* Hand a parsed pattern to the compiler (its closing delimiter becomes its NUL); a record for it. */
static int32_t *take(Scan *sc, int32_t type, size_t line_no, const Pattern *p, uint32_t options) {
  sc->t[p->pat_end] = '\0';
  int32_t index = sc->add(sc->ctx, sc->t + p->pat_start, options);
  if (index < 0) sc->failed = 1;
  int32_t *r = new_record(sc, type, line_no);
  r[2] = index;
  r[3] = p->match;
  r[8] = (int32_t)p->pat_start;
  r[9] = (int32_t)p->pat_end;
  r[10] = (int32_t)options;
  return r;
}

/* One logical line of one physical line, t[s..e) (without its newline, not starting with whitespace). */
static void single_line(Scan *sc, size_t line_no, size_t s, size_t e0) {
  const char *t = sc->t;
  size_t e = e0;
  if (!sc->fast || memchr(t + s, '\0', e - s) != NULL) goto full;
  while (e > s && is_space((unsigned char)t[e - 1])) e--;
  if (e == s) goto full;
  Pattern p;
  if (!is_alnum((unsigned char)t[s])) {
    if (!scan_pattern(sc->dialect, t, s, e, &p)) goto full;
    if (sc->dialect == PATSCAN_REGEXP && p.end < e && t[p.end] == '!') goto full; /* a second pattern */
    size_t vs = skip_space(t, p.end, e);
    if (vs >= e) goto full; /* no replacement text */
    int has_dollar;
    int32_t max_sub;
    if (!scan_value(t, vs, e, &has_dollar, &max_sub)) goto full;
    if (max_sub > 0 && (!p.match || sc->no_regsub)) goto full;
    uint32_t options = p.options;
    if (sc->dialect == PATSCAN_REGEXP && max_sub == 0) options |= REG_NOSUB;
    int32_t *r = take(sc, PATSCAN_MATCH, line_no, &p, options);
    r[4] = (int32_t)vs;
    r[5] = (int32_t)e;
    r[6] = has_dollar;
    r[7] = max_sub;
    return;
  }
  if (starts_with_word(t, s, e, "if")) {
    if (!scan_pattern(sc->dialect, t, skip_space(t, s + 2, e), e, &p)) goto full;
    if (skip_space(t, p.end, e) < e) goto full; /* extra text after IF */
    take(sc, PATSCAN_IF, line_no, &p, p.options);
    return;
  }
  if (starts_with_word(t, s, e, "endif") && skip_space(t, s + 5, e) == e) {
    new_record(sc, PATSCAN_ENDIF, line_no);
    return;
  }
full:
  span_record(sc, PATSCAN_LINE, line_no, s, e0);
}

size_t patscan_max_records(const char *text, size_t len) {
  size_t n = 1;
  for (const char *p = text, *end = text + len; (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++) n++;
  return n;
}

long patscan(int dialect, char *text, size_t len, int fast, int no_regsub, int32_t *records, patscan_add_fn add, void *ctx) {
  Scan sc = {dialect, text, fast, no_regsub, records, 0, add, ctx, 0};
  /* the logical line being collected: its first physical line's number and start, the end of its last one */
  int active = 0, multi = 0;
  size_t cur_line = 0, cur_start = 0, cur_end = 0;
  size_t index = 0;
  for (size_t start = 0; start < len && !sc.failed; index++) {
    const char *nl = memchr(text + start, '\n', len - start);
    size_t end = nl ? (size_t)(nl - text) : len;
    size_t ls = start;
    start = end + 1;
    /* blank or comment: ignored, and it does not end a logical line */
    size_t i = skip_space(text, ls, end);
    if (i == end || text[i] == '#') continue;
    int cont = is_space((unsigned char)text[ls]);
    if (active && !cont) {
      if (multi || is_space((unsigned char)text[cur_start]))
        span_record(&sc, PATSCAN_JOINED, cur_line, cur_start, cur_end);
      else
        single_line(&sc, cur_line, cur_start, cur_end);
      active = 0;
    }
    if (!active) {
      active = 1;
      multi = 0;
      cur_line = index + 1;
      cur_start = ls;
      cur_end = end;
    } else {
      multi = 1;
      cur_end = end;
    }
  }
  if (active && !sc.failed) {
    if (multi || is_space((unsigned char)text[cur_start]))
      span_record(&sc, PATSCAN_JOINED, cur_line, cur_start, cur_end);
    else
      single_line(&sc, cur_line, cur_start, cur_end);
  }
  return sc.failed ? -1 : sc.count;
}
