/*
 * compile_pool: a table's patterns compiled on helper threads while the
 * table is parsed (native/compile_pool.c): compile jobs, the table scan
 * that feeds them (patternsScan/patternsScanFile), and the pattern batch a
 * finished job leaves, from which rule sets are built (native/ruleset.c).
 * Idle helper threads also take a share of a lone lookup (a side job).
 */
#ifndef PROXYMAPD_COMPILE_POOL_H
#define PROXYMAPD_COMPILE_POOL_H

#include <stdint.h>

#include <node_api.h>

/* The compiled patterns of one table (patternsCompileFinish). */
typedef struct {
  int kind; /* KIND_BATCH */
  int engine;
  uint32_t count;
  void **objs; /* RegexObj* / PcreObj*, NULL where compilation failed */
} Batch;

/* The batch behind a JS handle; NULL with a TypeError pending when it is none. */
Batch *get_batch(napi_env env, napi_value v);

/*
 * Work offered to an idle helper thread, which calls run(job) once when it
 * takes it. taken and helper_done are the pool's (under its lock).
 */
typedef struct CpoolSideJob {
  void (*run)(struct CpoolSideJob *job);
  int taken;       /* a helper took it */
  int helper_done; /* the helper is out */
} CpoolSideJob;

/* Offer a side job to a sleeping helper (one at a time); 0 when none sleeps or another is offered. */
int cpool_offer(CpoolSideJob *job);

/* Withdraw the offer; when a helper took the job, wait until it is out. */
void cpool_withdraw(CpoolSideJob *job);

/* Add patternsCompileStart/Add/Finish and patternsScan/patternsScanFile to exports; 0 on failure. */
int compile_pool_register(napi_env env, napi_value exports);

#endif
