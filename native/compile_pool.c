/*
 * compile_pool: a table's patterns compiled on helper threads while the
 * table is parsed (see compile_pool.h): compile jobs, the helper threads,
 * the table scan that feeds a job (patscan.c), and the pattern batches.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compile_pool.h"
#include "napi_util.h"
#include "pattern_engines.h"
#include "patscan.h"

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

/* Most patterns one compile job holds. */
#define MAX_COMPILE_PATTERNS 50000000u

typedef struct Chunk {
  struct Chunk *next;
  char text[];
} Chunk;

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
  CpoolSideJob *side; /* a side job offered to the threads (at most one at a time: the main thread's) */
  pthread_cond_t side_done;
  cpu_set_t allowed; /* the CPUs this process may use (at start) */
  int kept_off;      /* the CPU the threads were last kept off (-1: none) */
} cpool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0, 0, 0, {0}, NULL, PTHREAD_COND_INITIALIZER, {{0}}, -1};

/* A compiler thread: take the next pattern of the first job that has one; sleep when none has. */
static void *compile_helper(void *arg) {
  (void)arg;
  /* these threads only compile: the "C" locale for regcomp, for good */
  (void)enter_c_locale();
  pthread_mutex_lock(&cpool.lock);
  for (;;) {
    if (cpool.side && !cpool.side->taken) {
      CpoolSideJob *e = cpool.side;
      e->taken = 1;
      pthread_mutex_unlock(&cpool.lock);
      e->run(e);
      pthread_mutex_lock(&cpool.lock);
      e->helper_done = 1;
      pthread_cond_broadcast(&cpool.side_done);
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
  CompileHandle *h = get_handle(env, v, KIND_COMPILE, "expected a compile job");
  if (!h) return NULL;
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
  NAPI_ARGS_USAGE(2, "patternsCompileStart(engine, capacity)");
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
         js_set_prop(env, result, "job", job_handle) && js_set_prop(env, result, "records", records) &&
         js_set_prop(env, result, "patterns", js_int(env, j->added));
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
  NAPI_ARGS_USAGE(4, "patternsScan(engine, text, fast, noRegsub)");
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
  NAPI_ARGS_USAGE(4, "patternsScanFile(engine, path, fast, noRegsub)");
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
      napi_create_typedarray(env, napi_float64_array, 7, stat_ab, 0, &stat_arr) != napi_ok || !js_set_prop(env, result, "text", text) ||
      !js_set_prop(env, result, "stat", stat_arr)) {
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
  NAPI_ARGS_USAGE(3, "patternsCompileAdd(job, patterns, options)");
  CompileJob *j = get_compile_job(env, argv[0], NULL);
  if (!j) return NULL;
  size_t n = 0;
  void *ta_data = NULL;
  if (!js_typed_array(env, argv[2], napi_uint32_array, &ta_data, &n, "options must be a Uint32Array")) return NULL;
  if (n == 0) return js_int(env, j->added);
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
  return js_int(env, first);
}

/*
 * patternsCompileFinish(job) -> { batch, groups, errors }: compiles what is
 * left, then reports. groups: Int32Array, per pattern re_nsub / the capture
 * count, or -1 when it did not compile. errors: [[index, text, code,
 * offset], ...] for the patterns that did not compile (offset: pcre2 only,
 * else 0).
 */
static napi_value PatternsCompileFinish(napi_env env, napi_callback_info info) {
  NAPI_ARGS_USAGE(1, "patternsCompileFinish(job)");
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
        if (napi_create_array_with_length(env, 4, &e) != napi_ok || napi_set_element(env, e, 0, js_int(env, i)) != napi_ok ||
            napi_set_element(env, e, 1, js_latin1(env, r->text ? r->text : "")) != napi_ok ||
            napi_set_element(env, e, 2, js_int(env, r->code)) != napi_ok ||
            napi_set_element(env, e, 3, js_int(env, r->offset)) != napi_ok || napi_set_element(env, errors, nerr++, e) != napi_ok)
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
  if (!js_set_prop(env, result, "batch", handle) || !js_set_prop(env, result, "groups", groups) || !js_set_prop(env, result, "errors", errors))
    return NULL;
  return result;
}

/* Offered only to a sleeping thread (one that is compiling would take it late), one side job at a time. */
int cpool_offer(CpoolSideJob *job) {
  pthread_mutex_lock(&cpool.lock);
  int offered = cpool.sleeping > 0 && cpool.side == NULL;
  if (offered) {
    cpool.side = job;
    pthread_cond_signal(&cpool.more);
  }
  pthread_mutex_unlock(&cpool.lock);
  return offered;
}

/* A helper that took the job is at most one piece of it from done. */
void cpool_withdraw(CpoolSideJob *job) {
  pthread_mutex_lock(&cpool.lock);
  cpool.side = NULL;
  while (job->taken && !job->helper_done) pthread_cond_wait(&cpool.side_done, &cpool.lock);
  pthread_mutex_unlock(&cpool.lock);
}

Batch *get_batch(napi_env env, napi_value v) { return get_handle(env, v, KIND_BATCH, "expected a pattern batch"); }

int compile_pool_register(napi_env env, napi_value exports) {
  return js_add_fn(env, exports, "patternsCompileStart", PatternsCompileStart) &&
         js_add_fn(env, exports, "patternsCompileAdd", PatternsCompileAdd) && js_add_fn(env, exports, "patternsScan", PatternsScan) &&
         js_add_fn(env, exports, "patternsScanFile", PatternsScanFile) &&
         js_add_fn(env, exports, "patternsCompileFinish", PatternsCompileFinish);
}
