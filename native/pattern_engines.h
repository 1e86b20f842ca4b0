/*
 * The regular-expression engines Postfix itself uses for regexp: and pcre:
 * tables (native/pattern_engines.c):
 *
 *  - POSIX regcomp/regexec/regerror from the C library (glibc), always run
 *    under the "C" locale (one byte = one character, ASCII-only case
 *    folding), whatever locale the Node process has.
 *  - PCRE2 8-bit (libpcre2-8), no UTF mode, no JIT, default contexts.
 *
 * Patterns and subjects are NUL-terminated C strings, as Postfix has them.
 * Compiled patterns are reference counted: a pattern batch
 * (native/compile_pool.c) and every rule set (native/ruleset.c) holding one.
 */
#ifndef PROXYMAPD_PATTERN_ENGINES_H
#define PROXYMAPD_PATTERN_ENGINES_H

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif

#include <locale.h>
#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include <node_api.h>
#include <pcre2.h>

/*
 * The first int of every object behind a pattern addon handle (and of the
 * compiled patterns themselves), distinct across the files so that a handle
 * of the wrong kind is told apart. KIND_REGEX / KIND_PCRE are also the
 * engine numbers of the JS API (ENGINE).
 */
enum { KIND_REGEX = 1, KIND_PCRE = 2, KIND_SET = 3, KIND_BATCH = 4, KIND_COMPILE = 5 };

/* The object behind a handle whose first int is `kind`; NULL with a TypeError(msg) otherwise. */
void *get_handle(napi_env env, napi_value v, int kind, const char *msg);

/* Common head of both compiled-pattern objects. */
typedef struct {
  int kind; /* KIND_REGEX or KIND_PCRE */
  int refs; /* the batch and every rule set holding the pattern */
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

/* Drop one reference to a RegexObj or PcreObj (NULL: nothing); the last one frees it. */
void obj_unref(void *o);

/* Make the shared "C" locale current for this thread; returns what to pass to leave_c_locale(). */
locale_t enter_c_locale(void);
void leave_c_locale(locale_t saved);

/* One compilation result. */
typedef struct {
  void *obj;      /* RegexObj* / PcreObj*, NULL on error */
  int32_t groups; /* nsub / capture count; -1 on error; -2 out of memory */
  int32_t code;   /* error code */
  int64_t offset; /* pcre2: error offset */
  char *text;     /* error text (malloc'd) */
} CompileResult;

/*
 * Compile one pattern with regcomp (engine KIND_REGEX, options = cflags;
 * the caller has the "C" locale current) or pcre2_compile (KIND_PCRE):
 * on failure the regerror / pcre2 message text, the error code and the
 * pcre2 error offset. Thread-safe.
 */
void compile_one(int engine, const char *pattern, uint32_t options, CompileResult *out);

/*
 * pcre2_match() at offset 0 with this thread's match data (sized for the
 * largest capture count the thread has seen, so never "ovector too small")
 * and default match context. Its return code; the offsets are then in
 * match_ovector().
 */
int pcre_run(PcreObj *p, const char *subject, size_t len);
PCRE2_SIZE *match_ovector(void);

/* The PCRE2 text for an error code, the way Postfix builds it (256-byte buffer). */
void pcre_error_text(int code, char *buf, size_t size);

/* Add the REG and PCRE2 constants to exports; 0 on failure. */
int pattern_engines_register(napi_env env, napi_value exports);

#endif
