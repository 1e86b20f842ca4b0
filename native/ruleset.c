/*
 * ruleset: rule sets built from a pattern batch and evaluated for one
 * subject at a time (see ruleset.h), on the calling thread; a lone lookup
 * in a large set is shared with an idle compiler thread (split
 * evaluation, below).
 */
#define _GNU_SOURCE

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compile_pool.h"
#include "napi_util.h"
#include "pattern_engines.h"
#include "ruleset.h"

/* A growable scratch buffer for subjects (the engines need C strings). */
typedef struct {
  char *data;
  size_t cap;
} Scratch;

static _Thread_local Scratch subject_scratch = {NULL, 0};

char *get_subject(napi_env env, napi_value v, size_t *len_out) {
  Scratch *s = &subject_scratch;
  size_t len = 0;
  if (!js_string_length(env, v, &len)) return NULL;
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

static void finalize_set(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  RuleSet *s = data;
  for (uint32_t i = 0; i < s->count; i++) {
    obj_unref(s->rules[i].first);
    obj_unref(s->rules[i].second);
  }
  free(s->rules);
  free(s->chunks);
  free(s);
}

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
 * Evaluate a rule set for one subject, the way Postfix's lookup does,
 * starting at rule 0: the first MATCH rule whose test(s) pass wins; an IF
 * whose test fails jumps past its ENDIF (or ends the lookup when it has
 * none). With skip_regsub, MATCH rules whose value uses $n are passed over.
 * Returns the index of the winning rule, -1 when none wins, -2 when out of
 * memory. For a winning rule with max_sub > 0 the offsets of groups
 * 0..max_sub go to offsets[] (-1 = unset; off_len entries available).
 * Runtime match errors are appended to errs (each one made its test fail).
 *
 * Thread-safe for concurrent calls on the same set: the compiled patterns
 * are only read (glibc's regexec serializes calls on one regex_t itself),
 * and match data and scratch buffers are per thread.
 */
static int32_t ruleset_run_range(RuleSet *s, uint32_t from, uint32_t to, const char *subject, size_t len, int skip_regsub,
                                 int32_t *offsets, size_t off_len, ErrorList *errs) {
  int32_t found = -1;
  locale_t saved = s->engine == KIND_REGEX ? enter_c_locale() : (locale_t)0;
  for (uint32_t i = from; i < to; i++) {
    Rule *r = &s->rules[i];
    if (r->op == OP_MATCH) {
      if (skip_regsub && r->max_sub > 0) continue;
      if (s->engine == KIND_REGEX) {
        size_t nmatch = r->max_sub > 0 ? (size_t)r->max_sub + 1 : 0;
        if (nmatch > pmatch_cap) {
          regmatch_t *p = realloc(pmatch_buf, nmatch * sizeof(regmatch_t));
          if (!p) {
            found = -2;
            break;
          }
          pmatch_buf = p;
          pmatch_cap = nmatch;
        }
        if (!regex_test(r->first, r->first_match, subject, nmatch, nmatch ? pmatch_buf : NULL, errs, i)) continue;
        if (r->second && !regex_test(r->second, r->second_match, subject, 0, NULL, errs, i)) continue;
        for (size_t g = 0; g < nmatch && 2 * g + 1 < off_len; g++) {
          offsets[2 * g] = (int32_t)pmatch_buf[g].rm_so;
          offsets[2 * g + 1] = (int32_t)pmatch_buf[g].rm_eo;
        }
      } else {
        PcreObj *p = r->first;
        if (!pcre_test(p, r->first_match, subject, len, errs, i)) continue;
        if (r->max_sub > 0) {
          PCRE2_SIZE *ov = match_ovector();
          size_t pairs = (size_t)p->capture_count + 1;
          for (size_t g = 0; g <= r->max_sub && g < pairs && 2 * g + 1 < off_len; g++) {
            offsets[2 * g] = ov[2 * g] == PCRE2_UNSET ? -1 : (int32_t)ov[2 * g];
            offsets[2 * g + 1] = ov[2 * g + 1] == PCRE2_UNSET ? -1 : (int32_t)ov[2 * g + 1];
          }
        }
      }
      found = (int32_t)i;
      break;
    } else if (r->op == OP_IF) {
      int pass = s->engine == KIND_REGEX ? regex_test(r->first, r->first_match, subject, 0, NULL, errs, i)
                                         : pcre_test(r->first, r->first_match, subject, len, errs, i);
      if (pass) continue;
      if (r->endif < 0) break; /* an IF without ENDIF: not found */
      i = (uint32_t)r->endif;  /* continue after the ENDIF */
    }
    /* OP_ENDIF: nothing to do */
  }
  leave_c_locale(saved);
  return found;
}

int32_t ruleset_run(RuleSet *s, const char *subject, size_t len, int skip_regsub, int32_t *offsets, size_t off_len,
                    ErrorList *errs) {
  return ruleset_run_range(s, 0, s->count, subject, len, skip_regsub, offsets, off_len, errs);
}


/* A lone lookup in a large set is shared with an idle compiler thread (see ruleset_run_split, further down). */
#define SPLIT_MIN_RULES 128
static int32_t ruleset_run_split(RuleSet *s, const char *subject, size_t len, int skip_regsub, int32_t *offsets,
                                 size_t off_len, ErrorList *errs);

napi_value error_list(napi_env env, ErrorList *errs) {
  napi_value list;
  if (napi_create_array_with_length(env, errs->count, &list) != napi_ok) return NULL;
  for (size_t k = 0; k < errs->count; k++) {
    napi_value pair;
    if (napi_create_array_with_length(env, 2, &pair) != napi_ok ||
        napi_set_element(env, pair, 0, js_int(env, errs->items[k].rule)) != napi_ok ||
        napi_set_element(env, pair, 1, js_latin1(env, errs->items[k].text)) != napi_ok ||
        napi_set_element(env, list, (uint32_t)k, pair) != napi_ok)
      return NULL;
  }
  return list;
}

RuleSet *get_set(napi_env env, napi_value v) { return get_handle(env, v, KIND_SET, "expected a rule set"); }

/*
 * ruleSetExec(set, subject, skipRegsub, offsets) -> number | { index, errors }
 *
 * Synchronous evaluation (see ruleset_run). The result is the index of the
 * winning rule, or -1. For a winning rule with max_sub > 0 the offsets of
 * groups 0..max_sub are written to the Int32Array `offsets`. When runtime
 * match errors occurred the result is an object
 * { index, errors: [[ruleIndex, text], ...] }.
 */
static napi_value RuleSetExec(napi_env env, napi_callback_info info) {
  NAPI_ARGS_USAGE(4, "ruleSetExec(set, subject, skipRegsub, offsets)");
  RuleSet *s = get_set(env, argv[0]);
  if (!s) return NULL;
  size_t len;
  char *subject = get_subject(env, argv[1], &len);
  if (!subject) return NULL;
  bool skip_regsub = false;
  NAPI_CHECK(env, napi_get_value_bool(env, argv[2], &skip_regsub));
  size_t ta_len = 0;
  void *ta_data = NULL;
  if (!js_typed_array(env, argv[3], napi_int32_array, &ta_data, &ta_len, "offsets must be an Int32Array")) return NULL;

  ErrorList errs = {NULL, 0, 0};
  int32_t found = s->count >= SPLIT_MIN_RULES ? ruleset_run_split(s, subject, len, skip_regsub, ta_data, ta_len, &errs)
                                              : ruleset_run(s, subject, len, skip_regsub, ta_data, ta_len, &errs);
  if (found == -2) {
    free(errs.items);
    NAPI_THROW_TYPE(env, "out of memory");
  }
  if (errs.count == 0) return js_int(env, found);
  napi_value result, list = error_list(env, &errs);
  free(errs.items);
  if (list == NULL) return NULL;
  NAPI_CHECK(env, napi_create_object(env, &result));
  if (!js_set_prop(env, result, "index", js_int(env, found))) return NULL;
  if (!js_set_prop(env, result, "errors", list)) return NULL;
  return result;
}

/*
 * Split evaluation. A lookup that the main thread evaluates itself (the
 * server is otherwise idle) in a set of SPLIT_MIN_RULES rules or more is
 * offered to an idle compiler thread: the rules are cut into chunks at
 * points outside any IF/ENDIF, and both threads take chunks in order from a
 * shared counter; the first matching rule of the lowest matching chunk
 * wins, chunks after it are not started, and their errors are dropped (as
 * Postfix never evaluates rules after the winner). Chunks before the winner
 * all ran to the end without a match. The main thread never waits for the
 * helper to start: when none is idle, or it is slow to wake, the main
 * thread takes the chunks itself.
 */
#define SPLIT_CHUNK 32
static atomic_long split_stats[2]; /* lookups offered to a helper, and taken by one */

/* splitStats() -> [offered, taken]: lookups shared with a compiler thread (tests). */
static napi_value SplitStats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value arr;
  NAPI_CHECK(env, napi_create_array_with_length(env, 2, &arr));
  NAPI_CHECK(env, napi_set_element(env, arr, 0, js_int(env, atomic_load(&split_stats[0]))));
  NAPI_CHECK(env, napi_set_element(env, arr, 1, js_int(env, atomic_load(&split_stats[1]))));
  return arr;
}

typedef struct {
  int32_t chunk; /* lowest chunk with a match this participant found (INT32_MAX: none) */
  int32_t index;
  int32_t *offsets;
  ErrorList errs;
  int oom;
} SplitPart;

typedef struct {
  CpoolSideJob side; /* first: the helper's share, run by a compiler thread */
  RuleSet *set;
  const char *subject;
  size_t len;
  int skip_regsub;
  size_t off_len;
  atomic_int next;  /* next chunk to take */
  atomic_int best;  /* lowest chunk with a match found so far (INT32_MAX: none) */
  SplitPart part[2]; /* 0: the main thread, 1: the helper */
} SplitEval;

static void split_work(SplitEval *e, int who) {
  SplitPart *p = &e->part[who];
  RuleSet *s = e->set;
  for (;;) {
    int c = atomic_fetch_add(&e->next, 1);
    if (c >= (int)s->nchunks || c > atomic_load(&e->best)) break;
    uint32_t from = s->chunks[c], to = c + 1 < (int)s->nchunks ? s->chunks[c + 1] : s->count;
    int32_t found = ruleset_run_range(s, from, to, e->subject, e->len, e->skip_regsub, p->offsets, e->off_len, &p->errs);
    if (found == -2) {
      p->oom = 1;
      found = -1;
    }
    if (found >= 0) {
      p->chunk = c;
      p->index = found;
      int b = atomic_load(&e->best);
      while (c < b && !atomic_compare_exchange_weak(&e->best, &b, c)) {
      }
      break; /* later chunks of ours cannot win */
    }
  }
}

static void split_help(CpoolSideJob *side) { split_work((SplitEval *)side, 1); }

/* Chunk starts: every SPLIT_CHUNK rules or so, at points where no IF is open. */
static int ruleset_make_chunks(RuleSet *s) {
  s->chunks = malloc(((size_t)s->count / SPLIT_CHUNK + 1) * sizeof(uint32_t));
  if (!s->chunks) return 0;
  uint32_t n = 0, start = 0;
  int64_t open_until = -1; /* the last rule inside an IF opened so far */
  s->chunks[n++] = 0;
  for (uint32_t i = 0; i < s->count; i++) {
    if (i > open_until && i - start >= SPLIT_CHUNK) {
      s->chunks[n++] = start = i;
    }
    Rule *r = &s->rules[i];
    if (r->op == OP_IF) {
      int64_t until = r->endif >= 0 ? r->endif : (int64_t)s->count;
      if (until > open_until) open_until = until;
    }
  }
  s->nchunks = n;
  return 1;
}

static int32_t ruleset_run_split(RuleSet *s, const char *subject, size_t len, int skip_regsub, int32_t *offsets,
                                 size_t off_len, ErrorList *errs) {
  if (s->chunks == NULL && !ruleset_make_chunks(s)) return ruleset_run(s, subject, len, skip_regsub, offsets, off_len, errs);
  int32_t *helper_offsets = s->nchunks >= 2 ? malloc((off_len ? off_len : 1) * sizeof(int32_t)) : NULL;
  if (!helper_offsets) return ruleset_run(s, subject, len, skip_regsub, offsets, off_len, errs);
  SplitEval e = {{split_help, 0, 0}, s, subject, len, skip_regsub, off_len, 0, INT32_MAX,
                 {{INT32_MAX, -1, offsets, {NULL, 0, 0}, 0}, {INT32_MAX, -1, helper_offsets, {NULL, 0, 0}, 0}}};
  /* offered only to a sleeping thread (one that is compiling would take it late), one lookup at a time */
  if (!cpool_offer(&e.side)) {
    free(helper_offsets);
    return ruleset_run(s, subject, len, skip_regsub, offsets, off_len, errs);
  }
  split_work(&e, 0);
  /* withdraw the offer; wait for a helper that took it (it is at most one chunk from done) */
  cpool_withdraw(&e.side);
  int32_t best = atomic_load(&e.best);
  int32_t found = -1;
  if (best != INT32_MAX) {
    SplitPart *w = e.part[0].chunk == best ? &e.part[0] : &e.part[1];
    found = w->index;
    if (w == &e.part[1] && off_len) memcpy(offsets, helper_offsets, off_len * sizeof(int32_t));
  }
  /* errors of the rules before the winner (all of them without one), in rule order */
  uint32_t limit = found >= 0 ? (uint32_t)found : s->count;
  ErrorList *a = &e.part[0].errs, *b = &e.part[1].errs;
  size_t ia = 0, ib = 0;
  while (ia < a->count || ib < b->count) {
    ExecError *x = ib >= b->count || (ia < a->count && a->items[ia].rule < b->items[ib].rule) ? &a->items[ia++] : &b->items[ib++];
    if (x->rule < limit) add_error(errs, x->rule, x->text);
  }
  int oom = e.part[0].oom || e.part[1].oom;
  atomic_fetch_add(&split_stats[0], 1);
  if (e.side.taken) atomic_fetch_add(&split_stats[1], 1);
  free(a->items);
  free(b->items);
  free(helper_offsets);
  return oom ? -2 : found;
}


/*
 * ruleSetFromBatch(batch, program) -> rule set handle. program: Int32Array
 * of 7 numbers per rule, [op, first, firstMatch, second, secondMatch,
 * maxSub, endif], where first/second are pattern indexes in the batch (-1:
 * none). The rule set holds its own references to the patterns it uses.
 */
static napi_value RuleSetFromBatch(napi_env env, napi_callback_info info) {
  NAPI_ARGS_USAGE(2, "ruleSetFromBatch(batch, program)");
  Batch *b = get_batch(env, argv[0]);
  if (!b) return NULL;
  size_t n = 0;
  void *ta_data = NULL;
  if (!js_typed_array(env, argv[1], napi_int32_array, &ta_data, &n, "program must be an Int32Array")) return NULL;
  if (n % 7 != 0) NAPI_THROW_TYPE(env, "program must be an Int32Array of 7 numbers per rule");
  const int32_t *prog = ta_data;
  uint32_t count = (uint32_t)(n / 7);
  RuleSet *s = calloc(1, sizeof(*s));
  Rule *rules = count ? calloc(count, sizeof(Rule)) : NULL;
  if (!s || (count && !rules)) {
    free(s);
    free(rules);
    NAPI_THROW_TYPE(env, "out of memory");
  }
  s->kind = KIND_SET;
  s->engine = b->engine;
  s->rules = rules;
  const char *bad = NULL;
  for (uint32_t i = 0; i < count; i++) {
    const int32_t *p = prog + 7 * (size_t)i;
    int32_t op = p[0], fi = p[1], si = p[3], max_sub = p[5], endif = p[6];
    if (op < OP_MATCH || op > OP_ENDIF || max_sub < 0 || max_sub > 100000 || endif < -1 || endif >= (int64_t)count ||
        (op == OP_IF && endif >= 0 && endif <= (int64_t)i) || fi < -1 || fi >= (int64_t)b->count || si < -1 ||
        si >= (int64_t)b->count) {
      bad = "bad rule";
      break;
    }
    void *first = op != OP_ENDIF && fi >= 0 ? b->objs[fi] : NULL;
    void *second = op == OP_MATCH && si >= 0 ? b->objs[si] : NULL;
    if (op != OP_ENDIF && first == NULL) {
      bad = "rule needs a compiled pattern";
      break;
    }
    if (si >= 0 && (second == NULL || b->engine != KIND_REGEX || op != OP_MATCH)) {
      bad = "only regexp match rules take a second pattern";
      break;
    }
    if (op == OP_MATCH && max_sub > 0) {
      uint32_t groups = b->engine == KIND_REGEX ? (uint32_t)((RegexObj *)first)->re.re_nsub : ((PcreObj *)first)->capture_count;
      if ((uint32_t)max_sub > groups) {
        bad = "replacement index beyond the pattern's groups";
        break;
      }
    }
    Rule *ru = &rules[i];
    ru->op = op;
    ru->first_match = p[2] != 0;
    ru->second_match = p[4] != 0;
    ru->max_sub = (uint32_t)max_sub;
    ru->endif = endif;
    ru->first = first;
    ru->second = second;
    if (first) ((ObjHead *)first)->refs++;
    if (second) ((ObjHead *)second)->refs++;
    if (ru->max_sub > s->max_sub) s->max_sub = ru->max_sub;
    s->count = i + 1;
  }
  if (bad) {
    finalize_set(env, s, NULL);
    NAPI_THROW_TYPE(env, bad);
  }
  napi_value handle;
  if (napi_create_external(env, s, finalize_set, NULL, &handle) != napi_ok) {
    finalize_set(env, s, NULL);
    NAPI_THROW_TYPE(env, "cannot create handle");
  }
  return handle;
}

int ruleset_register(napi_env env, napi_value exports) {
  return js_add_fn(env, exports, "ruleSetFromBatch", RuleSetFromBatch) && js_add_fn(env, exports, "ruleSetExec", RuleSetExec) &&
         js_add_fn(env, exports, "splitStats", SplitStats);
}
