/*
 * ruleset: the whole ordered rule list of one regexp: or pcre: table (match
 * rules with an optional second pattern, IF with its ENDIF target, ENDIF),
 * evaluated natively for one key so that a lookup costs one call however
 * many rules the table has (native/ruleset.c). Rule sets are built from a
 * pattern batch (ruleSetFromBatch) and evaluated on the calling thread
 * (ruleSetExec, possibly shared with an idle compiler thread) or on the
 * evaluation threads (native/exec_pool.c).
 */
#ifndef PROXYMAPD_RULESET_H
#define PROXYMAPD_RULESET_H

#include <stddef.h>
#include <stdint.h>

#include <node_api.h>

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

/* Runtime errors met during one evaluation, reported back as warnings. */
typedef struct {
  uint32_t rule;
  char text[256];
} ExecError;

typedef struct {
  ExecError *items;
  size_t count, cap;
} ErrorList;

/*
 * Evaluate a rule set for one subject, the way Postfix's lookup does (see
 * ruleset.c). Returns the index of the winning rule, -1 when none wins, -2
 * when out of memory. Thread-safe for concurrent calls on the same set.
 */
int32_t ruleset_run(RuleSet *s, const char *subject, size_t len, int skip_regsub, int32_t *offsets, size_t off_len,
                    ErrorList *errs);

/* The rule set behind a JS handle; NULL with a TypeError pending when it is none. */
RuleSet *get_set(napi_env env, napi_value v);

/*
 * A JS byte string copied into this thread's NUL-terminated subject buffer
 * (reused by the next call); NULL with an exception pending. *len_out =
 * bytes before the first NUL (what the engines see).
 */
char *get_subject(napi_env env, napi_value v, size_t *len_out);

/* [[ruleIndex, text], ...] for the errors of one evaluation; NULL on failure. */
napi_value error_list(napi_env env, ErrorList *errs);

/* Add ruleSetFromBatch, ruleSetExec and splitStats to exports; 0 on failure. */
int ruleset_register(napi_env env, napi_value exports);

#endif
