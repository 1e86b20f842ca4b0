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

#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include "napi_util.h"
#include <pcre2.h>

#include "patscan.h"
#include "sqlite.h"

/* ------------------------------------------------------------------ */
/* Plumbing                                                            */
/* ------------------------------------------------------------------ */



/*
 * Per-thread state (rule sets run on the main thread and on thread-pool
 * threads; the addon may be loaded by several worker threads): the "C"
 * locale made current around every regcomp/regexec call, scratch
 * buffers, and a default PCRE2 match context (the same defaults as the NULL
 * context Postfix passes).
 */
static locale_t c_locale = (locale_t)0; /* one object, shared read-only by all threads */
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

static locale_t enter_c_locale(void) {
  pthread_once(&c_locale_once, make_c_locale);
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

enum { KIND_REGEX = 1, KIND_PCRE = 2, KIND_SET = 3, KIND_BATCH = 4, KIND_COMPILE = 5 };

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

/*
 * PCRE2 match data is per thread (rule sets are evaluated on the main
 * thread and on thread-pool threads at the same time), sized for the
 * largest capture count seen by that thread. Its ovector then holds at
 * least capture_count + 1 pairs for every pattern, so pcre2_match() never
 * returns 0 ("ovector too small") and returns what a match data created
 * from the pattern would give.
 */
static _Thread_local pcre2_match_data *tl_md = NULL;
static _Thread_local uint32_t tl_md_pairs = 0;

static pcre2_match_data *thread_match_data(uint32_t pairs) {
  if (tl_md == NULL || tl_md_pairs < pairs) {
    uint32_t want = pairs < 16 ? 16 : pairs;
    pcre2_match_data *md = pcre2_match_data_create(want, NULL);
    if (md == NULL) return NULL;
    if (tl_md) pcre2_match_data_free(tl_md);
    tl_md = md;
    tl_md_pairs = want;
  }
  return tl_md;
}

static PCRE2_SIZE *match_ovector(void) { return pcre2_get_ovector_pointer(tl_md); }

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
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "regexCompile(pattern, cflags)");
  Scratch pat = {NULL, 0};
  char *pattern = get_bytes(env, argv[0], &pat, NULL);
  if (!pattern) return NULL;
  int32_t cflags;
  if (napi_get_value_int32(env, argv[1], &cflags) != napi_ok) {
    free(pat.data);
    NAPI_THROW_TYPE(env, "cflags must be a number");
  }
  RegexObj *r = calloc(1, sizeof(*r));
  if (!r) {
    free(pat.data);
    NAPI_THROW_TYPE(env, "out of memory");
  }
  r->h.kind = KIND_REGEX;
  locale_t saved = enter_c_locale();
  int err = regcomp(&r->re, pattern, cflags);
  napi_value result;
  NAPI_CHECK(env, napi_create_object(env, &result));
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
    NAPI_THROW_TYPE(env, "cannot create handle");
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
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) NAPI_THROW_TYPE(env, "regexExec(handle, subject, nmatch)");
  RegexObj *r = get_obj(env, argv[0], KIND_REGEX);
  if (!r) return NULL;
  char *subject = get_bytes(env, argv[1], &subject_scratch, NULL);
  if (!subject) return NULL;
  uint32_t nmatch;
  if (napi_get_value_uint32(env, argv[2], &nmatch) != napi_ok || nmatch > 100000) NAPI_THROW_TYPE(env, "bad nmatch");
  regmatch_t *pm = nmatch ? calloc(nmatch, sizeof(regmatch_t)) : NULL;
  if (nmatch && !pm) NAPI_THROW_TYPE(env, "out of memory");
  locale_t saved = enter_c_locale();
  int err = regexec(&r->re, subject, nmatch, pm, 0);
  napi_value result;
  if (err == REG_NOMATCH) {
    leave_c_locale(saved);
    free(pm);
    NAPI_CHECK(env, napi_get_null(env, &result));
    return result;
  }
  if (err != 0) {
    char errbuf[256];
    (void)regerror(err, &r->re, errbuf, sizeof(errbuf));
    leave_c_locale(saved);
    free(pm);
    NAPI_CHECK(env, napi_create_object(env, &result));
    if (!set_prop(env, result, "error", make_string(env, errbuf))) return NULL;
    if (!set_prop(env, result, "code", make_int(env, err))) return NULL;
    return result;
  }
  leave_c_locale(saved);
  napi_value ab;
  void *data;
  if (napi_create_arraybuffer(env, (size_t)nmatch * 2 * sizeof(int32_t), &data, &ab) != napi_ok) {
    free(pm);
    NAPI_THROW_TYPE(env, "out of memory");
  }
  int32_t *out = data;
  for (uint32_t i = 0; i < nmatch; i++) {
    out[2 * i] = (int32_t)pm[i].rm_so;
    out[2 * i + 1] = (int32_t)pm[i].rm_eo;
  }
  free(pm);
  NAPI_CHECK(env, napi_create_typedarray(env, napi_int32_array, (size_t)nmatch * 2, ab, 0, &result));
  return result;
}

/* ------------------------------------------------------------------ */
/* PCRE2                                                               */
/* ------------------------------------------------------------------ */

/* pcreCompile(pattern, options) -> { handle, captureCount } | { error, code, offset } */
static napi_value PcreCompile(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "pcreCompile(pattern, options)");
  Scratch pat = {NULL, 0};
  char *pattern = get_bytes(env, argv[0], &pat, NULL);
  if (!pattern) return NULL;
  uint32_t options;
  if (napi_get_value_uint32(env, argv[1], &options) != napi_ok) {
    free(pat.data);
    NAPI_THROW_TYPE(env, "options must be a number");
  }
  int errcode = 0;
  PCRE2_SIZE erroffset = 0;
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &errcode, &erroffset, NULL);
  free(pat.data);
  napi_value result;
  NAPI_CHECK(env, napi_create_object(env, &result));
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
    NAPI_THROW_TYPE(env, "out of memory");
  }
  p->h.kind = KIND_PCRE;
  p->h.refs = 1;
  p->code = code;
  if (pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &p->capture_count) != 0) {
    pcre_unref(p);
    NAPI_THROW_TYPE(env, "pcre2 setup failed");
  }
  napi_value handle;
  if (napi_create_external(env, p, finalize_obj, NULL, &handle) != napi_ok) {
    pcre_unref(p);
    NAPI_THROW_TYPE(env, "cannot create handle");
  }
  if (!set_prop(env, result, "handle", handle)) return NULL;
  if (!set_prop(env, result, "captureCount", make_int(env, p->capture_count))) return NULL;
  return result;
}

/* pcreCaptureCount(handle) -> number */
static napi_value PcreCaptureCount(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) NAPI_THROW_TYPE(env, "pcreCaptureCount(handle)");
  PcreObj *p = get_obj(env, argv[0], KIND_PCRE);
  if (!p) return NULL;
  return make_int(env, p->capture_count);
}

static int pcre_run(PcreObj *p, const char *subject, size_t len) {
  if (match_context == NULL) match_context = pcre2_match_context_create(NULL);
  pcre2_match_data *md = thread_match_data(p->capture_count + 1);
  if (match_context == NULL || md == NULL) return PCRE2_ERROR_NOMEMORY;
  return pcre2_match(p->code, (PCRE2_SPTR)subject, len, 0, 0, md, match_context);
}

/*
 * pcreMatch(handle, subject) -> null | Int32Array | { error, code }
 * The array holds 2*(captureCount+1) offsets (-1 = unset).
 */
static napi_value PcreMatch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "pcreMatch(handle, subject)");
  PcreObj *p = get_obj(env, argv[0], KIND_PCRE);
  if (!p) return NULL;
  size_t len;
  char *subject = get_bytes(env, argv[1], &subject_scratch, &len);
  if (!subject) return NULL;
  int rc = pcre_run(p, subject, len);
  napi_value result;
  if (rc == PCRE2_ERROR_NOMATCH) {
    NAPI_CHECK(env, napi_get_null(env, &result));
    return result;
  }
  if (rc <= 0) {
    char buf[256];
    pcre_error_text(rc, buf, sizeof(buf));
    NAPI_CHECK(env, napi_create_object(env, &result));
    if (!set_prop(env, result, "error", make_string(env, buf))) return NULL;
    if (!set_prop(env, result, "code", make_int(env, rc))) return NULL;
    return result;
  }
  size_t pairs = (size_t)p->capture_count + 1;
  napi_value ab;
  void *data;
  NAPI_CHECK(env, napi_create_arraybuffer(env, pairs * 2 * sizeof(int32_t), &data, &ab));
  int32_t *out = data;
  PCRE2_SIZE *ov = match_ovector();
  for (size_t i = 0; i < 2 * pairs; i++) out[i] = ov[i] == PCRE2_UNSET ? -1 : (int32_t)ov[i];
  NAPI_CHECK(env, napi_create_typedarray(env, napi_int32_array, pairs * 2, ab, 0, &result));
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
  uint32_t max_sub; /* largest max_sub of any rule (offsets an evaluation may write) */
  uint32_t *chunks; /* split evaluation: first rule of each chunk (made on first use, main thread) */
  uint32_t nchunks;
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
  free(s->chunks);
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
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "ruleSetCreate(kind, rules)");
  int32_t kind;
  if (napi_get_value_int32(env, argv[0], &kind) != napi_ok || (kind != KIND_REGEX && kind != KIND_PCRE))
    NAPI_THROW_TYPE(env, "bad rule set kind");
  bool is_array = false;
  NAPI_CHECK(env, napi_is_array(env, argv[1], &is_array));
  if (!is_array) NAPI_THROW_TYPE(env, "rules must be an array");
  uint32_t count;
  NAPI_CHECK(env, napi_get_array_length(env, argv[1], &count));
  RuleSet *s = calloc(1, sizeof(*s));
  Rule *rules = count ? calloc(count, sizeof(Rule)) : NULL;
  if (!s || (count && !rules)) {
    free(s);
    free(rules);
    NAPI_THROW_TYPE(env, "out of memory");
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
    if (ru->max_sub > s->max_sub) s->max_sub = ru->max_sub;
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
    NAPI_THROW_TYPE(env, bad);
  }
  napi_value handle;
  if (napi_create_external(env, s, finalize_set, NULL, &handle) != napi_ok) {
    finalize_set(env, s, NULL);
    NAPI_THROW_TYPE(env, "cannot create handle");
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

static int32_t ruleset_run(RuleSet *s, const char *subject, size_t len, int skip_regsub, int32_t *offsets, size_t off_len,
                           ErrorList *errs) {
  return ruleset_run_range(s, 0, s->count, subject, len, skip_regsub, offsets, off_len, errs);
}

/* A lone lookup in a large set is shared with an idle compiler thread (see ruleset_run_split, further down). */
#define SPLIT_MIN_RULES 128
static int32_t ruleset_run_split(RuleSet *s, const char *subject, size_t len, int skip_regsub, int32_t *offsets,
                                 size_t off_len, ErrorList *errs);

/* [[ruleIndex, text], ...] for the errors of one evaluation. */
static napi_value error_list(napi_env env, ErrorList *errs) {
  napi_value list;
  if (napi_create_array_with_length(env, errs->count, &list) != napi_ok) return NULL;
  for (size_t k = 0; k < errs->count; k++) {
    napi_value pair;
    if (napi_create_array_with_length(env, 2, &pair) != napi_ok ||
        napi_set_element(env, pair, 0, make_int(env, errs->items[k].rule)) != napi_ok ||
        napi_set_element(env, pair, 1, make_string(env, errs->items[k].text)) != napi_ok ||
        napi_set_element(env, list, (uint32_t)k, pair) != napi_ok)
      return NULL;
  }
  return list;
}

static RuleSet *get_set(napi_env env, napi_value v) {
  napi_valuetype t;
  RuleSet *s = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, (void **)&s) != napi_ok ||
      !s || s->kind != KIND_SET) {
    napi_throw_type_error(env, NULL, "expected a rule set");
    return NULL;
  }
  return s;
}

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
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) NAPI_THROW_TYPE(env, "ruleSetExec(set, subject, skipRegsub, offsets)");
  RuleSet *s = get_set(env, argv[0]);
  if (!s) return NULL;
  size_t len;
  char *subject = get_bytes(env, argv[1], &subject_scratch, &len);
  if (!subject) return NULL;
  bool skip_regsub = false;
  NAPI_CHECK(env, napi_get_value_bool(env, argv[2], &skip_regsub));
  napi_typedarray_type ta_type;
  size_t ta_len = 0;
  void *ta_data = NULL;
  bool is_ta = false;
  NAPI_CHECK(env, napi_is_typedarray(env, argv[3], &is_ta));
  if (!is_ta) NAPI_THROW_TYPE(env, "offsets must be an Int32Array");
  NAPI_CHECK(env, napi_get_typedarray_info(env, argv[3], &ta_type, &ta_len, &ta_data, NULL, NULL));
  if (ta_type != napi_int32_array) NAPI_THROW_TYPE(env, "offsets must be an Int32Array");

  ErrorList errs = {NULL, 0, 0};
  int32_t found = s->count >= SPLIT_MIN_RULES ? ruleset_run_split(s, subject, len, skip_regsub, ta_data, ta_len, &errs)
                                              : ruleset_run(s, subject, len, skip_regsub, ta_data, ta_len, &errs);
  if (found == -2) {
    free(errs.items);
    NAPI_THROW_TYPE(env, "out of memory");
  }
  if (errs.count == 0) return make_int(env, found);
  napi_value result, list = error_list(env, &errs);
  free(errs.items);
  if (list == NULL) return NULL;
  NAPI_CHECK(env, napi_create_object(env, &result));
  if (!set_prop(env, result, "index", make_int(env, found))) return NULL;
  if (!set_prop(env, result, "errors", list)) return NULL;
  return result;
}

/*
 * Evaluations off the main thread: a small pool of dedicated threads with
 * one FIFO queue. A busy thread takes the next queued evaluation without
 * sleeping, and completions reach the main thread through one thread-safe
 * function, whose wake-ups libuv coalesces: under load, a hand-off costs
 * no system call on either side. Per N-API environment (the addon may be
 * loaded by worker threads too).
 */
typedef struct ExecJob {
  struct ExecJob *next;
  napi_ref set_ref; /* keeps the rule set alive while the job is queued or running */
  napi_ref cb_ref;
  RuleSet *set;
  char *subject;
  size_t len;
  int skip_regsub;
  int32_t found;
  int32_t *offsets;
  size_t off_len;
  ErrorList errs;
} ExecJob;

#define MAX_EXEC_THREADS 64

typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;
  ExecJob *head, *tail;
  unsigned idle;     /* threads waiting for work */
  unsigned nthreads; /* threads started */
  unsigned wanted;   /* threads to have (execThreads) */
  int stopping;
  uint32_t pending; /* jobs submitted and not yet completed (main thread only) */
  napi_threadsafe_function tsfn;
  pthread_t threads[MAX_EXEC_THREADS];
} ExecPool;

static void exec_job_free(napi_env env, ExecJob *j) {
  if (j->set_ref) napi_delete_reference(env, j->set_ref);
  if (j->cb_ref) napi_delete_reference(env, j->cb_ref);
  free(j->subject);
  free(j->offsets);
  free(j->errs.items);
  free(j);
}

static void *exec_thread(void *arg) {
  ExecPool *p = arg;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    while (p->head == NULL && !p->stopping) {
      p->idle++;
      pthread_cond_wait(&p->wake, &p->lock);
      p->idle--;
    }
    if (p->stopping) break;
    ExecJob *j = p->head;
    p->head = j->next;
    if (p->head == NULL) p->tail = NULL;
    pthread_mutex_unlock(&p->lock);
    j->found = ruleset_run(j->set, j->subject, j->len, j->skip_regsub, j->offsets, j->off_len, &j->errs);
    if (napi_call_threadsafe_function(p->tsfn, j, napi_tsfn_nonblocking) != napi_ok) {
      /* the environment is going away: the job cannot be delivered (its references go with the environment) */
      free(j->subject);
      free(j->offsets);
      free(j->errs.items);
      free(j);
    }
    pthread_mutex_lock(&p->lock);
  }
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

/* On the main thread: callback(index, offsets | null, errors | null); index -2: out of memory. */
static void exec_job_deliver(napi_env env, napi_value js_cb, void *context, void *data) {
  (void)js_cb;
  ExecPool *p = context;
  ExecJob *j = data;
  if (env == NULL) return; /* tearing down */
  if (--p->pending == 0) napi_unref_threadsafe_function(env, p->tsfn);
  napi_value cb, undef, argv[3];
  if (napi_get_reference_value(env, j->cb_ref, &cb) != napi_ok || napi_get_undefined(env, &undef) != napi_ok) {
    exec_job_free(env, j);
    return;
  }
  int32_t found = j->found;
  argv[0] = make_int(env, found);
  napi_get_null(env, &argv[1]);
  napi_get_null(env, &argv[2]);
  if (found >= 0 && j->set->rules[found].max_sub > 0) {
    napi_value ab;
    void *buf;
    if (napi_create_arraybuffer(env, j->off_len * sizeof(int32_t), &buf, &ab) == napi_ok) {
      memcpy(buf, j->offsets, j->off_len * sizeof(int32_t));
      napi_create_typedarray(env, napi_int32_array, j->off_len, ab, 0, &argv[1]);
    }
  }
  if (j->errs.count > 0) {
    napi_value list = error_list(env, &j->errs);
    if (list) argv[2] = list;
  }
  exec_job_free(env, j);
  napi_call_function(env, undef, cb, 3, argv, NULL);
}

static void pools_remove(ExecPool *p);

static void exec_pool_cleanup(void *arg) {
  ExecPool *p = arg;
  pools_remove(p);
  pthread_mutex_lock(&p->lock);
  p->stopping = 1;
  pthread_cond_broadcast(&p->wake);
  pthread_mutex_unlock(&p->lock);
  for (unsigned i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
  /* queued jobs are dropped: their references belong to the environment being torn down */
  for (ExecJob *j = p->head, *n; j; j = n) {
    n = j->next;
    free(j->subject);
    free(j->offsets);
    free(j->errs.items);
    free(j);
  }
  if (p->tsfn) napi_release_threadsafe_function(p->tsfn, napi_tsfn_abort);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

/*
 * Pools by environment (the main thread's, and one per worker thread that
 * loads the addon). Kept here rather than in N-API instance data, which
 * other parts of the addon may want for themselves.
 */
typedef struct PoolLink {
  struct PoolLink *next;
  napi_env env;
  ExecPool *pool;
} PoolLink;

static PoolLink *pools = NULL;
static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;

static void pools_remove(ExecPool *p) {
  pthread_mutex_lock(&pools_lock);
  for (PoolLink **l = &pools; *l; l = &(*l)->next) {
    if ((*l)->pool == p) {
      PoolLink *dead = *l;
      *l = dead->next;
      free(dead);
      break;
    }
  }
  pthread_mutex_unlock(&pools_lock);
}

/* The environment's pool, created on first use (threads are started on submission). */
static ExecPool *exec_pool(napi_env env) {
  ExecPool *p = NULL;
  pthread_mutex_lock(&pools_lock);
  for (PoolLink *l = pools; l; l = l->next)
    if (l->env == env) p = l->pool;
  pthread_mutex_unlock(&pools_lock);
  if (p != NULL) return p;
  PoolLink *link = calloc(1, sizeof(*link));
  p = calloc(1, sizeof(*p));
  if (!link || !p) {
    free(link);
    free(p);
    return NULL;
  }
  if (!p) return NULL;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  p->wanted = 1;
  napi_value name;
  if (napi_create_string_utf8(env, "proxymapd:ruleSetExec", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_threadsafe_function(env, NULL, NULL, name, 0, 1, NULL, NULL, p, exec_job_deliver, &p->tsfn) != napi_ok ||
      napi_unref_threadsafe_function(env, p->tsfn) != napi_ok || napi_add_env_cleanup_hook(env, exec_pool_cleanup, p) != napi_ok) {
    if (p->tsfn) napi_release_threadsafe_function(p->tsfn, napi_tsfn_abort);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p);
    free(link);
    return NULL;
  }
  link->env = env;
  link->pool = p;
  pthread_mutex_lock(&pools_lock);
  link->next = pools;
  pools = link;
  pthread_mutex_unlock(&pools_lock);
  return p;
}

/* execThreads(n): the number of evaluation threads (1..64; threads are started when work comes and never stopped). */
static napi_value ExecThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint32_t n;
  if (argc < 1 || napi_get_value_uint32(env, argv[0], &n) != napi_ok || n < 1 || n > MAX_EXEC_THREADS)
    NAPI_THROW_TYPE(env, "execThreads(n): 1 <= n <= 64");
  ExecPool *p = exec_pool(env);
  if (!p) NAPI_THROW_TYPE(env, "cannot set up the evaluation threads");
  pthread_mutex_lock(&p->lock);
  p->wanted = n;
  pthread_mutex_unlock(&p->lock);
  return make_int(env, n);
}

/*
 * ruleSetExecAsync(set, subject, skipRegsub, callback): ruleSetExec on one
 * of the evaluation threads. callback(index, offsets, errors) runs on the
 * main thread: offsets is an Int32Array (groups 0..max_sub) when the
 * winning rule uses $n, else null; errors is [[ruleIndex, text], ...] or
 * null; index -2 means the evaluation could not run (out of memory).
 * Evaluations start in submission order.
 */
static napi_value RuleSetExecAsync(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) NAPI_THROW_TYPE(env, "ruleSetExecAsync(set, subject, skipRegsub, callback)");
  RuleSet *s = get_set(env, argv[0]);
  if (!s) return NULL;
  napi_valuetype t;
  NAPI_CHECK(env, napi_typeof(env, argv[3], &t));
  if (t != napi_function) NAPI_THROW_TYPE(env, "callback must be a function");
  size_t len;
  char *subject = get_bytes(env, argv[1], &subject_scratch, &len);
  if (!subject) return NULL;
  bool skip_regsub = false;
  NAPI_CHECK(env, napi_get_value_bool(env, argv[2], &skip_regsub));
  ExecPool *p = exec_pool(env);
  if (!p) NAPI_THROW_TYPE(env, "cannot set up the evaluation threads");
  ExecJob *j = calloc(1, sizeof(*j));
  if (!j) NAPI_THROW_TYPE(env, "out of memory");
  j->set = s;
  j->skip_regsub = skip_regsub;
  j->len = len;
  j->off_len = 2 * ((size_t)s->max_sub + 1);
  j->subject = malloc(len + 1);
  j->offsets = calloc(j->off_len, sizeof(int32_t));
  if (!j->subject || !j->offsets || napi_create_reference(env, argv[0], 1, &j->set_ref) != napi_ok ||
      napi_create_reference(env, argv[3], 1, &j->cb_ref) != napi_ok) {
    exec_job_free(env, j);
    NAPI_THROW_TYPE(env, "out of memory");
  }
  memcpy(j->subject, subject, len + 1);
  pthread_mutex_lock(&p->lock);
  if (p->nthreads < p->wanted && p->idle == 0) {
    if (pthread_create(&p->threads[p->nthreads], NULL, exec_thread, p) == 0) p->nthreads++;
  }
  if (p->nthreads == 0) {
    pthread_mutex_unlock(&p->lock);
    exec_job_free(env, j);
    NAPI_THROW_TYPE(env, "cannot start an evaluation thread");
  }
  if (p->tail)
    p->tail->next = j;
  else
    p->head = j;
  p->tail = j;
  if (p->idle > 0) pthread_cond_signal(&p->wake);
  pthread_mutex_unlock(&p->lock);
  if (p->pending++ == 0) napi_ref_threadsafe_function(env, p->tsfn);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Batch compilation                                                   */
/* ------------------------------------------------------------------ */

/*
 * A table's patterns are compiled while the table is still being parsed:
 * patternsScan() / patternsCompileStart() make a job and offer it to the
 * compiler threads (one per further CPU, at most 3, started once and kept
 * for the life of the process), patternsScan() and patternsCompileAdd()
 * hand them the patterns as they are parsed, and patternsCompileFinish()
 * has the calling thread compile what is left, from the other end, and
 * reports. glibc's regcomp
 * and PCRE2's pcre2_compile are thread-safe and independent per pattern.
 *
 * The calling thread never waits for a helper: a pattern a helper is still
 * compiling when the calling thread gets to it (say the helper was
 * preempted on a busy machine) is compiled again by the calling thread,
 * and the helper's copy is dropped. So opening a table is never slower
 * than compiling it all on one thread. The job's memory goes with the last
 * thread that uses it. Rule sets are then built from the batch by pattern
 * index (ruleSetFromBatch).
 */
typedef struct {
  int kind; /* KIND_BATCH */
  int engine;
  uint32_t count;
  void **objs; /* RegexObj* / PcreObj*, NULL where compilation failed */
} Batch;

/* Most patterns one compile job holds. */
#define MAX_COMPILE_PATTERNS 50000000u

typedef struct Chunk {
  struct Chunk *next;
  char text[];
} Chunk;

/* One compilation result. */
typedef struct {
  void *obj;      /* RegexObj* / PcreObj*, NULL on error */
  int32_t groups; /* nsub / capture count; -1 on error; -2 out of memory */
  int32_t code;   /* error code */
  int64_t offset; /* pcre2: error offset */
  char *text;     /* error text (malloc'd) */
} CompileResult;

/* Slot states: unclaimed, a helper is compiling it, a helper's result stands, the calling thread took it. */
enum { SLOT_FREE = 0, SLOT_HELPER = 1, SLOT_HELPER_DONE = 2, SLOT_MAIN = 3 };

typedef struct CompileJob {
  atomic_int refs; /* the JS handle (until finish) and each helper compiling one of its patterns */
  int engine;
  uint32_t cap;   /* patterns that fit (fixed at start: the arrays never move) */
  uint32_t added; /* patterns stored (by the calling thread) */
  uint32_t count; /* of those, the ones the helpers may take (under cpool.lock) */
  uint32_t next;  /* next pattern for the helpers (under cpool.lock) */
  int listed;     /* offered to the helpers (under cpool.lock) */
  struct CompileJob *prev_job, *next_job; /* the pool's list (under cpool.lock) */
  Chunk *chunks;
  const char **patterns;
  uint32_t *options;
  atomic_int *state;
  CompileResult *helper; /* helpers' results */
  CompileResult *own;    /* the calling thread's results */
} CompileJob;

typedef struct {
  int kind; /* KIND_COMPILE */
  CompileJob *job; /* NULL once finished */
} CompileHandle;

static void compile_one(int engine, const char *pattern, uint32_t options, CompileResult *out) {
  memset(out, 0, sizeof(*out));
  char buf[256];
  if (engine == KIND_REGEX) {
    RegexObj *r = calloc(1, sizeof(*r));
    if (!r) {
      out->groups = -2;
      return;
    }
    r->h.kind = KIND_REGEX;
    int err = regcomp(&r->re, pattern, (int)options);
    if (err != 0) {
      (void)regerror(err, &r->re, buf, sizeof(buf));
      free(r);
      out->code = err;
      out->groups = (out->text = strdup(buf)) ? -1 : -2;
      return;
    }
    r->h.refs = 1;
    out->obj = r;
    out->groups = (int32_t)r->re.re_nsub;
  } else {
    int errcode = 0;
    PCRE2_SIZE erroffset = 0;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, options, &errcode, &erroffset, NULL);
    if (code == NULL) {
      pcre_error_text(errcode, buf, sizeof(buf));
      out->code = errcode;
      out->offset = (int64_t)erroffset;
      out->groups = (out->text = strdup(buf)) ? -1 : -2;
      return;
    }
    PcreObj *p = calloc(1, sizeof(*p));
    if (!p || pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &p->capture_count) != 0) {
      free(p);
      pcre2_code_free(code);
      out->groups = -2;
      return;
    }
    p->h.kind = KIND_PCRE;
    p->h.refs = 1;
    p->code = code;
    out->obj = p;
    out->groups = (int32_t)p->capture_count;
  }
}

static void result_drop(CompileResult *r) {
  obj_unref(r->obj);
  free(r->text);
  r->obj = NULL;
  r->text = NULL;
}

/* Drop one reference; the last one frees the job (with the helper results nobody took). */
static void compile_job_release(CompileJob *j) {
  if (atomic_fetch_sub(&j->refs, 1) != 1) return;
  for (uint32_t i = 0; i < j->added; i++)
    if (atomic_load(&j->state[i]) == SLOT_HELPER_DONE && j->helper[i].groups != -3) result_drop(&j->helper[i]);
  for (Chunk *c = j->chunks, *n; c; c = n) {
    n = c->next;
    free(c);
  }
  free(j->patterns); /* the slot arrays are one allocation */
  free(j);
}

/* The compiler threads and the jobs offered to them, in order. */
#define CPOOL_MAX 3
static struct {
  pthread_mutex_t lock;
  pthread_cond_t more;
  CompileJob *head, *tail;
  unsigned threads;  /* started */
  unsigned sleeping; /* waiting for work */
  int started;       /* threads were started (or could not be) */
  pthread_t tids[CPOOL_MAX];
  struct SplitEval *split; /* a lookup offered to the threads (at most one at a time: the main thread's) */
  pthread_cond_t split_done;
  cpu_set_t allowed; /* the CPUs this process may use (at start) */
  int kept_off;      /* the CPU the threads were last kept off (-1: none) */
} cpool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0, {0}, NULL, PTHREAD_COND_INITIALIZER, {{0}}, -1};

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
  NAPI_CHECK(env, napi_set_element(env, arr, 0, make_int(env, atomic_load(&split_stats[0]))));
  NAPI_CHECK(env, napi_set_element(env, arr, 1, make_int(env, atomic_load(&split_stats[1]))));
  return arr;
}
typedef struct {
  int32_t chunk; /* lowest chunk with a match this participant found (INT32_MAX: none) */
  int32_t index;
  int32_t *offsets;
  ErrorList errs;
  int oom;
} SplitPart;

typedef struct SplitEval {
  RuleSet *set;
  const char *subject;
  size_t len;
  int skip_regsub;
  size_t off_len;
  atomic_int next;  /* next chunk to take */
  atomic_int best;  /* lowest chunk with a match found so far (INT32_MAX: none) */
  int taken;        /* a helper took it (under cpool.lock) */
  int helper_done;  /* the helper is out (under cpool.lock) */
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
  SplitEval e = {s, subject, len, skip_regsub, off_len, 0, INT32_MAX, 0, 0,
                 {{INT32_MAX, -1, offsets, {NULL, 0, 0}, 0}, {INT32_MAX, -1, helper_offsets, {NULL, 0, 0}, 0}}};
  /* offered only to a sleeping thread (one that is compiling would take it late), one lookup at a time */
  pthread_mutex_lock(&cpool.lock);
  int offered = cpool.sleeping > 0 && cpool.split == NULL;
  if (offered) {
    cpool.split = &e;
    pthread_cond_signal(&cpool.more);
  }
  pthread_mutex_unlock(&cpool.lock);
  if (!offered) {
    free(helper_offsets);
    return ruleset_run(s, subject, len, skip_regsub, offsets, off_len, errs);
  }
  split_work(&e, 0);
  /* withdraw the offer; wait for a helper that took it (it is at most one chunk from done) */
  pthread_mutex_lock(&cpool.lock);
  cpool.split = NULL;
  while (e.taken && !e.helper_done) pthread_cond_wait(&cpool.split_done, &cpool.lock);
  pthread_mutex_unlock(&cpool.lock);
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
  if (e.taken) atomic_fetch_add(&split_stats[1], 1);
  free(a->items);
  free(b->items);
  free(helper_offsets);
  return oom ? -2 : found;
}

/* A compiler thread: take the next pattern of the first job that has one; sleep when none has. */
static void *compile_helper(void *arg) {
  (void)arg;
  /* these threads only compile: the "C" locale for regcomp, for good */
  (void)enter_c_locale();
  pthread_mutex_lock(&cpool.lock);
  for (;;) {
    if (cpool.split && !cpool.split->taken) {
      struct SplitEval *e = cpool.split;
      e->taken = 1;
      pthread_mutex_unlock(&cpool.lock);
      split_work(e, 1);
      pthread_mutex_lock(&cpool.lock);
      e->helper_done = 1;
      pthread_cond_broadcast(&cpool.split_done);
      continue;
    }
    CompileJob *j = cpool.head;
    while (j && j->next >= j->count) j = j->next_job;
    if (!j) {
      cpool.sleeping++;
      pthread_cond_wait(&cpool.more, &cpool.lock);
      cpool.sleeping--;
      continue;
    }
    uint32_t i = j->next++;
    atomic_fetch_add(&j->refs, 1);
    pthread_mutex_unlock(&cpool.lock);
    int expect = SLOT_FREE;
    if (atomic_compare_exchange_strong(&j->state[i], &expect, SLOT_HELPER)) {
      CompileResult r;
      compile_one(j->engine, j->patterns[i], j->options[i], &r);
      j->helper[i] = r;
      expect = SLOT_HELPER;
      if (!atomic_compare_exchange_strong(&j->state[i], &expect, SLOT_HELPER_DONE)) {
        /* the calling thread compiled it meanwhile */
        result_drop(&j->helper[i]);
      }
    }
    compile_job_release(j);
    pthread_mutex_lock(&cpool.lock);
  }
  return NULL;
}

/* Start the compiler threads once: one per further CPU, at most 3. Under cpool.lock. */
static void cpool_start(void) {
  if (cpool.started) return;
  cpool.started = 1;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (sched_getaffinity(0, sizeof(cpool.allowed), &cpool.allowed) == 0 && CPU_COUNT(&cpool.allowed) < cpus)
    cpus = CPU_COUNT(&cpool.allowed);
  else if (CPU_COUNT(&cpool.allowed) == 0)
    cpool.kept_off = -2; /* affinity unknown: never set it */
  unsigned want = cpus > 1 ? (unsigned)(cpus - 1) : 0;
  if (want > CPOOL_MAX) want = CPOOL_MAX;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (unsigned k = 0; k < want; k++) {
    if (pthread_create(&cpool.tids[cpool.threads], &attr, compile_helper, NULL) != 0) break;
    cpool.threads++;
  }
  pthread_attr_destroy(&attr);
}

/*
 * Keep the compiler threads off the CPU the calling thread runs on. Woken
 * by it, a thread is otherwise often placed on the waker's CPU (wake
 * affinity) and runs there while the caller waits for the CPU, idle ones
 * notwithstanding, so that nothing runs in parallel. Under cpool.lock.
 */
static void cpool_keep_off_caller(void) {
  if (cpool.kept_off == -2 || cpool.threads == 0) return;
  int cpu = sched_getcpu();
  if (cpu < 0 || cpu == cpool.kept_off || !CPU_ISSET(cpu, &cpool.allowed)) return;
  cpu_set_t others = cpool.allowed;
  CPU_CLR(cpu, &others);
  if (CPU_COUNT(&others) == 0) return;
  for (unsigned k = 0; k < cpool.threads; k++) (void)pthread_setaffinity_np(cpool.tids[k], sizeof(others), &others);
  cpool.kept_off = cpu;
}

/* Offer a job to the compiler threads (at the end of the list). */
static void cpool_list(CompileJob *j) {
  pthread_mutex_lock(&cpool.lock);
  cpool_start();
  cpool_keep_off_caller();
  if (cpool.threads > 0) {
    j->listed = 1;
    j->prev_job = cpool.tail;
    j->next_job = NULL;
    if (cpool.tail)
      cpool.tail->next_job = j;
    else
      cpool.head = j;
    cpool.tail = j;
  }
  pthread_mutex_unlock(&cpool.lock);
}

/* Patterns [0, count) may be taken by the compiler threads. */
static void cpool_publish(CompileJob *j, uint32_t count) {
  pthread_mutex_lock(&cpool.lock);
  j->count = count;
  if (j->listed && cpool.sleeping > 0) pthread_cond_broadcast(&cpool.more);
  pthread_mutex_unlock(&cpool.lock);
}

/* No more patterns of this job for the compiler threads (those they are compiling finish on their own). */
static void cpool_unlist(CompileJob *j) {
  pthread_mutex_lock(&cpool.lock);
  if (j->listed) {
    if (j->prev_job)
      j->prev_job->next_job = j->next_job;
    else
      cpool.head = j->next_job;
    if (j->next_job)
      j->next_job->prev_job = j->prev_job;
    else
      cpool.tail = j->prev_job;
    j->listed = 0;
  }
  pthread_mutex_unlock(&cpool.lock);
}

static void finalize_compile_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  CompileHandle *h = data;
  if (h->job) {
    /* never finished (an exception while parsing): the helpers stop, the last one out frees */
    cpool_unlist(h->job);
    compile_job_release(h->job);
  }
  free(h);
}

static void finalize_batch(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Batch *b = data;
  for (uint32_t i = 0; i < b->count; i++) obj_unref(b->objs[i]);
  free(b->objs);
  free(b);
}

static CompileJob *get_compile_job(napi_env env, napi_value v, CompileHandle **hout) {
  napi_valuetype t;
  CompileHandle *h = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, (void **)&h) != napi_ok ||
      !h || h->kind != KIND_COMPILE) {
    napi_throw_type_error(env, NULL, "expected a compile job");
    return NULL;
  }
  if (h->job == NULL) {
    napi_throw_error(env, NULL, "compile job already finished");
    return NULL;
  }
  if (hout) *hout = h;
  return h->job;
}

/* A compile job with room for `cap` patterns and its JS handle (chunk: pattern text it owns, or NULL); NULL after throwing. */
static CompileJob *compile_job_new(napi_env env, int engine, uint32_t cap, Chunk *chunk, napi_value *handle) {
  CompileJob *j = calloc(1, sizeof(*j));
  CompileHandle *h = calloc(1, sizeof(*h));
  size_t n = cap ? cap : 1;
  /* the slot arrays in one block; only the states need zeroing (a result is written before it is read) */
  size_t per = sizeof(char *) + 2 * sizeof(CompileResult) + sizeof(uint32_t) + sizeof(atomic_int);
  char *block = n <= SIZE_MAX / per ? malloc(n * per) : NULL;
  if (!j || !h || !block) {
    free(j);
    free(h);
    free(block);
    free(chunk);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  atomic_init(&j->refs, 1);
  j->engine = engine;
  j->cap = cap;
  if (chunk) {
    chunk->next = NULL;
    j->chunks = chunk;
  }
  j->patterns = (const char **)block;
  j->helper = (CompileResult *)(block + n * sizeof(char *));
  j->own = j->helper + n;
  j->options = (uint32_t *)(j->own + n);
  j->state = (atomic_int *)(j->options + n);
  memset(j->state, 0, n * sizeof(atomic_int)); /* all SLOT_FREE (0) */
  h->kind = KIND_COMPILE;
  h->job = j;
  if (napi_create_external(env, h, finalize_compile_handle, NULL, handle) != napi_ok) {
    compile_job_release(j);
    free(h);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (cap >= 32) cpool_list(j); /* small tables: not worth a hand-off */
  return j;
}

/* patternsCompileStart(engine, capacity) -> job: room for `capacity` patterns, offered to the compiler threads. */
static napi_value PatternsCompileStart(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "patternsCompileStart(engine, capacity)");
  int32_t engine;
  uint32_t cap;
  if (napi_get_value_int32(env, argv[0], &engine) != napi_ok || (engine != KIND_REGEX && engine != KIND_PCRE))
    NAPI_THROW_TYPE(env, "bad engine");
  if (napi_get_value_uint32(env, argv[1], &cap) != napi_ok || cap > MAX_COMPILE_PATTERNS) NAPI_THROW_TYPE(env, "bad capacity");
  napi_value handle;
  if (!compile_job_new(env, engine, cap, NULL, &handle)) return NULL;
  return handle;
}

/* The scanner's patterns, offered to the compiler threads in small groups (the first at once). */
typedef struct {
  CompileJob *job;
  uint32_t published; /* patterns offered so far */
} ScanFeed;

static int32_t scan_add(void *ctx, const char *pattern, uint32_t options) {
  ScanFeed *f = ctx;
  CompileJob *j = f->job;
  if (j->added >= j->cap) return -1;
  uint32_t i = j->added++;
  j->patterns[i] = pattern;
  j->options[i] = options;
  if (f->published == 0 || j->added - f->published >= 16) {
    cpool_publish(j, j->added);
    f->published = j->added;
  }
  return (int32_t)i;
}

/* Scan the text in chunk c (len bytes, NUL after them; the job takes it) into result: job, records, patterns. */
static bool scan_chunk(napi_env env, int32_t engine, Chunk *c, size_t len, bool fast, bool no_regsub, napi_value result) {
  size_t max_records = patscan_max_records(c->text, len);
  if (max_records > MAX_COMPILE_PATTERNS / 2) {
    free(c);
    napi_throw_error(env, NULL, "too many lines");
    return false;
  }
  napi_value job_handle, rec_ab, records;
  /* a logical line has at most one pattern, two in regexp's /a/!/b/ */
  CompileJob *j = compile_job_new(env, engine, (uint32_t)((engine == KIND_REGEX ? 2 : 1) * max_records), c, &job_handle);
  if (!j) return false;
  int32_t *rec = NULL;
  if (napi_create_arraybuffer(env, max_records * PATSCAN_FIELDS * sizeof(int32_t), (void **)&rec, &rec_ab) != napi_ok) return false;
  ScanFeed feed = {j, 0};
  long n = patscan(engine == KIND_REGEX ? PATSCAN_REGEXP : PATSCAN_PCRE, c->text, len, fast, no_regsub, rec, scan_add, &feed);
  cpool_publish(j, j->added);
  if (n < 0) {
    napi_throw_error(env, NULL, "more patterns than the job's capacity");
    return false;
  }
  return napi_create_typedarray(env, napi_int32_array, (size_t)n * PATSCAN_FIELDS, rec_ab, 0, &records) == napi_ok &&
         set_prop(env, result, "job", job_handle) && set_prop(env, result, "records", records) &&
         set_prop(env, result, "patterns", make_int(env, j->added));
}

/* The engine, fast and noRegsub arguments of patternsScan/patternsScanFile. */
static bool scan_args(napi_env env, napi_value *argv, int32_t *engine, bool *fast, bool *no_regsub) {
  if (napi_get_value_int32(env, argv[0], engine) != napi_ok || (*engine != KIND_REGEX && *engine != KIND_PCRE)) {
    napi_throw_type_error(env, NULL, "bad engine");
    return false;
  }
  if (napi_get_value_bool(env, argv[2], fast) != napi_ok || napi_get_value_bool(env, argv[3], no_regsub) != napi_ok) {
    napi_throw_type_error(env, NULL, "fast and noRegsub must be booleans");
    return false;
  }
  return true;
}

/*
 * patternsScan(engine, text, fast, noRegsub) -> { job, records, patterns }:
 * start a compile job for a table's source text and scan it (patscan.c):
 * the patterns of the rules the scanner takes are being compiled when this
 * returns; records (Int32Array, PATSCAN_FIELDS per logical line) say what
 * each line is; patterns is how many the job holds (further ones may be
 * added with patternsCompileAdd). fast = false leaves every line to the
 * caller.
 */
static napi_value PatternsScan(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) NAPI_THROW_TYPE(env, "patternsScan(engine, text, fast, noRegsub)");
  int32_t engine;
  bool fast = false, no_regsub = false;
  if (!scan_args(env, argv, &engine, &fast, &no_regsub)) return NULL;
  napi_valuetype t;
  NAPI_CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_string) NAPI_THROW_TYPE(env, "text must be a string");
  size_t len = 0;
  NAPI_CHECK(env, napi_get_value_string_latin1(env, argv[1], NULL, 0, &len));
  if (len >= INT32_MAX) NAPI_THROW_TYPE(env, "table text too large");
  Chunk *c = malloc(sizeof(Chunk) + len + 1);
  if (!c) NAPI_THROW_TYPE(env, "out of memory");
  size_t copied = 0;
  if (napi_get_value_string_latin1(env, argv[1], c->text, len + 1, &copied) != napi_ok || copied != len) {
    free(c);
    NAPI_THROW_TYPE(env, "cannot read string");
  }
  c->text[len] = 0;
  napi_value result;
  NAPI_CHECK(env, napi_create_object(env, &result));
  return scan_chunk(env, engine, c, len, fast, no_regsub, result) ? result : NULL;
}

/*
 * patternsScanFile(engine, path, fast, noRegsub) -> patternsScan()'s result
 * plus text (the file as a byte string) and stat ([dev, ino, size,
 * mtime s, mtime ns, ctime s, ctime ns]), for a regular file read here
 * in one go; null when the file cannot be opened or read or is not a
 * regular file (the caller then reads it its own way, and reports why).
 */
static napi_value PatternsScanFile(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) NAPI_THROW_TYPE(env, "patternsScanFile(engine, path, fast, noRegsub)");
  int32_t engine;
  bool fast = false, no_regsub = false;
  if (!scan_args(env, argv, &engine, &fast, &no_regsub)) return NULL;
  char path[4096];
  size_t plen = 0;
  napi_valuetype t;
  NAPI_CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_string) NAPI_THROW_TYPE(env, "path must be a string");
  NAPI_CHECK(env, napi_get_value_string_latin1(env, argv[1], path, sizeof(path), &plen));
  napi_value nothing;
  NAPI_CHECK(env, napi_get_null(env, &nothing));
  if (plen == 0 || plen >= sizeof(path) - 1 || memchr(path, 0, plen) != NULL) return nothing;
  /* O_NONBLOCK: a FIFO must not block the server in open() */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return nothing;
  struct stat st;
  Chunk *c = NULL;
  size_t len = 0;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < INT32_MAX - 1) {
    size_t cap = (size_t)st.st_size + 1; /* one more byte: a file that grew is read again */
    c = malloc(sizeof(Chunk) + cap + 1);
    while (c) {
      ssize_t got = read(fd, c->text + len, cap - len);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) {
        free(c);
        c = NULL;
        break;
      }
      if (got == 0) break;
      len += (size_t)got;
      if (len == cap) {
        if (cap >= INT32_MAX / 2) {
          free(c);
          c = NULL;
          break;
        }
        cap *= 2;
        Chunk *bigger = realloc(c, sizeof(Chunk) + cap + 1);
        if (!bigger) free(c);
        c = bigger;
      }
    }
  }
  close(fd);
  if (!c) return nothing;
  c->text[len] = 0;
  /* the text goes to JavaScript before the scanner writes into it */
  napi_value result, text, stat_ab, stat_arr;
  double *sd = NULL;
  if (napi_create_object(env, &result) != napi_ok || napi_create_string_latin1(env, c->text, len, &text) != napi_ok ||
      napi_create_arraybuffer(env, 7 * sizeof(double), (void **)&sd, &stat_ab) != napi_ok ||
      napi_create_typedarray(env, napi_float64_array, 7, stat_ab, 0, &stat_arr) != napi_ok || !set_prop(env, result, "text", text) ||
      !set_prop(env, result, "stat", stat_arr)) {
    free(c);
    return NULL;
  }
  sd[0] = (double)st.st_dev;
  sd[1] = (double)st.st_ino;
  sd[2] = (double)st.st_size;
  sd[3] = (double)st.st_mtim.tv_sec;
  sd[4] = (double)st.st_mtim.tv_nsec;
  sd[5] = (double)st.st_ctim.tv_sec;
  sd[6] = (double)st.st_ctim.tv_nsec;
  return scan_chunk(env, engine, c, len, fast, no_regsub, result) ? result : NULL;
}

/*
 * patternsCompileAdd(job, patterns, options): more patterns, joined by NUL
 * bytes (a pattern is a C string), with their regcomp cflags / pcre2
 * options (Uint32Array, one per pattern). Returns the index of the first.
 */
static napi_value PatternsCompileAdd(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) NAPI_THROW_TYPE(env, "patternsCompileAdd(job, patterns, options)");
  CompileJob *j = get_compile_job(env, argv[0], NULL);
  if (!j) return NULL;
  napi_typedarray_type ta_type;
  size_t n = 0;
  void *ta_data = NULL;
  bool is_ta = false;
  NAPI_CHECK(env, napi_is_typedarray(env, argv[2], &is_ta));
  if (!is_ta) NAPI_THROW_TYPE(env, "options must be a Uint32Array");
  NAPI_CHECK(env, napi_get_typedarray_info(env, argv[2], &ta_type, &n, &ta_data, NULL, NULL));
  if (ta_type != napi_uint32_array) NAPI_THROW_TYPE(env, "options must be a Uint32Array");
  if (n == 0) return make_int(env, j->added);
  if (n > (size_t)(j->cap - j->added)) NAPI_THROW_TYPE(env, "more patterns than the job's capacity");
  size_t len = 0;
  napi_valuetype t;
  NAPI_CHECK(env, napi_typeof(env, argv[1], &t));
  if (t != napi_string) NAPI_THROW_TYPE(env, "patterns must be a string");
  NAPI_CHECK(env, napi_get_value_string_latin1(env, argv[1], NULL, 0, &len));
  Chunk *c = malloc(sizeof(Chunk) + len + 1);
  if (!c) NAPI_THROW_TYPE(env, "out of memory");
  size_t copied = 0;
  if (napi_get_value_string_latin1(env, argv[1], c->text, len + 1, &copied) != napi_ok) {
    free(c);
    NAPI_THROW_TYPE(env, "cannot read string");
  }
  c->text[copied] = 0;
  /* count the patterns first: exactly n */
  size_t pos = 0, found = 0;
  while (found < n && pos <= copied) {
    pos += strlen(c->text + pos) + 1;
    found++;
  }
  if (found != n || pos != copied + 1) {
    free(c);
    NAPI_THROW_TYPE(env, "the number of patterns and of options differ");
  }
  uint32_t first = j->added;
  /* slots [count, count+n) are not visible to the helpers until count moves (under the lock) */
  pos = 0;
  for (size_t i = 0; i < n; i++) {
    j->patterns[first + i] = c->text + pos;
    j->options[first + i] = ((uint32_t *)ta_data)[i];
    pos += strlen(c->text + pos) + 1;
  }
  c->next = j->chunks; /* only this thread touches the chunk list */
  j->chunks = c;
  j->added = first + (uint32_t)n;
  cpool_publish(j, j->added);
  return make_int(env, first);
}

/*
 * patternsCompileFinish(job) -> { batch, groups, errors }: compiles what is
 * left, then reports. groups: Int32Array, per pattern re_nsub / the capture
 * count, or -1 when it did not compile. errors: [[index, text, code,
 * offset], ...] for the patterns that did not compile (offset: pcre2 only,
 * else 0).
 */
static napi_value PatternsCompileFinish(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) NAPI_THROW_TYPE(env, "patternsCompileFinish(job)");
  CompileHandle *h = NULL;
  CompileJob *j = get_compile_job(env, argv[0], &h);
  if (!j) return NULL;
  uint32_t count = j->added;
  locale_t saved = j->engine == KIND_REGEX ? enter_c_locale() : (locale_t)0;
  /* what no helper has taken, from the end (the helpers go forward) ... */
  for (uint32_t k = count; k > 0; k--) {
    uint32_t i = k - 1;
    int expect = SLOT_FREE;
    if (atomic_compare_exchange_strong(&j->state[i], &expect, SLOT_MAIN)) compile_one(j->engine, j->patterns[i], j->options[i], &j->own[i]);
  }
  /* (the compiler threads take no more of it) ... */
  cpool_unlist(j);
  /* ... then what a helper is still busy with */
  for (uint32_t i = 0; i < count; i++) {
    int expect = SLOT_HELPER;
    if (atomic_compare_exchange_strong(&j->state[i], &expect, SLOT_MAIN)) compile_one(j->engine, j->patterns[i], j->options[i], &j->own[i]);
  }
  leave_c_locale(saved);
  /* every slot is now SLOT_HELPER_DONE or SLOT_MAIN: pick each one's result */
  const char *bad = NULL;
  Batch *b = calloc(1, sizeof(*b));
  void **objs = calloc(count ? count : 1, sizeof(void *));
  if (!b || !objs) bad = "out of memory";
  napi_value result = NULL, errors, groups, groups_ab, handle;
  int32_t *gdata = NULL;
  if (!bad && (napi_create_arraybuffer(env, (count ? count : 1) * sizeof(int32_t), (void **)&gdata, &groups_ab) != napi_ok ||
               napi_create_typedarray(env, napi_int32_array, count, groups_ab, 0, &groups) != napi_ok ||
               napi_create_array(env, &errors) != napi_ok || napi_create_object(env, &result) != napi_ok))
    bad = "cannot create result";
  uint32_t nerr = 0;
  for (uint32_t i = 0; i < count; i++) {
    int helper_won = atomic_load(&j->state[i]) == SLOT_HELPER_DONE;
    CompileResult *r = helper_won ? &j->helper[i] : &j->own[i];
    if (r->groups == -2) bad = "out of memory";
    if (!bad) {
      gdata[i] = r->groups;
      objs[i] = r->obj;
      r->obj = NULL; /* now the batch's */
      if (r->groups == -1) {
        napi_value e;
        if (napi_create_array_with_length(env, 4, &e) != napi_ok || napi_set_element(env, e, 0, make_int(env, i)) != napi_ok ||
            napi_set_element(env, e, 1, make_string(env, r->text ? r->text : "")) != napi_ok ||
            napi_set_element(env, e, 2, make_int(env, r->code)) != napi_ok ||
            napi_set_element(env, e, 3, make_int(env, r->offset)) != napi_ok || napi_set_element(env, errors, nerr++, e) != napi_ok)
          bad = "cannot create result";
      }
    }
    result_drop(r);
    if (helper_won) r->groups = -3; /* taken: not for compile_job_release to drop */
  }
  if (b) {
    b->kind = KIND_BATCH;
    b->engine = j->engine;
    b->count = objs ? count : 0;
    b->objs = objs;
  }
  h->job = NULL;
  compile_job_release(j);
  if (!bad && napi_create_external(env, b, finalize_batch, NULL, &handle) != napi_ok) bad = "cannot create handle";
  if (bad) {
    if (b)
      finalize_batch(env, b, NULL);
    else
      free(objs);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_error(env, NULL, bad);
    return NULL;
  }
  if (!set_prop(env, result, "batch", handle) || !set_prop(env, result, "groups", groups) || !set_prop(env, result, "errors", errors))
    return NULL;
  return result;
}

/*
 * ruleSetFromBatch(batch, program) -> rule set handle. program: Int32Array
 * of 7 numbers per rule, [op, first, firstMatch, second, secondMatch,
 * maxSub, endif], where first/second are pattern indexes in the batch (-1:
 * none). The rule set holds its own references to the patterns it uses.
 */
static napi_value RuleSetFromBatch(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "ruleSetFromBatch(batch, program)");
  napi_valuetype t;
  Batch *b = NULL;
  NAPI_CHECK(env, napi_typeof(env, argv[0], &t));
  if (t != napi_external) NAPI_THROW_TYPE(env, "expected a pattern batch");
  NAPI_CHECK(env, napi_get_value_external(env, argv[0], (void **)&b));
  if (!b || b->kind != KIND_BATCH) NAPI_THROW_TYPE(env, "expected a pattern batch");
  napi_typedarray_type ta_type;
  size_t n = 0;
  void *ta_data = NULL;
  bool is_ta = false;
  NAPI_CHECK(env, napi_is_typedarray(env, argv[1], &is_ta));
  if (!is_ta) NAPI_THROW_TYPE(env, "program must be an Int32Array");
  NAPI_CHECK(env, napi_get_typedarray_info(env, argv[1], &ta_type, &n, &ta_data, NULL, NULL));
  if (ta_type != napi_int32_array || n % 7 != 0) NAPI_THROW_TYPE(env, "program must be an Int32Array of 7 numbers per rule");
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
/* native/fd.c: dup(2) of accepted connections. */
int fd_register(napi_env env, napi_value exports);
/* native/sockset.c: connected sockets served in batches. */
int sockset_register(napi_env env, napi_value exports);
/* native/cdb.c: cdb lookups with positioned reads. */
int cdb_register(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  napi_value reg, pcre;
  NAPI_CHECK(env, napi_create_object(env, &reg));
  NAPI_CHECK(env, napi_create_object(env, &pcre));
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
  NAPI_CHECK(env, napi_set_named_property(env, exports, "REG", reg));
  NAPI_CHECK(env, napi_set_named_property(env, exports, "PCRE2", pcre));
  if (!add_fn(env, exports, "regexCompile", RegexCompile) || !add_fn(env, exports, "regexExec", RegexExec) ||
      !add_fn(env, exports, "pcreCompile", PcreCompile) || !add_fn(env, exports, "pcreCaptureCount", PcreCaptureCount) ||
      !add_fn(env, exports, "pcreMatch", PcreMatch) || !add_fn(env, exports, "ruleSetCreate", RuleSetCreate) ||
      !add_fn(env, exports, "ruleSetExec", RuleSetExec) || !add_fn(env, exports, "ruleSetExecAsync", RuleSetExecAsync) || !add_fn(env, exports, "execThreads", ExecThreads) ||
      !add_fn(env, exports, "patternsCompileStart", PatternsCompileStart) ||
      !add_fn(env, exports, "patternsCompileAdd", PatternsCompileAdd) || !add_fn(env, exports, "patternsScan", PatternsScan) ||
      !add_fn(env, exports, "patternsScanFile", PatternsScanFile) || !add_fn(env, exports, "splitStats", SplitStats) ||
      !add_fn(env, exports, "patternsCompileFinish", PatternsCompileFinish) || !add_fn(env, exports, "ruleSetFromBatch", RuleSetFromBatch))
    return NULL;
  if (!proxymapd_sqlite_register(env, exports)) return NULL;
  if (!kv_register(env, exports)) return NULL;
  if (!maillog_register(env, exports) || !fd_register(env, exports) || !sockset_register(env, exports) ||
      !cdb_register(env, exports))
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
