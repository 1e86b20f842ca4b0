/*
 * exec_pool: rule-set evaluations off the main thread (ruleSetExecAsync)
 * on a small pool of evaluation threads per N-API environment
 * (execThreads).
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "napi_util.h"
#include "ruleset.h"

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
  argv[0] = js_int(env, found);
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
  return js_int(env, n);
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
  NAPI_ARGS_USAGE(4, "ruleSetExecAsync(set, subject, skipRegsub, callback)");
  RuleSet *s = get_set(env, argv[0]);
  if (!s) return NULL;
  napi_valuetype t;
  NAPI_CHECK(env, napi_typeof(env, argv[3], &t));
  if (t != napi_function) NAPI_THROW_TYPE(env, "callback must be a function");
  size_t len;
  char *subject = get_subject(env, argv[1], &len);
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

int exec_pool_register(napi_env env, napi_value exports) {
  return js_add_fn(env, exports, "ruleSetExecAsync", RuleSetExecAsync) && js_add_fn(env, exports, "execThreads", ExecThreads);
}
