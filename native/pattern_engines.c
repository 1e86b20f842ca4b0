/*
 * pattern_engines: glibc POSIX regex (C locale) and PCRE2 8-bit, the
 * engines of regexp: and pcre: tables (see pattern_engines.h): compiling
 * one pattern, running a PCRE2 match with per-thread match data, the
 * shared "C" locale, and the REG / PCRE2 constants for JavaScript.
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "napi_util.h"
#include "pattern_engines.h"

void *get_handle(napi_env env, napi_value v, int kind, const char *msg) {
  void *data = js_external_data(env, v);
  if (data == NULL || *(int *)data != kind) {
    napi_throw_type_error(env, NULL, msg);
    return NULL;
  }
  return data;
}

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

void obj_unref(void *o) {
  if (!o) return;
  if (((ObjHead *)o)->kind == KIND_REGEX)
    regex_unref((RegexObj *)o);
  else
    pcre_unref((PcreObj *)o);
}

/*
 * Per-thread state (rule sets run on the main thread and on thread-pool
 * threads; the addon may be loaded by several worker threads): the "C"
 * locale made current around every regcomp/regexec call, and a default
 * PCRE2 match context (the same defaults as the NULL context Postfix
 * passes) with match data.
 */
static locale_t c_locale = (locale_t)0; /* one object, shared read-only by all threads */
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void) { c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0); }

locale_t enter_c_locale(void) {
  pthread_once(&c_locale_once, make_c_locale);
  return c_locale != (locale_t)0 ? uselocale(c_locale) : (locale_t)0;
}

void leave_c_locale(locale_t saved) {
  if (saved != (locale_t)0) uselocale(saved);
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

PCRE2_SIZE *match_ovector(void) { return pcre2_get_ovector_pointer(tl_md); }

void pcre_error_text(int code, char *buf, size_t size) {
  int len = pcre2_get_error_message(code, (PCRE2_UCHAR *)buf, size);
  if (len <= 0) snprintf(buf, size, "unexpected pcre2 error code %d", code);
}

static _Thread_local pcre2_match_context *match_context = NULL;

int pcre_run(PcreObj *p, const char *subject, size_t len) {
  if (match_context == NULL) match_context = pcre2_match_context_create(NULL);
  pcre2_match_data *md = thread_match_data(p->capture_count + 1);
  if (match_context == NULL || md == NULL) return PCRE2_ERROR_NOMEMORY;
  return pcre2_match(p->code, (PCRE2_SPTR)subject, len, 0, 0, md, match_context);
}

void compile_one(int engine, const char *pattern, uint32_t options, CompileResult *out) {
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

static int add_const(napi_env env, napi_value obj, const char *name, double value) {
  napi_value v;
  return napi_create_double(env, value, &v) == napi_ok && napi_set_named_property(env, obj, name, v) == napi_ok;
}

/* REG: regcomp flag bits and REG_NOMATCH; PCRE2: compile option bits, PCRE2_ERROR_NOMATCH, the compiled-against version. */
int pattern_engines_register(napi_env env, napi_value exports) {
  napi_value reg, pcre;
  if (napi_create_object(env, &reg) != napi_ok || napi_create_object(env, &pcre) != napi_ok) return 0;
  return add_const(env, reg, "EXTENDED", REG_EXTENDED) && add_const(env, reg, "ICASE", REG_ICASE) &&
         add_const(env, reg, "NEWLINE", REG_NEWLINE) && add_const(env, reg, "NOSUB", REG_NOSUB) &&
         add_const(env, reg, "NOMATCH", REG_NOMATCH) &&
         add_const(env, pcre, "CASELESS", PCRE2_CASELESS) && add_const(env, pcre, "MULTILINE", PCRE2_MULTILINE) &&
         add_const(env, pcre, "DOTALL", PCRE2_DOTALL) && add_const(env, pcre, "EXTENDED", PCRE2_EXTENDED) &&
         add_const(env, pcre, "ANCHORED", PCRE2_ANCHORED) &&
         add_const(env, pcre, "DOLLAR_ENDONLY", PCRE2_DOLLAR_ENDONLY) &&
         add_const(env, pcre, "UNGREEDY", PCRE2_UNGREEDY) &&
         add_const(env, pcre, "ERROR_NOMATCH", PCRE2_ERROR_NOMATCH) &&
         add_const(env, pcre, "MAJOR", PCRE2_MAJOR) && add_const(env, pcre, "MINOR", PCRE2_MINOR) &&
         napi_set_named_property(env, exports, "REG", reg) == napi_ok &&
         napi_set_named_property(env, exports, "PCRE2", pcre) == napi_ok;
}
