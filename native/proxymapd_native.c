/*
 * proxymapd_native: the regular-expression engines Postfix itself uses for
 * regexp: and pcre: tables, exposed to Node through N-API.
 *
 *  - POSIX regcomp/regexec/regerror from the C library (glibc), always run
 *    under the "C" locale (one byte = one character, ASCII-only case
 *    folding), whatever locale the Node process has.
 *  - PCRE2 8-bit (libpcre2-8), no UTF mode, no JIT, default contexts.
 *
 * Strings cross the boundary as JS "byte strings" (every char code 0..255,
 * read with napi_get_value_string_latin1) and are handed to the engines as
 * NUL-terminated C strings, as Postfix does.
 *
 * Besides single-pattern compile/exec functions there is a "rule set": the
 * whole ordered rule list of one table (match rules with an optional second
 * pattern, IF with its ENDIF target, ENDIF), evaluated natively for one key
 * so that a lookup costs one call however many rules the table has.
 */
#define _GNU_SOURCE
#define PCRE2_CODE_UNIT_WIDTH 8

#include <locale.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>
#include <pcre2.h>

#include "sqlite.h"

/* ------------------------------------------------------------------ */
/* Plumbing                                                            */
/* ------------------------------------------------------------------ */

#define CHECK(env, call)                                                   \
  do {                                                                     \
    if ((call) != napi_ok) {                                               \
      const napi_extended_error_info *info_ = NULL;                        \
      napi_get_last_error_info((env), &info_);                             \
      bool pending_ = false;                                               \
      napi_is_exception_pending((env), &pending_);                         \
      if (!pending_)                                                       \
        napi_throw_error((env), NULL,                                      \
                         info_ && info_->error_message ? info_->error_message \
                                                       : "N-API call failed"); \
      return NULL;                                                         \
    }                                                                      \
  } while (0)

#define THROW(env, msg)                     \
  do {                                      \
    napi_throw_type_error((env), NULL, (msg)); \
    return NULL;                            \
  } while (0)

/*
 * Per-thread state (the addon may be loaded by several worker threads): the
 * "C" locale made current around every regcomp/regexec call, scratch
 * buffers, and a default PCRE2 match context (the same defaults as the NULL
 * context Postfix passes).
 */
static _Thread_local locale_t c_locale = (locale_t)0;

static locale_t enter_c_locale(void) {
  if (c_locale == (locale_t)0) c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
  return c_locale != (locale_t)0 ? uselocale(c_locale) : (locale_t)0;
}

static void leave_c_locale(locale_t saved) {
  if (saved != (locale_t)0) uselocale(saved);
}

/* A growable scratch buffer for subjects (the engines need C strings). */
typedef struct {
  char *data;
  size_t cap;
} Scratch;

static _Thread_local Scratch subject_scratch = {NULL, 0};

/*
 * Copy a JS string (byte string) into a NUL-terminated C buffer. Returns the
 * buffer, or NULL with an exception pending. *len_out = bytes before the
 * first NUL (what C code sees).
 */
static char *get_bytes(napi_env env, napi_value v, Scratch *s, size_t *len_out) {
  size_t len = 0;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    napi_throw_type_error(env, NULL, "expected a string");
    return NULL;
  }
  if (napi_get_value_string_latin1(env, v, NULL, 0, &len) != napi_ok) {
    napi_throw_error(env, NULL, "cannot read string");
    return NULL;
  }
  if (s->cap < len + 1) {
    size_t cap = s->cap ? s->cap : 256;
    while (cap < len + 1) cap *= 2;
    char *p = realloc(s->data, cap);
    if (!p) {
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    s->data = p;
    s->cap = cap;
  }
  size_t copied = 0;
  if (napi_get_value_string_latin1(env, v, s->data, len + 1, &copied) != napi_ok) {
    napi_throw_error(env, NULL, "cannot read string");
    return NULL;
  }
  s->data[copied] = 0;
  if (len_out) *len_out = strlen(s->data);
  return s->data;
}

static napi_value make_string(napi_env env, const char *text) {
  napi_value v;
  if (napi_create_string_latin1(env, text, NAPI_AUTO_LENGTH, &v) != napi_ok) return NULL;
  return v;
}

static napi_value make_int(napi_env env, int64_t n) {
  napi_value v;
  if (napi_create_int64(env, n, &v) != napi_ok) return NULL;
  return v;
}

static int set_prop(napi_env env, napi_value obj, const char *name, napi_value v) {
  return v != NULL && napi_set_named_property(env, obj, name, v) == napi_ok;
}

/* ------------------------------------------------------------------ */
/* Compiled patterns (reference counted: a JS handle plus rule sets)   */
/* ------------------------------------------------------------------ */

enum { KIND_REGEX = 1, KIND_PCRE = 2, KIND_SET = 3 };

/* Common head of both compiled-pattern objects. */
typedef struct {
  int kind; /* KIND_REGEX or KIND_PCRE */
  int refs; /* the JS handle and every rule set holding the pattern */
} ObjHead;

typedef struct {
  ObjHead h;
  regex_t re;
} RegexObj;

typedef struct {
  ObjHead h;
  pcre2_code *code;
  pcre2_match_data *md;
  uint32_t capture_count;
} PcreObj;

static void regex_unref(RegexObj *r) {
  if (r && --r->h.refs == 0) {
    regfree(&r->re);
    free(r);
  }
}

static void pcre_unref(PcreObj *p) {
  if (p && --p->h.refs == 0) {
    pcre2_match_data_free(p->md);
    pcre2_code_free(p->code);
    free(p);
  }
}

static void obj_unref(void *o) {
  if (!o) return;
  if (((ObjHead *)o)->kind == KIND_REGEX)
    regex_unref((RegexObj *)o);
  else
    pcre_unref((PcreObj *)o);
}

static void finalize_obj(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  obj_unref(data);
}

/* The object behind a handle, checked for its kind; NULL with an exception otherwise. */
static void *get_obj(napi_env env, napi_value v, int kind) {
  napi_valuetype t;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, v, &data) != napi_ok || data == NULL || ((ObjHead *)data)->kind != kind) {
    napi_throw_type_error(env, NULL, kind == KIND_REGEX ? "expected a regex handle" : "expected a pcre handle");
    return NULL;
  }
  return data;
}

static PCRE2_SIZE *match_ovector(PcreObj *p) { return pcre2_get_ovector_pointer(p->md); }

/* The PCRE2 text for an error code, the way Postfix builds it (256-byte buffer). */
static void pcre_error_text(int code, char *buf, size_t size) {
  int len = pcre2_get_error_message(code, (PCRE2_UCHAR *)buf, size);
  if (len <= 0) snprintf(buf, size, "unexpected pcre2 error code %d", code);
}

static _Thread_local pcre2_match_context *match_context = NULL;

/* ------------------------------------------------------------------ */
/* POSIX regex                                                         */
/* ------------------------------------------------------------------ */

/* regexCompile(pattern, cflags) -> { handle, nsub } | { error } */
static napi_value RegexCompile(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) THROW(env, "regexCompile(pattern, cflags)");
  Scratch pat = {NULL, 0};
  char *pattern = get_bytes(env, argv[0], &pat, NULL);
  if (!pattern) return NULL;
  int32_t cflags;
  if (napi_get_value_int32(env, argv[1], &cflags) != napi_ok) {
    free(pat.data);
    THROW(env, "cflags must be a number");
  }
  RegexObj *r = calloc(1, sizeof(*r));
  if (!r) {
    free(pat.data);
    THROW(env, "out of memory");
  }
  r->h.kind = KIND_REGEX;
  locale_t saved = enter_c_locale();
  int err = regcomp(&r->re, pattern, cflags);
  napi_value result;
  CHECK(env, napi_create_object(env, &result));
  if (err != 0) {
    char errbuf[256];
    (void)regerror(err, &r->re, errbuf, sizeof(errbuf));
    leave_c_locale(saved);
    free(r);
    free(pat.data);
    if (!set_prop(env, result, "error", make_string(env, errbuf))) return NULL;
    if (!set_prop(env, result, "code", make_int(env, err))) return NULL;
    return result;
  }
  leave_c_locale(saved);
  free(pat.data);
  r->h.refs = 1;
  napi_value handle;
  if (napi_create_external(env, r, finalize_obj, NULL, &handle) != napi_ok) {
    regex_unref(r);
    THROW(env, "cannot create handle");
  }
  if (!set_prop(env, result, "handle", handle)) return NULL;
  if (!set_prop(env, result, "nsub", make_int(env, (int64_t)r->re.re_nsub))) return NULL;
  return result;
}

/*
 * regexExec(handle, subject, nmatch) -> null | Int32Array | { error, code }
 * The array has 2*nmatch entries: rm_so, rm_eo per group (-1 = unset).
 */
static napi_value RegexExec(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) THROW(env, "regexExec(handle, subject, nmatch)");
  RegexObj *r = get_obj(env, argv[0], KIND_REGEX);
  if (!r) return NULL;
  char *subject = get_bytes(env, argv[1], &subject_scratch, NULL);
  if (!subject) return NULL;
  uint32_t nmatch;
  if (napi_get_value_uint32(env, argv[2], &nmatch) != napi_ok || nmatch > 100000) THROW(env, "bad nmatch");
  regmatch_t *pm = nmatch ? calloc(nmatch, sizeof(regmatch_t)) : NULL;
  if (nmatch && !pm) THROW(env, "out of memory");
  locale_t saved = enter_c_locale();
  int err = regexec(&r->re, subject, nmatch, pm, 0);
  napi_value result;
  if (err == REG_NOMATCH) {
    leave_c_locale(saved);
    free(pm);
    CHECK(env, napi_get_null(env, &result));
    return result;
  }
  if (err != 0) {
    char errbuf[256];
    (void)regerror(err, &r->re, errbuf, sizeof(errbuf));
    leave_c_locale(saved);
    free(pm);
    CHECK(env, napi_create_object(env, &result));
    if (!set_prop(env, result, "error", make_string(env, errbuf))) return NULL;
    if (!set_prop(env, result, "code", make_int(env, err))) return NULL;
    return result;
  }
  leave_c_locale(saved);
  napi_value ab;
  void *data;
  if (napi_create_arraybuffer(env, (size_t)nmatch * 2 * sizeof(int32_t), &data, &ab) != napi_ok) {
    free(pm);
    THROW(env, "out of memory");
  }
  int32_t *out = data;
  for (uint32_t i = 0; i < nmatch; i++) {
    out[2 * i] = (int32_t)pm[i].rm_so;
    out[2 * i + 1] = (int32_t)pm[i].rm_eo;
  }
  free(pm);
  CHECK(env, napi_create_typedarray(env, napi_int32_array, (size_t)nmatch * 2, ab, 0, &result));
  return result;
}

/* ------------------------------------------------------------------ */
/* PCRE2                                                               */
/* ------------------------------------------------------------------ */

/* pcreCompile(pattern, options) -> { handle, captureCount } | { error, code, offset } */
static napi_value PcreCompile(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) THROW(env, "pcreCompile(pattern, options)");
  Scratch pat = {NULL, 0};
  char *pattern = get_bytes(env, argv[0], &pat, NULL);
  if (!pattern) return NULL;
  uint32_t options;
  if (napi_get_value_uint32(env, argv[1], &options) != napi_ok) {
    free(pat.data);
    THROW(env, "options must be a number");
  }
  int errcode = 0;
  PCRE2_SIZE erroffset = 0;
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &errcode, &erroffset, NULL);
  free(pat.data);
  napi_value result;
  CHECK(env, napi_create_object(env, &result));
  if (code == NULL) {
    char buf[256];
    pcre_error_text(errcode, buf, sizeof(buf));
    if (!set_prop(env, result, "error", make_string(env, buf))) return NULL;
    if (!set_prop(env, result, "code", make_int(env, errcode))) return NULL;
    if (!set_prop(env, result, "offset", make_int(env, (int64_t)erroffset))) return NULL;
    return result;
  }
  PcreObj *p = calloc(1, sizeof(*p));
  if (!p) {
    pcre2_code_free(code);
    THROW(env, "out of memory");
  }
  p->h.kind = KIND_PCRE;
  p->h.refs = 1;
  p->code = code;
  p->md = pcre2_match_data_create_from_pattern(code, NULL);
  if (p->md == NULL || pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &p->capture_count) != 0) {
    pcre_unref(p);
    THROW(env, "pcre2 setup failed");
  }
  napi_value handle;
  if (napi_create_external(env, p, finalize_obj, NULL, &handle) != napi_ok) {
    pcre_unref(p);
    THROW(env, "cannot create handle");
  }
  if (!set_prop(env, result, "handle", handle)) return NULL;
  if (!set_prop(env, result, "captureCount", make_int(env, p->capture_count))) return NULL;
  return result;
}

/* pcreCaptureCount(handle) -> number */
static napi_value PcreCaptureCount(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) THROW(env, "pcreCaptureCount(handle)");
  PcreObj *p = get_obj(env, argv[0], KIND_PCRE);
  if (!p) return NULL;
  return make_int(env, p->capture_count);
}

static int pcre_run(PcreObj *p, const char *subject, size_t len) {
  if (match_context == NULL) match_context = pcre2_match_context_create(NULL);
  return pcre2_match(p->code, (PCRE2_SPTR)subject, len, 0, 0, p->md, match_context);
}

/*
 * pcreMatch(handle, subject) -> null | Int32Array | { error, code }
 * The array holds 2*(captureCount+1) offsets (-1 = unset).
 */
static napi_value PcreMatch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) THROW(env, "pcreMatch(handle, subject)");
  PcreObj *p = get_obj(env, argv[0], KIND_PCRE);
  if (!p) return NULL;
  size_t len;
  char *subject = get_bytes(env, argv[1], &subject_scratch, &len);
  if (!subject) return NULL;
  int rc = pcre_run(p, subject, len);
  napi_value result;
  if (rc == PCRE2_ERROR_NOMATCH) {
    CHECK(env, napi_get_null(env, &result));
    return result;
  }
  if (rc <= 0) {
    char buf[256];
    pcre_error_text(rc, buf, sizeof(buf));
    CHECK(env, napi_create_object(env, &result));
    if (!set_prop(env, result, "error", make_string(env, buf))) return NULL;
    if (!set_prop(env, result, "code", make_int(env, rc))) return NULL;
    return result;
  }
  size_t pairs = (size_t)p->capture_count + 1;
  napi_value ab;
  void *data;
  CHECK(env, napi_create_arraybuffer(env, pairs * 2 * sizeof(int32_t), &data, &ab));
  int32_t *out = data;
  PCRE2_SIZE *ov = match_ovector(p);
  for (size_t i = 0; i < 2 * pairs; i++) out[i] = ov[i] == PCRE2_UNSET ? -1 : (int32_t)ov[i];
  CHECK(env, napi_create_typedarray(env, napi_int32_array, pairs * 2, ab, 0, &result));
  return result;
}

/* ------------------------------------------------------------------ */
/* Rule sets                                                           */
/* ------------------------------------------------------------------ */

enum { OP_MATCH = 1, OP_IF = 2, OP_ENDIF = 3 };

typedef struct {
  int op;
  void *first;  /* RegexObj* or PcreObj* (MATCH, IF) */
  int first_match;  /* 1 = positive, 0 = negated */
  void *second; /* regexp only: the optional second pattern */
  int second_match;
  uint32_t max_sub; /* largest $n in the value (MATCH) */
  int32_t endif;    /* IF: index of its ENDIF, -1 when it has none */
} Rule;

typedef struct {
  int kind;   /* KIND_SET */
  int engine; /* KIND_REGEX or KIND_PCRE */
  uint32_t count;
  Rule *rules;
} RuleSet;

static void finalize_set(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  RuleSet *s = data;
  for (uint32_t i = 0; i < s->count; i++) {
    obj_unref(s->rules[i].first);
    obj_unref(s->rules[i].second);
  }
  free(s->rules);
  free(s);
}

static int get_int_elem(napi_env env, napi_value arr, uint32_t i, int64_t *out) {
  napi_value v;
  napi_valuetype t;
  if (napi_get_element(env, arr, i, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  return napi_get_value_int64(env, v, out) == napi_ok;
}

/* Element i of arr as a handle of the given kind; NULL for null/undefined; (void*)-1 on error. */
static void *get_handle_elem(napi_env env, napi_value arr, uint32_t i, int kind) {
  napi_value v;
  napi_valuetype t;
  if (napi_get_element(env, arr, i, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return (void *)-1;
  if (t == napi_null || t == napi_undefined) return NULL;
  void *o = get_obj(env, v, kind);
  return o ? o : (void *)-1;
}

/*
 * ruleSetCreate(kind, rules) -> handle. kind: 1 = regex, 2 = pcre. Each rule
 * is an array [op, first, firstMatch, second, secondMatch, maxSub, endif].
 */
static napi_value RuleSetCreate(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) THROW(env, "ruleSetCreate(kind, rules)");
  int32_t kind;
  if (napi_get_value_int32(env, argv[0], &kind) != napi_ok || (kind != KIND_REGEX && kind != KIND_PCRE))
    THROW(env, "bad rule set kind");
  bool is_array = false;
  CHECK(env, napi_is_array(env, argv[1], &is_array));
  if (!is_array) THROW(env, "rules must be an array");
  uint32_t count;
  CHECK(env, napi_get_array_length(env, argv[1], &count));
  RuleSet *s = calloc(1, sizeof(*s));
  Rule *rules = count ? calloc(count, sizeof(Rule)) : NULL;
  if (!s || (count && !rules)) {
    free(s);
    free(rules);
    THROW(env, "out of memory");
  }
  s->kind = KIND_SET;
  s->engine = kind;
  s->rules = rules;
  const char *bad = NULL;
  for (uint32_t i = 0; i < count && !bad; i++) {
    napi_value r;
    bool arr = false;
    int64_t op, m1, m2, max_sub, endif;
    if (napi_get_element(env, argv[1], i, &r) != napi_ok || napi_is_array(env, r, &arr) != napi_ok || !arr) {
      bad = "rule must be an array";
      break;
    }
    if (!get_int_elem(env, r, 0, &op) || !get_int_elem(env, r, 2, &m1) || !get_int_elem(env, r, 4, &m2) ||
        !get_int_elem(env, r, 5, &max_sub) || !get_int_elem(env, r, 6, &endif)) {
      bad = "rule fields must be numbers";
      break;
    }
    if (op < OP_MATCH || op > OP_ENDIF || max_sub < 0 || max_sub > 100000 || endif < -1 || endif >= (int64_t)count ||
        (op == OP_IF && endif >= 0 && endif <= (int64_t)i)) {
      bad = "bad rule";
      break;
    }
    void *first = get_handle_elem(env, r, 1, kind);
    void *second = first == (void *)-1 ? NULL : get_handle_elem(env, r, 3, kind);
    if (first == (void *)-1 || second == (void *)-1) {
      finalize_set(env, s, NULL);
      return NULL; /* exception pending */
    }
    if (op != OP_ENDIF && first == NULL) {
      bad = "rule needs a pattern";
      break;
    }
    if (second && (kind != KIND_REGEX || op != OP_MATCH)) {
      bad = "only regexp match rules take a second pattern";
      break;
    }
    Rule *ru = &rules[i];
    ru->op = (int)op;
    ru->first_match = m1 != 0;
    ru->second_match = m2 != 0;
    ru->max_sub = (uint32_t)max_sub;
    ru->endif = (int32_t)endif;
    if (op != OP_ENDIF) {
      ru->first = first;
      ru->second = second;
      if (first) ((ObjHead *)first)->refs++;
      if (second) ((ObjHead *)second)->refs++;
    }
    s->count = i + 1;
  }
  if (bad) {
    finalize_set(env, s, NULL);
    THROW(env, bad);
  }
  napi_value handle;
  if (napi_create_external(env, s, finalize_set, NULL, &handle) != napi_ok) {
    finalize_set(env, s, NULL);
    THROW(env, "cannot create handle");
  }
  return handle;
}

/* Runtime errors met during one evaluation, reported back as warnings. */
typedef struct {
  uint32_t rule;
  char text[256];
} ExecError;

typedef struct {
  ExecError *items;
  size_t count, cap;
} ErrorList;

static void add_error(ErrorList *l, uint32_t rule, const char *text) {
  if (l->count == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    ExecError *p = realloc(l->items, cap * sizeof(*p));
    if (!p) return;
    l->items = p;
    l->cap = cap;
  }
  l->items[l->count].rule = rule;
  snprintf(l->items[l->count].text, sizeof(l->items[l->count].text), "%s", text);
  l->count++;
}

static _Thread_local regmatch_t *pmatch_buf = NULL;
static _Thread_local size_t pmatch_cap = 0;

/* One regexec test, with Postfix's sense: 1 = the test passes. */
static int regex_test(RegexObj *r, int match, const char *subject, size_t nmatch, regmatch_t *pm, ErrorList *errs,
                      uint32_t rule) {
  int err = regexec(&r->re, subject, nmatch, pm, 0);
  if (err == REG_NOMATCH) return !match;
  if (err == 0) return match;
  char errbuf[256];
  (void)regerror(err, &r->re, errbuf, sizeof(errbuf));
  add_error(errs, rule, errbuf);
  return 0;
}

static int pcre_test(PcreObj *p, int match, const char *subject, size_t len, ErrorList *errs, uint32_t rule) {
  int rc = pcre_run(p, subject, len);
  if (rc > 0) return match;
  if (rc == PCRE2_ERROR_NOMATCH) return !match;
  char buf[256];
  pcre_error_text(rc, buf, sizeof(buf));
  add_error(errs, rule, buf);
  return 0;
}

/*
 * ruleSetExec(set, subject, skipRegsub, offsets) -> number | { index, errors }
 *
 * Walks the rules the way Postfix's lookup does, starting at rule 0: the
 * first MATCH rule whose test(s) pass wins; an IF whose test fails jumps
 * past its ENDIF (or ends the lookup when it has none). With skipRegsub,
 * MATCH rules whose value uses $n are passed over. The result is the index
 * of the winning rule, or -1. For a winning rule with max_sub > 0 the
 * offsets of groups 0..max_sub are written to the Int32Array `offsets`
 * (-1 = unset). When runtime match errors occurred the result is an object
 * { index, errors: [[ruleIndex, text], ...] }.
 */
static napi_value RuleSetExec(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) THROW(env, "ruleSetExec(set, subject, skipRegsub, offsets)");
  napi_valuetype t;
  RuleSet *s = NULL;
  CHECK(env, napi_typeof(env, argv[0], &t));
  if (t != napi_external) THROW(env, "expected a rule set");
  CHECK(env, napi_get_value_external(env, argv[0], (void **)&s));
  if (!s || s->kind != KIND_SET) THROW(env, "expected a rule set");
  size_t len;
  char *subject = get_bytes(env, argv[1], &subject_scratch, &len);
  if (!subject) return NULL;
  bool skip_regsub = false;
  CHECK(env, napi_get_value_bool(env, argv[2], &skip_regsub));
  napi_typedarray_type ta_type;
  size_t ta_len = 0;
  void *ta_data = NULL;
  bool is_ta = false;
  CHECK(env, napi_is_typedarray(env, argv[3], &is_ta));
  if (!is_ta) THROW(env, "offsets must be an Int32Array");
  CHECK(env, napi_get_typedarray_info(env, argv[3], &ta_type, &ta_len, &ta_data, NULL, NULL));
  if (ta_type != napi_int32_array) THROW(env, "offsets must be an Int32Array");
  int32_t *offsets = ta_data;

  ErrorList errs = {NULL, 0, 0};
  int32_t found = -1;
  locale_t saved = s->engine == KIND_REGEX ? enter_c_locale() : (locale_t)0;

  for (uint32_t i = 0; i < s->count; i++) {
    Rule *r = &s->rules[i];
    if (r->op == OP_MATCH) {
      if (skip_regsub && r->max_sub > 0) continue;
      if (s->engine == KIND_REGEX) {
        size_t nmatch = r->max_sub > 0 ? (size_t)r->max_sub + 1 : 0;
        if (nmatch > pmatch_cap) {
          regmatch_t *p = realloc(pmatch_buf, nmatch * sizeof(regmatch_t));
          if (!p) {
            leave_c_locale(saved);
            free(errs.items);
            THROW(env, "out of memory");
          }
          pmatch_buf = p;
          pmatch_cap = nmatch;
        }
        if (!regex_test(r->first, r->first_match, subject, nmatch, nmatch ? pmatch_buf : NULL, &errs, i)) continue;
        if (r->second && !regex_test(r->second, r->second_match, subject, 0, NULL, &errs, i)) continue;
        if (nmatch) {
          for (size_t g = 0; g < nmatch && 2 * g + 1 < ta_len; g++) {
            offsets[2 * g] = (int32_t)pmatch_buf[g].rm_so;
            offsets[2 * g + 1] = (int32_t)pmatch_buf[g].rm_eo;
          }
        }
      } else {
        PcreObj *p = r->first;
        if (!pcre_test(p, r->first_match, subject, len, &errs, i)) continue;
        if (r->max_sub > 0) {
          PCRE2_SIZE *ov = match_ovector(p);
          size_t pairs = (size_t)p->capture_count + 1;
          for (size_t g = 0; g <= r->max_sub && g < pairs && 2 * g + 1 < ta_len; g++) {
            offsets[2 * g] = ov[2 * g] == PCRE2_UNSET ? -1 : (int32_t)ov[2 * g];
            offsets[2 * g + 1] = ov[2 * g + 1] == PCRE2_UNSET ? -1 : (int32_t)ov[2 * g + 1];
          }
        }
      }
      found = (int32_t)i;
      break;
    } else if (r->op == OP_IF) {
      int pass = s->engine == KIND_REGEX ? regex_test(r->first, r->first_match, subject, 0, NULL, &errs, i)
                                       : pcre_test(r->first, r->first_match, subject, len, &errs, i);
      if (pass) continue;
      if (r->endif < 0) break; /* an IF without ENDIF: not found */
      i = (uint32_t)r->endif;  /* continue after the ENDIF */
    }
    /* OP_ENDIF: nothing to do */
  }
  leave_c_locale(saved);

  if (errs.count == 0) return make_int(env, found);
  napi_value result, list;
  CHECK(env, napi_create_object(env, &result));
  CHECK(env, napi_create_array_with_length(env, errs.count, &list));
  for (size_t k = 0; k < errs.count; k++) {
    napi_value pair;
    CHECK(env, napi_create_array_with_length(env, 2, &pair));
    CHECK(env, napi_set_element(env, pair, 0, make_int(env, errs.items[k].rule)));
    CHECK(env, napi_set_element(env, pair, 1, make_string(env, errs.items[k].text)));
    CHECK(env, napi_set_element(env, list, (uint32_t)k, pair));
  }
  free(errs.items);
  if (!set_prop(env, result, "index", make_int(env, found))) return NULL;
  if (!set_prop(env, result, "errors", list)) return NULL;
  return result;
}

/* ------------------------------------------------------------------ */
/* Module                                                              */
/* ------------------------------------------------------------------ */

static int add_const(napi_env env, napi_value obj, const char *name, double value) {
  napi_value v;
  return napi_create_double(env, value, &v) == napi_ok && napi_set_named_property(env, obj, name, v) == napi_ok;
}

static int add_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, name, fn) == napi_ok;
}

/* native/kv.c: LMDB and Berkeley DB files for lmdb:, hash: and btree: tables. */
int kv_register(napi_env env, napi_value exports);
/* native/maillog.c: syslog(3) and the postlog datagram socket. */
int maillog_register(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  napi_value reg, pcre;
  CHECK(env, napi_create_object(env, &reg));
  CHECK(env, napi_create_object(env, &pcre));
  int ok = add_const(env, reg, "EXTENDED", REG_EXTENDED) && add_const(env, reg, "ICASE", REG_ICASE) &&
           add_const(env, reg, "NEWLINE", REG_NEWLINE) && add_const(env, reg, "NOSUB", REG_NOSUB) &&
           add_const(env, reg, "NOMATCH", REG_NOMATCH) &&
           add_const(env, pcre, "CASELESS", PCRE2_CASELESS) && add_const(env, pcre, "MULTILINE", PCRE2_MULTILINE) &&
           add_const(env, pcre, "DOTALL", PCRE2_DOTALL) && add_const(env, pcre, "EXTENDED", PCRE2_EXTENDED) &&
           add_const(env, pcre, "ANCHORED", PCRE2_ANCHORED) &&
           add_const(env, pcre, "DOLLAR_ENDONLY", PCRE2_DOLLAR_ENDONLY) &&
           add_const(env, pcre, "UNGREEDY", PCRE2_UNGREEDY) &&
           add_const(env, pcre, "ERROR_NOMATCH", PCRE2_ERROR_NOMATCH) &&
           add_const(env, pcre, "MAJOR", PCRE2_MAJOR) && add_const(env, pcre, "MINOR", PCRE2_MINOR);
  if (!ok) return NULL;
  CHECK(env, napi_set_named_property(env, exports, "REG", reg));
  CHECK(env, napi_set_named_property(env, exports, "PCRE2", pcre));
  if (!add_fn(env, exports, "regexCompile", RegexCompile) || !add_fn(env, exports, "regexExec", RegexExec) ||
      !add_fn(env, exports, "pcreCompile", PcreCompile) || !add_fn(env, exports, "pcreCaptureCount", PcreCaptureCount) ||
      !add_fn(env, exports, "pcreMatch", PcreMatch) || !add_fn(env, exports, "ruleSetCreate", RuleSetCreate) ||
      !add_fn(env, exports, "ruleSetExec", RuleSetExec))
    return NULL;
  if (!proxymapd_sqlite_register(env, exports)) return NULL;
  if (!kv_register(env, exports)) return NULL;
  if (!maillog_register(env, exports)) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
