/*
 * The key-value module's shared parts: constants shared with
 * src/addon/kv.ts, the handle, the operations table each backend fills in
 * (kv_lmdb.c, kv_bdb.c), the file helpers (kv_file.c: locks, file identity,
 * fault guard) and the small inline helpers the N-API layer (kv.c) and the
 * backends both use, among them the one implementation of Postfix's NUL
 * terminator rules (kv_nul_passes, kv_write_nul).
 */
#ifndef PROXYMAPD_KV_H
#define PROXYMAPD_KV_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <db.h>
#include <lmdb.h>

/* Nothing here is used outside the addon: direct calls, no PLT. */
#pragma GCC visibility push(hidden)

/* ------------------------------------------------------------------ */
/* Constants shared with src/addon/kv.ts                              */
/* ------------------------------------------------------------------ */

enum { KV_LMDB = 1, KV_HASH = 2, KV_BTREE = 3 };
enum { MODE_READ = 0, MODE_WRITE = 1, MODE_BULK = 2 };

/* Postfix dictionary flags (src/util/dict.h) this module looks at. */
#define DF_TRY0NULL 0x4
#define DF_TRY1NULL 0x8
#define DF_LOCK 0x40
#define DF_DUP_REPLACE 0x80
#define DF_SYNC_UPDATE 0x100
/* Ours: do not wait for a busy lock. */
#define KV_NONBLOCK 0x40000000
/* Our op flag, next to the DICT_FLAG bits: this batch operation is a delete. */
#define KV_OP_DELETE 0x20000000

/* Results of the operations (besides a found value). */
#define ST_OK 0
#define ST_NOTFOUND 1 /* also: key exists (put without replace) */
#define ST_BUSY 2     /* lock held by another process (KV_NONBLOCK) */
#define ST_RESTART 3  /* bulk LMDB transaction restarted after MDB_MAP_FULL */
#define ST_NONE 4     /* internal: the optional operation does not apply, take the usual path */
#define ST_ERROR (-1)

/* How often an operation reopens a file that keeps being replaced or changed. */
#define REOPEN_LIMIT 4

/* Lock requests. */
enum { LK_NONE = 0, LK_SHARED = 1, LK_EXCL = 2 };

/* ------------------------------------------------------------------ */
/* Handle                                                              */
/* ------------------------------------------------------------------ */

#define KV_MAGIC 0x6b764831

typedef struct {
  dev_t dev;
  ino_t ino;
  off_t size;
  struct timespec mtim, ctim;
} FileId;

/* A growable scratch buffer. */
typedef struct {
  char *data;
  size_t cap;
} Buf;

/* Bytes handed from a backend to the N-API layer: valid until the next library call on the handle. */
typedef struct {
  const char *data;
  size_t len;
} KvBytes;

/* One operation of a write batch (kvBatch). */
typedef struct {
  int flags; /* DF_DUP_REPLACE, DF_SYNC_UPDATE, KV_OP_DELETE */
  char *key; /* NUL-terminated, with room for it */
  size_t klen;
  char *val;
  size_t vlen;
  int status;
} KvBatchOp;

typedef struct KvHandle KvHandle;

/*
 * What a backend does, called by the N-API layer. `op` is the lock request
 * (LK_*), `nonblock` whether a busy lock answers ST_BUSY at once. Unless
 * said otherwise the calls return ST_OK, ST_NOTFOUND, ST_BUSY or ST_ERROR
 * (with the text in h->err). Faults inside the libraries are caught by the
 * backend itself (kv_file.c's guard), which then forgets or leaks the
 * library state and reports ST_ERROR; so does the check whether the file
 * changed under the handle, done by acquire and inside each transaction.
 */
typedef struct KvOps {
  /* The library's run-time version string. */
  const char *(*version)(void);
  /* kvOpen: the file in h->path, in h->mode. */
  int (*open)(KvHandle *h, int64_t map_size, int64_t cache_size, int lock_flags);
  /* Free the library state (the handle's memory is the caller's). */
  void (*destroy)(KvHandle *h);
  /* The per-operation lock, (re)opening the file first when needed; release undoes it. */
  int (*acquire)(KvHandle *h, int op, int nonblock);
  void (*release)(KvHandle *h, int op);
  /* Optional: a lookup served without the lock (LMDB: inside the pending bulk transaction), or ST_NONE. */
  int (*pending_get)(KvHandle *h, const char *key, size_t klen, KvBytes *val);
  /* One key form, lock held (by acquire): ST_OK with *val, ST_NOTFOUND, ST_ERROR. scratch: room for the value. */
  int (*get)(KvHandle *h, int op, const char *key, size_t ksize, Buf *scratch, KvBytes *val);
  /* kvPut: the key and value with the NUL already decided; takes and releases the lock `op` itself. */
  int (*put)(KvHandle *h, int op, int nonblock, const char *key, size_t ksize, const char *val, size_t vsize, int flags);
  /* One key form, lock held: ST_OK, ST_NOTFOUND, ST_ERROR. */
  int (*del)(KvHandle *h, int op, const char *key, size_t ksize);
  /* Optional: after the deletes of one kvDel, lock still held (flush on SYNC_UPDATE): ST_OK or ST_ERROR. */
  int (*del_done)(KvHandle *h, int op, int flags);
  /* kvSeq: first or next entry into *k, *v (kbuf/vbuf: room for them); takes and releases the lock `op`. */
  int (*seq)(KvHandle *h, int op, int nonblock, int first, Buf *kbuf, Buf *vbuf, KvBytes *k, KvBytes *v);
  /* kvCommit (ST_RESTART: a bulk LMDB load must start over), kvSync, kvClose (the handle is idle). */
  int (*commit)(KvHandle *h);
  int (*sync)(KvHandle *h);
  int (*close)(KvHandle *h);
  /* kvBatch on a worker thread, exclusive lock held: each op's status; 1 = the whole batch failed. */
  int (*batch)(KvHandle *h, KvBatchOp *ops, size_t n);
  /* Back on the main thread after a batch: release the exclusive lock. */
  void (*batch_end)(KvHandle *h);
  /*
   * Optional: after a fault, make a read-only handle usable again (its
   * library state abandoned, the file to be opened afresh); 0 when it
   * cannot be (the handle stays broken).
   */
  int (*recover)(KvHandle *h);
} KvOps;

extern const KvOps kv_lmdb_ops;
extern const KvOps kv_bdb_ops;

struct KvHandle {
  int magic;
  int kind;
  int mode;
  const KvOps *ops;
  int raw;       /* keys/values exact bytes (no C-string truncation) */
  int nul_flags; /* TRY0NULL|TRY1NULL state, sticky per handle */
  int closed;
  int broken;    /* a library call faulted: never touch its state again */
  int busy;      /* a write batch runs on a worker thread: the main thread keeps off the handle */
  int close_pending; /* kvClose came while busy: close when the batch is done */
  char *path;    /* the file, suffix included */
  char *label;   /* "lmdb:<name>" or "<name>.db", as Postfix's messages name the table */
  char err[1024];
  char bdb_msg[512]; /* last message Berkeley DB reported */
  FileId open_id;    /* the file as first opened (for changed()) */

  /* LMDB (kv_lmdb.c) */
  MDB_env *env;
  MDB_dbi dbi;
  MDB_txn *bulk_txn;
  size_t curr_limit, hard_limit, map_size;
  unsigned int psize;
  int lmdb_fd;
  int bulk_retries;
  int step_rc; /* the library error of the last lm_step that returned -1 */
  MDB_val saved_key; /* sequence position (slmdb_cursor_get) */
  size_t saved_cap;
  int have_saved;

  /* Berkeley DB (kv_bdb.c) */
  DB_ENV *dbenv;
  DB *db;
  DBC *cursor;
  int cursor_lost; /* the handle was reopened during a sequence */
  int lock_fd;     /* our own descriptor on the .db file, for flock() */
  u_int32_t cache_size;
  FileId seen;     /* the file as last seen by this handle */
  int seen_ambiguous;
  int ino_fd;      /* inotify watch on the file: changes by anyone since we last looked, or -1 */
  char *seq_key;   /* last key returned by the sequence (for repositioning) */
  size_t seq_len, seq_cap;
};

/* The error text of the handle's last failure (kv.c). */
void set_err(KvHandle *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------------------------ */
/* Postfix's NUL terminator rules (dict_lmdb/dict_db), once            */
/* ------------------------------------------------------------------ */

/* Try one form of a key: ksize bytes of it (with or without its NUL). ST_OK = hit, ST_NOTFOUND = miss, else an error. */
typedef int (*kv_key_fn)(KvHandle *h, size_t ksize, void *ctx);

/*
 * A lookup or delete under the handle's NUL rules: key+NUL first
 * (TRY1NULL), then the bare key (TRY0NULL); the first hit clears the other
 * flag, so that the handle sticks to the form the file uses. The key must
 * be NUL-terminated at klen. A raw handle tries the exact key once and keeps
 * its flags. Returns the last try's result.
 */
static inline int kv_nul_passes(KvHandle *h, size_t klen, kv_key_fn fn, void *ctx) {
  if (h->raw) return fn(h, klen, ctx);
  int s = ST_NOTFOUND;
  if (h->nul_flags & DF_TRY1NULL) {
    s = fn(h, klen + 1, ctx);
    if (s == ST_OK) h->nul_flags &= ~DF_TRY0NULL;
    if (s != ST_NOTFOUND) return s;
  }
  if (h->nul_flags & DF_TRY0NULL) {
    s = fn(h, klen, ctx);
    if (s == ST_OK) h->nul_flags &= ~DF_TRY1NULL;
  }
  return s;
}

/* Whether an update stores the NUL terminator; the first update decides (dict_*_update): with NUL unless told otherwise. */
static inline int kv_write_nul(KvHandle *h) {
  if (h->raw) return 0;
  if ((h->nul_flags & DF_TRY1NULL) && (h->nul_flags & DF_TRY0NULL)) h->nul_flags &= ~DF_TRY0NULL;
  return (h->nul_flags & DF_TRY1NULL) != 0;
}

/* ------------------------------------------------------------------ */
/* Byte helpers                                                        */
/* ------------------------------------------------------------------ */

static inline int buf_reserve(Buf *b, size_t n) {
  if (b->cap >= n) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < n) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) return 0;
  b->data = p;
  b->cap = cap;
  return 1;
}

/* Copy library-owned bytes to our buffer (a C string copy unless raw), NUL-terminated; *len = their length. */
static inline int copy_out(Buf *b, const void *data, size_t size, int raw, size_t *len) {
  size_t n = data == NULL ? 0 : raw ? size : strnlen(data, size);
  if (!buf_reserve(b, n + 1)) return 0;
  if (n) memcpy(b->data, data, n);
  b->data[n] = 0;
  *len = n;
  return 1;
}

/* Library-owned bytes as Postfix returns them, without copying: up to the first NUL unless raw. */
static inline void kv_bytes(const KvHandle *h, const void *data, size_t size, KvBytes *out) {
  if (data == NULL || size == 0) {
    out->data = "";
    out->len = 0;
    return;
  }
  out->data = data;
  out->len = h->raw ? size : strnlen(data, size);
}

/* ------------------------------------------------------------------ */
/* Files (kv_file.c): identity, locks, the fault guard                 */
/* ------------------------------------------------------------------ */

void file_id(const struct stat *st, FileId *id);
int file_id_quick(int fd, FileId *id, nlink_t *nlink);
int ts_cmp(const struct timespec *a, const struct timespec *b);
int same_id(const FileId *a, const FileId *b);
int id_ambiguous(const FileId *id);
/* Whether the file at path is no longer the one identified by open_id (or, with content, its size/mtime differ). */
int kv_file_changed(const char *path, const FileId *open_id, int content);

/* 0 = done, ST_BUSY = held elsewhere (nonblock), -1 = error (errno). */
int lock_fcntl(int fd, int op, int nonblock);
int lock_flock(int fd, int op, int nonblock);
/* A lock call's result as a status: ST_OK, ST_BUSY, or ST_ERROR with Postfix's "lock dictionary" text (errno). */
int kv_lock_status(KvHandle *h, int rc);

/* Fault guard: SIGBUS/SIGSEGV inside a library call become an error. */
extern _Thread_local sigjmp_buf *guard_jmp;
extern _Thread_local volatile int guard_sig;
/* Install the handlers (once per process). */
void kv_guard_init(void);

/*
 * GUARD_TRY(jb) { body } GUARD_CATCH(sig): runs the body with the guard
 * armed; after a fault the body is abandoned and `sig` is set to the signal.
 * SA_NODEFER leaves the signal unblocked, so siglongjmp need not restore the
 * signal mask. Nothing that touches JavaScript may run inside a body.
 */
#define GUARD_TRY(jb)              \
  if (sigsetjmp(jb, 0) == 0) {     \
    guard_jmp = &(jb);
#define GUARD_CATCH(sigvar) \
  guard_jmp = NULL;         \
  }                         \
  else {                    \
    guard_jmp = NULL;       \
    sigvar = guard_sig;     \
  }

#pragma GCC visibility pop

#endif
