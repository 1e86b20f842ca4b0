/*
 * Key-value files for lmdb:, hash: and btree: tables, through the libraries
 * Postfix itself links: the system LMDB (liblmdb, Debian 0.9.24) and
 * Berkeley DB 5.3 (libdb). Files written here are read by postmap and the
 * other way round, because both sides run the same code on the same format.
 *
 * One handle = one open file, opened the way Postfix's dict_lmdb/slmdb and
 * dict_db modules open it (LMDB: MDB_NOSUBDIR|MDB_NOLOCK, map size from the
 * file size, doubling on MDB_MAP_FULL; Berkeley DB: a private memory-pool
 * environment in the file's directory, DB_FCNTL_LOCKING). The handle also
 * keeps Postfix's per-handle NUL-terminator state (TRY0NULL/TRY1NULL) and
 * applies it on lookup, update and delete.
 *
 * Locking is Postfix's: fcntl() whole-file locks on the LMDB file, flock()
 * on the .db file (INTERNAL_LOCK on Linux), shared for reads and exclusive
 * for writes, taken per operation when the caller passes DICT_FLAG_LOCK.
 * With KV_NONBLOCK a busy lock makes the call return KV_BUSY at once, so
 * that JavaScript can retry later instead of blocking its event loop.
 *
 * Differences from Postfix, all on paths where Postfix would crash or serve
 * stale data:
 *  - errors come back as status codes with Postfix's message text instead
 *    of msg_fatal();
 *  - a writable handle whose file was replaced (link count 0) reopens it
 *    before the next operation (a read-only one keeps the old version until
 *    the table layer swaps in the new one); a Berkeley DB file that another
 *    process changed in place is reopened (its private page cache would be
 *    stale);
 *  - an LMDB file shorter than its meta page says (truncated) is refused
 *    instead of being touched (SIGBUS), and SIGBUS/SIGSEGV inside the
 *    libraries are caught and turned into errors.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <db.h>
#include <lmdb.h>
#include <node_api.h>

#include "napi_util.h"

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

/* Results of the operations (besides a found value). */
#define ST_OK 0
#define ST_NOTFOUND 1 /* also: key exists (put without replace) */
#define ST_BUSY 2     /* lock held by another process (KV_NONBLOCK) */
#define ST_RESTART 3  /* bulk LMDB transaction restarted after MDB_MAP_FULL */
#define ST_ERROR (-1)

/* slmdb/dict_lmdb tunables. */
#define LMDB_FUDGE 10240
#define LMDB_SIZE_INCR 2
#define LMDB_API_RETRY_LIMIT 2
#define LMDB_BULK_RETRY_LIMIT ((int)(2 * sizeof(size_t) * CHAR_BIT))
/* dict_db.c */
#define DB_HASH_NELEM 4096
#define REOPEN_LIMIT 4

/* ------------------------------------------------------------------ */
/* Fault guard: SIGBUS/SIGSEGV inside a library call become an error   */
/* ------------------------------------------------------------------ */

static _Thread_local sigjmp_buf *guard_jmp = NULL;
static _Thread_local volatile int guard_sig = 0;
static struct sigaction old_bus, old_segv;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

static void guard_handler(int sig, siginfo_t *si, void *ctx) {
  sigjmp_buf *j = guard_jmp;
  if (j != NULL) {
    guard_jmp = NULL;
    guard_sig = sig;
    siglongjmp(*j, 1);
  }
  /* Not ours: hand it to whoever had it before (Node's WebAssembly trap handler, say). */
  struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
  if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction != NULL) {
    old->sa_sigaction(sig, si, ctx);
    return;
  }
  if (!(old->sa_flags & SA_SIGINFO) && old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
    old->sa_handler(sig);
    return;
  }
  /* Default action: reinstate it; the faulting instruction runs again and the process dies as it would have. */
  signal(sig, SIG_DFL);
}

static void guard_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = guard_handler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old_bus);
  sigaction(SIGSEGV, &sa, &old_segv);
}

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

typedef struct {
  int magic;
  int kind;
  int mode;
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

  /* LMDB */
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

  /* Berkeley DB */
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
} KvHandle;

static void set_err(KvHandle *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(KvHandle *h, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->err, sizeof(h->err), fmt, ap);
  va_end(ap);
}

static void file_id(const struct stat *st, FileId *id) {
  id->dev = st->st_dev;
  id->ino = st->st_ino;
  id->size = st->st_size;
  id->mtim = st->st_mtim;
  id->ctim = st->st_ctim;
}

/*
 * The file's identity, size and link count without its time stamps (they
 * are left zero). Since Linux 6.13 (multigrain time stamps) reading a file's
 * mtime/ctime makes its next write take a fine-grained stamp, which dirties
 * the inode, so an fdatasync after it commits the journal too: on ext4 here
 * a stat around every synced update cost about 45 us per update (130 -> 180
 * us for a Berkeley DB put + sync). Writers check their file with this where
 * time stamps are not needed (LMDB always; Berkeley DB when inotify sees
 * in-place changes). Falls back to fstat() where statx() is missing.
 */
static int file_id_quick(int fd, FileId *id, nlink_t *nlink) {
  struct statx sx;
  memset(id, 0, sizeof(*id));
  if (statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_NLINK | STATX_SIZE, &sx) == 0) {
    id->dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    id->ino = sx.stx_ino;
    id->size = (off_t)sx.stx_size;
    *nlink = sx.stx_nlink;
    return 0;
  }
  if (errno != ENOSYS) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  id->size = st.st_size;
  *nlink = st.st_nlink;
  return 0;
}

static int ts_cmp(const struct timespec *a, const struct timespec *b) {
  if (a->tv_sec != b->tv_sec) return a->tv_sec < b->tv_sec ? -1 : 1;
  if (a->tv_nsec != b->tv_nsec) return a->tv_nsec < b->tv_nsec ? -1 : 1;
  return 0;
}

static int same_id(const FileId *a, const FileId *b) {
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size && ts_cmp(&a->mtim, &b->mtim) == 0 &&
         ts_cmp(&a->ctim, &b->ctim) == 0;
}

/*
 * Whether a later change to the file could leave its status unchanged: the
 * kernel stamps files from the coarse clock, so a change within the same
 * tick as the last one keeps the time stamps. File systems with whole-second
 * stamps (nanoseconds 0) get a two-second window.
 */
static int id_ambiguous(const FileId *id) {
  struct timespec now;
  if (clock_gettime(CLOCK_REALTIME_COARSE, &now) != 0) return 1;
  const struct timespec *t[2] = {&id->mtim, &id->ctim};
  for (int i = 0; i < 2; i++) {
    if (t[i]->tv_nsec == 0) {
      if (now.tv_sec - t[i]->tv_sec < 2) return 1;
    } else if (ts_cmp(t[i], &now) >= 0) {
      return 1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Locks (myflock.c: fcntl for LMDB, flock for Berkeley DB on Linux)   */
/* ------------------------------------------------------------------ */

enum { LK_NONE = 0, LK_SHARED = 1, LK_EXCL = 2 };

/* 0 = done, ST_BUSY = held elsewhere (nonblock), -1 = error (errno). */
static int lock_fcntl(int fd, int op, int nonblock) {
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = op == LK_SHARED ? F_RDLCK : op == LK_EXCL ? F_WRLCK : F_UNLCK;
  fl.l_whence = SEEK_SET;
  for (;;) {
    if (fcntl(fd, nonblock && op != LK_NONE ? F_SETLK : F_SETLKW, &fl) == 0) return 0;
    if (errno == EINTR) continue;
    if (nonblock && (errno == EAGAIN || errno == EACCES)) return ST_BUSY;
    return -1;
  }
}

static int lock_flock(int fd, int op, int nonblock) {
  int how = op == LK_SHARED ? LOCK_SH : op == LK_EXCL ? LOCK_EX : LOCK_UN;
  if (nonblock && op != LK_NONE) how |= LOCK_NB;
  for (;;) {
    if (flock(fd, how) == 0) return 0;
    if (errno == EINTR) continue;
    if (nonblock && errno == EWOULDBLOCK) return ST_BUSY;
    return -1;
  }
}

/* ------------------------------------------------------------------ */
/* LMDB (slmdb.c / dict_lmdb.c behaviour)                              */
/* ------------------------------------------------------------------ */

static void lm_saved_free(KvHandle *h) {
  free(h->saved_key.mv_data);
  h->saved_key.mv_data = NULL;
  h->saved_key.mv_size = 0;
  h->saved_cap = 0;
  h->have_saved = 0;
}

static int lm_saved_assign(KvHandle *h, const MDB_val *k) {
  if (h->saved_cap < k->mv_size || h->saved_key.mv_data == NULL) {
    void *p = realloc(h->saved_key.mv_data, k->mv_size ? k->mv_size : 1);
    if (!p) return ENOMEM;
    h->saved_key.mv_data = p;
    h->saved_cap = k->mv_size;
  }
  memcpy(h->saved_key.mv_data, k->mv_data, k->mv_size);
  h->saved_key.mv_size = k->mv_size;
  h->have_saved = 1;
  return 0;
}

/* slmdb_recover() for one API call: 0 = try again. */
static int lm_recover(KvHandle *h, int status) {
  MDB_envinfo info;
  switch (status) {
    case MDB_MAP_FULL:
      if (h->curr_limit < h->hard_limit / LMDB_SIZE_INCR)
        h->curr_limit *= LMDB_SIZE_INCR;
      else if (h->curr_limit < h->hard_limit)
        h->curr_limit = h->hard_limit;
      else
        return status;
      return mdb_env_set_mapsize(h->env, h->curr_limit);
    case MDB_MAP_RESIZED: {
      int rc = mdb_env_set_mapsize(h->env, 0);
      if (rc == 0 && mdb_env_info(h->env, &info) == 0) h->curr_limit = info.me_mapsize;
      return rc;
    }
    case MDB_READERS_FULL:
      sleep(1);
      return 0;
    default:
      return status;
  }
}

static int lm_open_env(KvHandle *h) {
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  MDB_dbi dbi;
  struct stat st;
  int rc;
  int lmdb_flags = MDB_NOSUBDIR | MDB_NOLOCK | (h->mode == MODE_READ ? MDB_RDONLY : 0);

  h->curr_limit = h->map_size;
  h->hard_limit = SSIZE_MAX;
  if (h->curr_limit < LMDB_FUDGE) h->curr_limit = LMDB_FUDGE;
  if (stat(h->path, &st) == 0 && (size_t)st.st_size > h->curr_limit - LMDB_FUDGE) {
    if ((size_t)st.st_size > h->hard_limit) h->hard_limit = st.st_size;
    if ((size_t)st.st_size < h->hard_limit - LMDB_FUDGE)
      h->curr_limit = st.st_size + LMDB_FUDGE;
    else
      h->curr_limit = h->hard_limit;
  }
  if ((rc = mdb_env_create(&env)) != 0) goto fail;
  if ((rc = mdb_env_set_mapsize(env, h->curr_limit)) != 0 || (rc = mdb_env_open(env, h->path, lmdb_flags, 0644)) != 0 ||
      (rc = mdb_txn_begin(env, NULL, lmdb_flags & MDB_RDONLY, &txn)) != 0 || (rc = mdb_dbi_open(txn, NULL, 0, &dbi)) != 0 ||
      (rc = mdb_env_get_fd(env, &h->lmdb_fd)) != 0) {
    if (txn) mdb_txn_abort(txn);
    mdb_env_close(env);
    goto fail;
  }
  /* A file shorter than its meta page claims would fault on first access. */
  {
    MDB_envinfo info;
    MDB_stat ms;
    struct stat fst;
    if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &ms) != 0 || fstat(h->lmdb_fd, &fst) != 0) {
      rc = errno ? errno : EIO;
      mdb_txn_abort(txn);
      mdb_env_close(env);
      goto fail;
    }
    h->psize = ms.ms_psize;
    if ((uint64_t)fst.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize) {
      mdb_txn_abort(txn);
      mdb_env_close(env);
      set_err(h, "open database %s: file is truncated (%lld bytes, its meta page needs %llu)", h->path,
              (long long)fst.st_size, (unsigned long long)((info.me_last_pgno + 1) * (uint64_t)ms.ms_psize));
      return MDB_CORRUPTED;
    }
    if (!h->open_id.ino) file_id(&fst, &h->open_id);
  }
  h->env = env;
  h->dbi = dbi;
  if (h->mode == MODE_BULK) {
    /* slmdb_prepare() with O_TRUNC in bulk mode: one transaction, emptied first. */
    if ((rc = mdb_drop(txn, dbi, 0)) != 0) {
      mdb_txn_abort(txn);
      mdb_env_close(env);
      h->env = NULL;
      goto fail;
    }
    h->bulk_txn = txn;
  } else {
    mdb_txn_abort(txn);
  }
  return 0;
fail:
  set_err(h, "open database %s: %s", h->path, mdb_strerror(rc));
  return rc;
}

static void lm_close_env(KvHandle *h) {
  if (h->env && !h->broken) {
    if (h->bulk_txn) mdb_txn_abort(h->bulk_txn);
    mdb_env_close(h->env);
  }
  h->bulk_txn = NULL;
  h->env = NULL;
  h->lmdb_fd = -1;
}

/* Begin a transaction the way slmdb_txn_begin() does (with MAP_RESIZED recovery). */
static int lm_txn_begin(KvHandle *h, unsigned int flags, MDB_txn **txn) {
  int rc;
  for (int tries = 1;; tries++) {
    if ((rc = mdb_txn_begin(h->env, NULL, flags, txn)) == 0) return 0;
    if (tries >= LMDB_API_RETRY_LIMIT || lm_recover(h, rc) != 0) return rc;
  }
}

/*
 * After a transaction began: is the file still ours (not replaced) and long
 * enough for what the meta page says? 0 = fine, 1 = replaced (reopen),
 * 2 = truncated, else an error code.
 */
static int lm_check_file(KvHandle *h) {
  FileId st;
  nlink_t nlink;
  MDB_envinfo info;
  if (file_id_quick(h->lmdb_fd, &st, &nlink) != 0) return errno;
  /*
   * A replaced file: writers follow the new one (their updates must land where
   * readers look). A read-only handle keeps serving the old version until the
   * table layer has opened the new one and swapped it in (or kept this one,
   * when the new version cannot be used).
   */
  if (nlink == 0 && h->mode != MODE_READ) return 1;
  if (mdb_env_info(h->env, &info) != 0) return EIO;
  if ((uint64_t)st.size < ((uint64_t)info.me_last_pgno + 1) * h->psize) return 2;
  return 0;
}

/* Take the per-operation lock on an open environment, reopening it first when needed. */
static int lm_acquire(KvHandle *h, int op, int nonblock) {
  if (h->broken) {
    return ST_ERROR;
  }
  if (h->env == NULL) {
    h->err[0] = 0;
    if (lm_open_env(h) != 0) return ST_ERROR;
  }
  if (op != LK_NONE) {
    int rc = lock_fcntl(h->lmdb_fd, op, nonblock);
    if (rc == ST_BUSY) return ST_BUSY;
    if (rc != 0) {
      set_err(h, "%s: lock dictionary: %s", h->label, strerror(errno));
      return ST_ERROR;
    }
  }
  return ST_OK;
}

static void lm_release(KvHandle *h, int op) {
  if (op != LK_NONE && h->env) (void)lock_fcntl(h->lmdb_fd, LK_NONE, 0);
}

/* After a fault inside LMDB: forget the environment (its memory may be inconsistent). */
static void lm_faulted(KvHandle *h, int op, int sig, const char *what) {
  lm_release(h, op);
  if (h->env) mdb_env_close(h->env); /* NOLOCK: no mutexes, unmapping is safe */
  h->env = NULL;
  h->bulk_txn = NULL;
  set_err(h, "%s %s: %s (file damaged or truncated)", what, h->label, sig == SIGBUS ? "bus error" : "segmentation fault");
}

/*
 * Run `body` (a read or write step) inside a fresh transaction, as one
 * slmdb call does: retry once after a recoverable error (MDB_MAP_FULL,
 * MDB_MAP_RESIZED), commit a write step that returned 0. Also reopens a
 * replaced file (taking the lock `op` again), refuses a truncated one and
 * catches faults. The body returns 0 (done), 1 (not found / key exists) or
 * -1 with the library's error code (errno values are positive, LMDB's own
 * negative) in h->step_rc; *out gets 0 or 1.
 */
typedef int (*lm_step)(KvHandle *h, MDB_txn *txn, void *arg);

static int lm_run(KvHandle *h, int op, int write, lm_step body, void *arg, const char *what, int *out) {
  for (volatile int reopen = 0; reopen < REOPEN_LIMIT; reopen++) {
    volatile int api_tries = 0;
  again:;
    MDB_txn *volatile txn = NULL;
    volatile int rc = 0;
    volatile int status = 0;
    volatile int sig = 0;
    sigjmp_buf jb;
    GUARD_TRY(jb)
    {
      MDB_txn *t = NULL;
      rc = lm_txn_begin(h, write ? 0 : MDB_RDONLY, &t);
      txn = t;
      if (rc == 0) {
        int chk = lm_check_file(h);
        if (chk == 1) {
          rc = -1; /* replaced: reopen below */
        } else if (chk == 2) {
          rc = -2; /* truncated */
        } else if (chk != 0) {
          rc = chk;
        } else {
          status = body(h, t, arg);
          if (status < 0) {
            rc = h->step_rc ? h->step_rc : EIO;
          } else if (write && status == 0) {
            txn = NULL; /* freed by the commit, whatever its outcome */
            rc = mdb_txn_commit(t);
          }
        }
      }
    }
    GUARD_CATCH(sig)
    if (sig) {
      lm_faulted(h, op, sig, what);
      return ST_ERROR;
    }
    if (txn) mdb_txn_abort(txn);
    if (rc == -1) {
      /* The file was replaced: open the new one and start over. */
      lm_release(h, op);
      lm_close_env(h);
      h->err[0] = 0;
      if (lm_open_env(h) != 0) return ST_ERROR;
      if (op != LK_NONE && lock_fcntl(h->lmdb_fd, op, 0) != 0) {
        set_err(h, "%s: lock dictionary: %s", h->label, strerror(errno));
        return ST_ERROR;
      }
      continue;
    }
    if (rc == -2) {
      set_err(h, "%s %s: file is truncated", what, h->label);
      return ST_ERROR;
    }
    if (rc != 0) {
      if (++api_tries < LMDB_API_RETRY_LIMIT && lm_recover(h, rc) == 0) goto again;
      set_err(h, "%s %s: %s", what, h->label, mdb_strerror(rc));
      return ST_ERROR;
    }
    *out = status;
    return ST_OK;
  }
  set_err(h, "%s %s: the file keeps being replaced", what, h->label);
  return ST_ERROR;
}

/* ------------------------------------------------------------------ */
/* Berkeley DB (dict_db.c behaviour)                                   */
/* ------------------------------------------------------------------ */

static void bdb_errcall(const DB_ENV *dbenv, const char *pfx, const char *msg) {
  KvHandle *h = dbenv ? (KvHandle *)dbenv->app_private : NULL;
  /* Keep the first message since the last operation began: it names the cause, later ones follow from it. */
  if (h && h->bdb_msg[0] == 0) snprintf(h->bdb_msg, sizeof(h->bdb_msg), "%s%s%s", pfx ? pfx : "", pfx ? ": " : "", msg ? msg : "");
}

/* db_strerror() covers errno values and Berkeley DB's own codes. */
static const char *db_err_text(int e) { return db_strerror(e); }

static void bdb_close_handles(KvHandle *h) {
  if (!h->broken) {
    if (h->cursor) {
      h->cursor->close(h->cursor);
      h->cursor_lost = 1;
    }
    if (h->db) {
      (void)h->db->sync(h->db, 0);
      (void)h->db->close(h->db, 0);
    }
    if (h->dbenv) h->dbenv->close(h->dbenv, 0);
  }
  h->cursor = NULL;
  h->db = NULL;
  h->dbenv = NULL;
  if (h->lock_fd >= 0) close(h->lock_fd);
  h->lock_fd = -1;
  if (h->ino_fd >= 0) close(h->ino_fd);
  h->ino_fd = -1;
}

/*
 * Whether the file was written to (or its attributes changed) since the
 * last call; drains the events. Our own writes produce events too, so they
 * are drained right after each of our changes, while we still hold the
 * exclusive lock: whatever is pending when we next take the lock came from
 * someone else. This is exact where time stamps are not (a change within
 * the same clock tick keeps them).
 */
static int ino_pending(KvHandle *h) {
  char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
  int any = 0;
  for (;;) {
    ssize_t n = read(h->ino_fd, buf, sizeof(buf));
    if (n > 0) {
      any = 1;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return any;
  }
}

/*
 * Whether this handle checks its file without time stamps (file_id_quick):
 * a writer whose inotify watch reports changes in place. A read-only handle
 * keeps comparing time stamps (its rule for a replaced file needs them);
 * the caches Postfix writes (verify, postscreen) are read through their
 * writable handle, so such a reader is rare beside a writer.
 */
static int bdb_quick(const KvHandle *h) { return h->ino_fd >= 0 && h->mode != MODE_READ; }

static char *dir_of(const char *path, char **base) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (slash == NULL) {
    dir = strdup(".");
    *base = strdup(path);
  } else {
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    dir = strndup(path, n);
    *base = strdup(slash + 1);
  }
  return dir;
}

/*
 * Open the Berkeley DB handle (dict_db_open). `hold` = the lock to keep on
 * return (LK_NONE, LK_SHARED, LK_EXCL); while opening an existing file it is
 * held at least shared, as Postfix does with DICT_FLAG_LOCK.
 */
static int bdb_open(KvHandle *h, int hold, int nonblock) {
  int major, minor, patch;
  int rc;
  DB_ENV *dbenv = NULL;
  DB *db = NULL;
  char *dir = NULL, *base = NULL;
  int fd;
  int open_lock = hold != LK_NONE ? hold : LK_SHARED;

  (void)db_version(&major, &minor, &patch);
  if (major != DB_VERSION_MAJOR || minor != DB_VERSION_MINOR) {
    set_err(h, "incorrect version of Berkeley DB: compiled against %d.%d.%d, run-time linked against %d.%d.%d",
            DB_VERSION_MAJOR, DB_VERSION_MINOR, DB_VERSION_PATCH, major, minor, patch);
    return ST_ERROR;
  }
  fd = open(h->path, h->mode == MODE_READ ? O_RDONLY | O_CLOEXEC : O_RDWR | O_CLOEXEC);
  if (fd < 0 && !(errno == ENOENT && h->mode != MODE_READ)) {
    set_err(h, "open database %s: %s", h->path, strerror(errno));
    return ST_ERROR;
  }
  if (fd >= 0 && h->mode != MODE_BULK) {
    rc = lock_flock(fd, open_lock, nonblock);
    if (rc != 0) {
      int e = errno;
      close(fd);
      if (rc == ST_BUSY) return ST_BUSY;
      set_err(h, "shared-lock database %s for open: %s", h->path, strerror(e));
      return ST_ERROR;
    }
  }
  if ((rc = db_env_create(&dbenv, 0)) != 0) {
    set_err(h, "create DB environment: %s", db_err_text(rc));
    goto fail;
  }
  dbenv->app_private = h;
  dbenv->set_errcall(dbenv, bdb_errcall);
  {
    u_int32_t gb = 0, bytes = 0;
    int ncache = 0;
    if ((rc = dbenv->get_cachesize(dbenv, &gb, &bytes, &ncache)) != 0) {
      set_err(h, "get DB cache size: %s", db_err_text(rc));
      goto fail;
    }
    if (gb == 0 && bytes < h->cache_size) {
      if ((rc = dbenv->set_cache_max(dbenv, gb, h->cache_size)) != 0) {
        set_err(h, "set DB max cache size %u: %s", h->cache_size, db_err_text(rc));
        goto fail;
      }
      if ((rc = dbenv->set_cachesize(dbenv, gb, h->cache_size, ncache)) != 0) {
        set_err(h, "set DB cache size %u: %s", h->cache_size, db_err_text(rc));
        goto fail;
      }
    }
  }
  dir = dir_of(h->path, &base);
  if (!dir || !base) {
    rc = ENOMEM;
    set_err(h, "open DB environment: %s", strerror(rc));
    goto fail;
  }
  if ((rc = dbenv->open(dbenv, dir, DB_INIT_MPOOL | DB_CREATE | DB_PRIVATE, 0)) != 0) {
    set_err(h, "open DB environment: %s", db_err_text(rc));
    goto fail;
  }
  if ((rc = db_create(&db, dbenv, 0)) != 0) {
    set_err(h, "create DB database: %s", db_err_text(rc));
    goto fail;
  }
  if (h->kind == KV_HASH && (rc = db->set_h_nelem(db, DB_HASH_NELEM)) != 0) {
    set_err(h, "set DB hash element count %d: %s", DB_HASH_NELEM, db_err_text(rc));
    goto fail;
  }
  {
    u_int32_t flags = DB_FCNTL_LOCKING;
    if (h->mode == MODE_READ) flags |= DB_RDONLY;
    if (h->mode != MODE_READ) flags |= DB_CREATE;
    if (h->mode == MODE_BULK) flags |= DB_TRUNCATE;
    if ((rc = db->open(db, NULL, base, NULL, h->kind == KV_HASH ? DB_HASH : DB_BTREE, flags, 0644)) != 0) {
      set_err(h, "open database %s: %s", h->path, db_err_text(rc));
      goto fail;
    }
  }
  if (fd < 0) {
    /* Created just now: our own descriptor for locking and status. */
    if ((fd = open(h->path, O_RDWR | O_CLOEXEC)) < 0) {
      rc = errno;
      set_err(h, "open database %s: %s", h->path, strerror(rc));
      goto fail;
    }
    if (hold != LK_NONE && h->mode != MODE_BULK && (rc = lock_flock(fd, hold, 0)) != 0) {
      rc = errno;
      set_err(h, "%s: lock dictionary: %s", h->label, strerror(rc));
      goto fail;
    }
  }
  free(dir);
  free(base);
  h->dbenv = dbenv;
  h->db = db;
  h->lock_fd = fd;
  if (h->mode != MODE_BULK) {
    /* Without inotify (instance limit reached, say), time stamps with the ambiguity rule decide. */
    h->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (h->ino_fd >= 0 && inotify_add_watch(h->ino_fd, h->path, IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF) < 0) {
      close(h->ino_fd);
      h->ino_fd = -1;
    }
  }
  {
    struct stat st;
    if (fstat(fd, &st) == 0) {
      file_id(&st, &h->seen);
      h->seen_ambiguous = id_ambiguous(&h->seen);
      if (!h->open_id.ino) h->open_id = h->seen;
    }
    nlink_t nlink;
    if (bdb_quick(h) && file_id_quick(fd, &h->seen, &nlink) != 0) file_id(&st, &h->seen);
  }
  if (hold == LK_NONE && h->mode != MODE_BULK) (void)lock_flock(fd, LK_NONE, 0);
  return ST_OK;
fail:
  if (db) db->close(db, 0);
  if (dbenv) dbenv->close(dbenv, 0);
  if (fd >= 0) close(fd);
  free(dir);
  free(base);
  return ST_ERROR;
}

/* Per-operation lock plus freshness check; reopens a handle whose file changed under it. */
static int bdb_acquire(KvHandle *h, int op, int nonblock) {
  if (h->broken) return ST_ERROR;
  h->bdb_msg[0] = 0;
  if (h->mode == MODE_BULK) return h->db ? ST_OK : ST_ERROR;
  for (int tries = 0; tries < REOPEN_LIMIT; tries++) {
    if (h->db == NULL) {
      h->err[0] = 0;
      return bdb_open(h, op, nonblock);
    }
    if (op != LK_NONE) {
      int rc = lock_flock(h->lock_fd, op, nonblock);
      if (rc == ST_BUSY) return ST_BUSY;
      if (rc != 0) {
        set_err(h, "%s: lock dictionary: %s", h->label, strerror(errno));
        return ST_ERROR;
      }
    }
    FileId now;
    nlink_t nlink = 0;
    int probed;
    if (bdb_quick(h)) {
      probed = file_id_quick(h->lock_fd, &now, &nlink);
    } else {
      struct stat st;
      probed = fstat(h->lock_fd, &st);
      if (probed == 0) {
        file_id(&st, &now);
        nlink = st.st_nlink;
      }
    }
    if (probed != 0) {
      set_err(h, "%s: fstat: %s", h->label, strerror(errno));
      if (op != LK_NONE) (void)lock_flock(h->lock_fd, LK_NONE, 0);
      return ST_ERROR;
    }
    /* Replaced (not changed in place): a read-only handle keeps the old version, as for LMDB above. */
    if (nlink == 0 && h->mode == MODE_READ && now.size == h->seen.size && ts_cmp(&now.mtim, &h->seen.mtim) == 0)
      return ST_OK; /* (the unlink itself changed ctime) */
    if (nlink != 0 && same_id(&now, &h->seen)) {
      if (h->ino_fd >= 0 ? !ino_pending(h) : !h->seen_ambiguous) return ST_OK;
    }
    /* Replaced, or changed by someone else (our page cache is stale): start afresh. */
    if (op != LK_NONE) (void)lock_flock(h->lock_fd, LK_NONE, 0);
    bdb_close_handles(h);
  }
  set_err(h, "%s: the file keeps changing", h->label);
  return ST_ERROR;
}

static void bdb_release(KvHandle *h, int op) {
  if (op != LK_NONE && h->lock_fd >= 0 && h->mode != MODE_BULK) (void)lock_flock(h->lock_fd, LK_NONE, 0);
}

/* Remember the file as we left it after our own change (called while we hold the exclusive lock). */
static void bdb_note_own_change(KvHandle *h) {
  struct stat st;
  if (h->ino_fd >= 0) (void)ino_pending(h);
  nlink_t nlink;
  if (bdb_quick(h)) {
    if (h->lock_fd >= 0) (void)file_id_quick(h->lock_fd, &h->seen, &nlink);
    return;
  }
  if (h->lock_fd >= 0 && fstat(h->lock_fd, &st) == 0) {
    file_id(&st, &h->seen);
    h->seen_ambiguous = id_ambiguous(&h->seen);
  }
}

static void bdb_faulted(KvHandle *h, int op, int sig, const char *what) {
  bdb_release(h, op);
  /* Berkeley DB's state may be inconsistent: leak it rather than call into it again. */
  h->broken = 1;
  set_err(h, "%s %s: %s (file damaged or truncated)", what, h->label, sig == SIGBUS ? "bus error" : "segmentation fault");
}

/* dict_db.c sanitize(): 0 ok, 1 not found / key exists, -1 error (errno-like code in *code). */
static int bdb_sanitize(int status, int *code) {
  switch (status) {
    case DB_NOTFOUND:
    case DB_KEYEXIST:
      return 1;
    case 0:
      return 0;
    case DB_KEYEMPTY:
      *code = EINVAL;
      return -1;
    default:
      *code = status;
      return -1;
  }
}

/* ------------------------------------------------------------------ */
/* N-API plumbing                                                      */
/* ------------------------------------------------------------------ */

typedef struct {
  char *data;
  size_t cap;
} Buf;

static _Thread_local Buf key_buf = {NULL, 0};
static _Thread_local Buf val_buf = {NULL, 0};

static int buf_reserve(Buf *b, size_t n) {
  if (b->cap >= n) return 1;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < n) cap *= 2;
  char *p = realloc(b->data, cap);
  if (!p) return 0;
  b->data = p;
  b->cap = cap;
  return 1;
}

/*
 * A byte string (or Buffer) into b, NUL-terminated, with room for one more
 * byte. *len = its length (bytes before the first NUL unless raw).
 */
static int get_arg_bytes(napi_env env, napi_value v, Buf *b, size_t *len, int raw) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_string) {
    if (!buf_reserve(b, 256)) goto oom;
    size_t copied = 0;
    if (napi_get_value_string_latin1(env, v, b->data, b->cap, &copied) != napi_ok) goto bad;
    if (copied + 1 >= b->cap) {
      size_t full = 0;
      if (napi_get_value_string_latin1(env, v, NULL, 0, &full) != napi_ok) goto bad;
      if (!buf_reserve(b, full + 2)) goto oom;
      if (napi_get_value_string_latin1(env, v, b->data, b->cap, &copied) != napi_ok) goto bad;
    }
    b->data[copied] = 0;
    *len = raw ? copied : strlen(b->data);
    return 1;
  }
  bool is_buf = false;
  if (t == napi_object && napi_is_buffer(env, v, &is_buf) == napi_ok && is_buf) {
    void *data;
    size_t n;
    if (napi_get_buffer_info(env, v, &data, &n) != napi_ok) goto bad;
    if (!buf_reserve(b, n + 2)) goto oom;
    memcpy(b->data, data, n);
    b->data[n] = 0;
    *len = raw ? n : strlen(b->data);
    return 1;
  }
bad:
  napi_throw_type_error(env, NULL, "expected a byte string or Buffer");
  return 0;
oom:
  napi_throw_error(env, NULL, "out of memory");
  return 0;
}

static napi_value mk_int(napi_env env, int64_t n) {
  napi_value v;
  if (napi_create_int64(env, n, &v) != napi_ok) return NULL;
  return v;
}

static napi_value mk_str(napi_env env, const char *s, size_t n) {
  napi_value v;
  if (napi_create_string_latin1(env, s, n, &v) != napi_ok) return NULL;
  return v;
}

static napi_value mk_cstr(napi_env env, const char *s) { return mk_str(env, s, strlen(s)); }

/* The value bytes as Postfix returns them: a C string copy (up to the first NUL) unless raw. */
static napi_value mk_value(napi_env env, KvHandle *h, const void *data, size_t size) {
  if (data == NULL || size == 0) return mk_str(env, "", 0);
  if (!h->raw) size = strnlen(data, size);
  return mk_str(env, data, size);
}

static void handle_free(KvHandle *h) {
  if (!h) return;
  if (h->kind == KV_LMDB)
    lm_close_env(h);
  else
    bdb_close_handles(h);
  lm_saved_free(h);
  free(h->seq_key);
  free(h->path);
  free(h->label);
  h->magic = 0;
  free(h);
}

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  handle_free((KvHandle *)data);
}

static KvHandle *get_handle(napi_env env, napi_value v, int need_open) {
  napi_valuetype t;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok ||
      data == NULL || ((KvHandle *)data)->magic != KV_MAGIC) {
    napi_throw_type_error(env, NULL, "expected a key-value handle");
    return NULL;
  }
  KvHandle *h = data;
  if (need_open && h->closed) {
    set_err(h, "%s: table is closed", h->label);
    return h;
  }
  return h;
}


static int arg_int(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a number");
    return 0;
  }
  return 1;
}

/* ------------------------------------------------------------------ */
/* kvOpen(kind, path, mode, nulFlags, raw, mapSize, cacheSize, label, lockFlags) */
/* ------------------------------------------------------------------ */

static napi_value KvOpen(napi_env env, napi_callback_info info) {
  NAPI_ARGS(9);
  int64_t kind, mode, nul, raw, map_size, cache_size, lock_flags;
  if (!arg_int(env, argv[0], &kind) || !arg_int(env, argv[2], &mode) || !arg_int(env, argv[3], &nul) ||
      !arg_int(env, argv[4], &raw) || !arg_int(env, argv[5], &map_size) || !arg_int(env, argv[6], &cache_size) ||
      !arg_int(env, argv[8], &lock_flags))
    return NULL;
  if (kind < KV_LMDB || kind > KV_BTREE || mode < MODE_READ || mode > MODE_BULK) {
    napi_throw_range_error(env, NULL, "bad kind or mode");
    return NULL;
  }
  size_t plen, llen;
  Buf pb = {NULL, 0}, lb = {NULL, 0};
  if (!get_arg_bytes(env, argv[1], &pb, &plen, 1)) return NULL;
  if (!get_arg_bytes(env, argv[7], &lb, &llen, 1)) {
    free(pb.data);
    return NULL;
  }
  pthread_once(&guard_once, guard_install);

  KvHandle *h = calloc(1, sizeof(*h));
  if (!h) {
    free(pb.data);
    free(lb.data);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  h->magic = KV_MAGIC;
  h->kind = (int)kind;
  h->mode = (int)mode;
  h->raw = raw != 0;
  h->path = strndup(pb.data, plen);
  h->label = strndup(lb.data, llen);
  free(pb.data);
  free(lb.data);
  h->lock_fd = -1;
  h->ino_fd = -1;
  h->lmdb_fd = -1;
  h->map_size = map_size > 0 ? (size_t)map_size : 16777216;
  h->cache_size = cache_size > 0 ? (u_int32_t)cache_size : 131072;
  /* dict_*_open(): neither NUL flag requested means try both. */
  h->nul_flags = (int)(nul & (DF_TRY0NULL | DF_TRY1NULL));
  if (h->nul_flags == 0) h->nul_flags = DF_TRY0NULL | DF_TRY1NULL;

  int rc;
  if (h->kind == KV_LMDB) {
    rc = lm_open_env(h) == 0 ? ST_OK : ST_ERROR;
    /* dict_lmdb_open() in bulk mode: exclusive lock momentarily, then shared until done. */
    if (rc == ST_OK && h->mode == MODE_BULK && (lock_flags & DF_LOCK)) {
      if (lock_fcntl(h->lmdb_fd, LK_EXCL, 0) != 0 || lock_fcntl(h->lmdb_fd, LK_SHARED, 0) != 0) {
        set_err(h, "%s: lock dictionary: %s", h->path, strerror(errno));
        lm_close_env(h);
        rc = ST_ERROR;
      }
    }
  } else {
    rc = bdb_open(h, LK_NONE, (lock_flags & KV_NONBLOCK) != 0);
  }
  if (rc == ST_BUSY) {
    napi_value result;
    handle_free(h);
    if (napi_create_object(env, &result) != napi_ok) return NULL;
    napi_set_named_property(env, result, "busy", mk_int(env, 1));
    return result;
  }
  if (rc != ST_OK) {
    napi_value result;
    if (napi_create_object(env, &result) != napi_ok) {
      handle_free(h);
      return NULL;
    }
    napi_set_named_property(env, result, "error", mk_cstr(env, h->err[0] ? h->err : "open failed"));
    if (h->bdb_msg[0]) napi_set_named_property(env, result, "detail", mk_cstr(env, h->bdb_msg));
    handle_free(h);
    return result;
  }
  napi_value handle;
  if (napi_create_external(env, h, finalize_handle, NULL, &handle) != napi_ok) {
    handle_free(h);
    napi_throw_error(env, NULL, "cannot create handle");
    return NULL;
  }
  return handle;
}

/* ------------------------------------------------------------------ */
/* get                                                                 */
/* ------------------------------------------------------------------ */

/* Copy library-owned bytes to our buffer (inside the guard; JS strings are made afterwards). */
static int copy_out(Buf *b, const void *data, size_t size, int raw, size_t *len) {
  size_t n = data == NULL ? 0 : raw ? size : strnlen(data, size);
  if (!buf_reserve(b, n + 1)) return 0;
  if (n) memcpy(b->data, data, n);
  b->data[n] = 0;
  *len = n;
  return 1;
}

typedef struct {
  MDB_val key;
  size_t vlen;
} LmGetArg;

static int lm_get_step(KvHandle *h, MDB_txn *txn, void *arg) {
  LmGetArg *a = arg;
  MDB_val v;
  int rc = mdb_get(txn, h->dbi, &a->key, &v);
  if (rc == 0 && !copy_out(&val_buf, v.mv_data, v.mv_size, h->raw, &a->vlen)) rc = ENOMEM;
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return 1;
  h->step_rc = rc;
  return -1;
}

/*
 * Lookup with Postfix's NUL rules: key+NUL first (TRY1NULL), then the bare
 * key (TRY0NULL); the first hit clears the other flag. The value is created
 * as a JS string while the transaction is still open (LMDB) or before the
 * next library call (Berkeley DB).
 */
static napi_value KvGet(napi_env env, napi_callback_info info) {
  NAPI_ARGS(3);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  int64_t flags;
  size_t klen;
  if (!arg_int(env, argv[2], &flags)) return NULL;
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY); /* a write batch owns the handle: try again later */
  if (!get_arg_bytes(env, argv[1], &key_buf, &klen, h->raw)) return NULL;
  int nonblock = (flags & KV_NONBLOCK) != 0;
  int op = (flags & DF_LOCK) ? LK_SHARED : LK_NONE;
  char *key = key_buf.data;
  napi_value result = NULL;

  if (h->kind == KV_LMDB) {
    if (h->bulk_txn) {
      /* Inside a bulk build: read the pending transaction. */
      MDB_val k = {klen, key}, v;
      int rc = mdb_get(h->bulk_txn, h->dbi, &k, &v);
      if (rc == 0) return mk_value(env, h, v.mv_data, v.mv_size);
      return mk_int(env, rc == MDB_NOTFOUND ? ST_NOTFOUND : ST_ERROR);
    }
    int st = lm_acquire(h, op, nonblock);
    if (st != ST_OK) return mk_int(env, st);
    for (int pass = 0; pass < 2 && result == NULL; pass++) {
      int with_nul = pass == 0 && !h->raw;
      if (h->raw ? pass == 1 : !(h->nul_flags & (with_nul ? DF_TRY1NULL : DF_TRY0NULL))) continue;
      LmGetArg a = {{klen + (with_nul ? 1 : 0), key}, 0};
      int status = 0;
      if (lm_run(h, op, 0, lm_get_step, &a, "error reading", &status) != ST_OK) {
        lm_release(h, op);
        return mk_int(env, ST_ERROR);
      }
      if (status == 0) {
        if (!h->raw) h->nul_flags &= with_nul ? ~DF_TRY0NULL : ~DF_TRY1NULL;
        result = mk_str(env, val_buf.data, a.vlen);
        if (!result) {
          lm_release(h, op);
          return NULL;
        }
      }
    }
    lm_release(h, op);
    return result ? result : mk_int(env, ST_NOTFOUND);
  }

  /* Berkeley DB */
  int st = bdb_acquire(h, op, nonblock);
  if (st != ST_OK) return mk_int(env, st);
  for (int pass = 0; pass < 2 && result == NULL; pass++) {
    int with_nul = pass == 0;
    if (!(h->nul_flags & (with_nul ? DF_TRY1NULL : DF_TRY0NULL))) continue;
    DBT k, v;
    memset(&k, 0, sizeof(k));
    memset(&v, 0, sizeof(v));
    k.data = key;
    k.size = (u_int32_t)(klen + (with_nul ? 1 : 0));
    volatile int rc = 0;
    volatile int sig = 0;
    sigjmp_buf jb;
    GUARD_TRY(jb)
    rc = h->db->get(h->db, NULL, &k, &v, 0);
    GUARD_CATCH(sig)
    if (sig) {
      bdb_faulted(h, op, sig, "error reading");
      return mk_int(env, ST_ERROR);
    }
    int code = 0;
    int s = bdb_sanitize(rc, &code);
    if (s < 0) {
      set_err(h, "error reading %s: %s", h->label, db_err_text(code));
      bdb_release(h, op);
      return mk_int(env, ST_ERROR);
    }
    if (s == 0) {
      h->nul_flags &= with_nul ? ~DF_TRY0NULL : ~DF_TRY1NULL;
      result = mk_value(env, h, v.data, v.size);
    }
  }
  bdb_release(h, op);
  return result ? result : mk_int(env, ST_NOTFOUND);
}

/* ------------------------------------------------------------------ */
/* put                                                                 */
/* ------------------------------------------------------------------ */

typedef struct {
  MDB_val key, val;
  unsigned int flags;
} LmPutArg;

static int lm_put_step(KvHandle *h, MDB_txn *txn, void *arg) {
  LmPutArg *a = arg;
  int rc = mdb_put(txn, h->dbi, &a->key, &a->val, a->flags);
  if (rc == 0) return 0;
  if (rc == MDB_KEYEXIST) return 1;
  h->step_rc = rc;
  return -1;
}

/* Decide the NUL mode on the first update (dict_*_update): with NUL unless told otherwise. */
static int write_nul(KvHandle *h) {
  if ((h->nul_flags & DF_TRY1NULL) && (h->nul_flags & DF_TRY0NULL)) h->nul_flags &= ~DF_TRY0NULL;
  return (h->nul_flags & DF_TRY1NULL) != 0;
}

/* kvPut(h, key, value, flags) -> 0 stored, 1 key exists, 2 busy, 3 restart (bulk), -1 error */
static napi_value KvPut(napi_env env, napi_callback_info info) {
  NAPI_ARGS(4);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  int64_t flags;
  size_t klen, vlen;
  if (!arg_int(env, argv[3], &flags)) return NULL;
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY); /* a write batch owns the handle: try again later */
  if (!get_arg_bytes(env, argv[1], &key_buf, &klen, h->raw) || !get_arg_bytes(env, argv[2], &val_buf, &vlen, h->raw))
    return NULL;
  int nonblock = (flags & KV_NONBLOCK) != 0;
  int op = (flags & DF_LOCK) ? LK_EXCL : LK_NONE;
  int nul = h->raw ? 0 : write_nul(h);
  size_t ksize = klen + nul, vsize = vlen + nul;

  if (h->kind == KV_LMDB) {
    if (h->mode == MODE_READ) {
      set_err(h, "error updating %s: %s", h->label, strerror(EACCES));
      return mk_int(env, ST_ERROR);
    }
    if (h->mode == MODE_BULK) {
      if (!h->bulk_txn) {
        set_err(h, "error updating %s: no bulk transaction", h->label);
        return mk_int(env, ST_ERROR);
      }
      MDB_val k = {ksize, key_buf.data}, v = {vsize, val_buf.data};
      volatile int rc = 0;
      volatile int sig = 0;
      sigjmp_buf jb;
      GUARD_TRY(jb)
      rc = mdb_put(h->bulk_txn, h->dbi, &k, &v, (flags & DF_DUP_REPLACE) ? 0 : MDB_NOOVERWRITE);
      GUARD_CATCH(sig)
      if (sig) {
        lm_faulted(h, LK_NONE, sig, "error updating");
        return mk_int(env, ST_ERROR);
      }
      if (rc == 0) return mk_int(env, ST_OK);
      if (rc == MDB_KEYEXIST) return mk_int(env, ST_NOTFOUND);
      /* slmdb_recover() in bulk mode: grow the map, start a new emptied transaction, load again. */
      mdb_txn_abort(h->bulk_txn);
      h->bulk_txn = NULL;
      if (++h->bulk_retries <= LMDB_BULK_RETRY_LIMIT && lm_recover(h, rc) == 0) {
        MDB_txn *t;
        int rc2 = mdb_txn_begin(h->env, NULL, 0, &t);
        if (rc2 == 0 && (rc2 = mdb_drop(t, h->dbi, 0)) == 0) {
          h->bulk_txn = t;
          return mk_int(env, ST_RESTART);
        }
        if (rc2 == 0) mdb_txn_abort(t);
        rc = rc2;
      }
      set_err(h, "error updating %s: %s", h->label, mdb_strerror(rc));
      return mk_int(env, ST_ERROR);
    }
    int st = lm_acquire(h, op, nonblock);
    if (st != ST_OK) return mk_int(env, st);
    LmPutArg a = {{ksize, key_buf.data}, {vsize, val_buf.data}, (flags & DF_DUP_REPLACE) ? 0 : MDB_NOOVERWRITE};
    int status = 0;
    st = lm_run(h, op, 1, lm_put_step, &a, "error updating", &status);
    lm_release(h, op);
    if (st != ST_OK) return mk_int(env, st);
    return mk_int(env, status == 1 ? ST_NOTFOUND : ST_OK);
  }

  /* Berkeley DB */
  int st = bdb_acquire(h, op, nonblock);
  if (st != ST_OK) return mk_int(env, st);
  DBT k, v;
  memset(&k, 0, sizeof(k));
  memset(&v, 0, sizeof(v));
  k.data = key_buf.data;
  k.size = (u_int32_t)ksize;
  v.data = val_buf.data;
  v.size = (u_int32_t)vsize;
  volatile int rc = 0, src = 0;
  volatile int sig = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  rc = h->db->put(h->db, NULL, &k, &v, (flags & DF_DUP_REPLACE) ? 0 : DB_NOOVERWRITE);
  if ((rc == 0 || rc == DB_KEYEXIST) && (flags & DF_SYNC_UPDATE)) src = h->db->sync(h->db, 0);
  GUARD_CATCH(sig)
  if (sig) {
    bdb_faulted(h, op, sig, "error writing");
    return mk_int(env, ST_ERROR);
  }
  int code = 0;
  int s = bdb_sanitize(rc, &code);
  if (s < 0) {
    set_err(h, "error writing %s: %s", h->label, db_err_text(code));
    bdb_release(h, op);
    return mk_int(env, ST_ERROR);
  }
  if (src != 0) {
    set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(src));
    bdb_release(h, op);
    return mk_int(env, ST_ERROR);
  }
  if (h->mode != MODE_BULK) bdb_note_own_change(h);
  bdb_release(h, op);
  return mk_int(env, s == 0 ? ST_OK : ST_NOTFOUND);
}

/* ------------------------------------------------------------------ */
/* del                                                                 */
/* ------------------------------------------------------------------ */

static int lm_del_step(KvHandle *h, MDB_txn *txn, void *arg) {
  MDB_val *k = arg;
  int rc = mdb_del(txn, h->dbi, k, NULL);
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return 1;
  h->step_rc = rc;
  return -1;
}

/* kvDel(h, key, flags) -> 0 deleted, 1 not found, 2 busy, -1 error */
static napi_value KvDel(napi_env env, napi_callback_info info) {
  NAPI_ARGS(3);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  int64_t flags;
  size_t klen;
  if (!arg_int(env, argv[2], &flags)) return NULL;
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY); /* a write batch owns the handle: try again later */
  if (!get_arg_bytes(env, argv[1], &key_buf, &klen, h->raw)) return NULL;
  int nonblock = (flags & KV_NONBLOCK) != 0;
  int op = (flags & DF_LOCK) ? LK_EXCL : LK_NONE;
  int status = 1;

  if (h->kind == KV_LMDB) {
    if (h->mode != MODE_WRITE) {
      set_err(h, "error deleting from %s: %s", h->label, strerror(EACCES));
      return mk_int(env, ST_ERROR);
    }
    int st = lm_acquire(h, op, nonblock);
    if (st != ST_OK) return mk_int(env, st);
    for (int pass = 0; pass < 2 && status > 0; pass++) {
      int with_nul = pass == 0 && !h->raw;
      if (!h->raw && !(h->nul_flags & (with_nul ? DF_TRY1NULL : DF_TRY0NULL))) continue;
      if (h->raw && pass == 1) break;
      MDB_val k = {klen + (with_nul ? 1 : 0), key_buf.data};
      int s = 0;
      st = lm_run(h, op, 1, lm_del_step, &k, "error deleting from", &s);
      if (st != ST_OK) {
        lm_release(h, op);
        return mk_int(env, st);
      }
      status = s;
      if (status == 0) h->nul_flags &= with_nul ? ~DF_TRY0NULL : ~DF_TRY1NULL;
    }
    lm_release(h, op);
    return mk_int(env, status == 0 ? ST_OK : ST_NOTFOUND);
  }

  if (h->mode != MODE_WRITE) {
    set_err(h, "error deleting from %s: %s", h->label, strerror(EACCES));
    return mk_int(env, ST_ERROR);
  }
  int st = bdb_acquire(h, op, nonblock);
  if (st != ST_OK) return mk_int(env, st);
  for (int pass = 0; pass < 2 && status > 0; pass++) {
    int with_nul = pass == 0 && !h->raw;
    if (!h->raw && !(h->nul_flags & (with_nul ? DF_TRY1NULL : DF_TRY0NULL))) continue;
    if (h->raw && pass == 1) break;
    DBT k;
    memset(&k, 0, sizeof(k));
    k.data = key_buf.data;
    k.size = (u_int32_t)(klen + (with_nul ? 1 : 0));
    volatile int rc = 0;
    volatile int sig = 0;
    sigjmp_buf jb;
    GUARD_TRY(jb)
    rc = h->db->del(h->db, NULL, &k, 0);
    GUARD_CATCH(sig)
    if (sig) {
      bdb_faulted(h, op, sig, "error deleting from");
      return mk_int(env, ST_ERROR);
    }
    int code = 0;
    int s = bdb_sanitize(rc, &code);
    if (s < 0) {
      set_err(h, "error deleting from %s: %s", h->label, db_err_text(code));
      bdb_release(h, op);
      return mk_int(env, ST_ERROR);
    }
    status = s;
    if (status == 0) h->nul_flags &= with_nul ? ~DF_TRY0NULL : ~DF_TRY1NULL;
  }
  if (flags & DF_SYNC_UPDATE) {
    volatile int src = 0;
    volatile int sig = 0;
    sigjmp_buf jb;
    GUARD_TRY(jb)
    src = h->db->sync(h->db, 0);
    GUARD_CATCH(sig)
    if (sig) {
      bdb_faulted(h, op, sig, "flush");
      return mk_int(env, ST_ERROR);
    }
    if (src != 0) {
      set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(src));
      bdb_release(h, op);
      return mk_int(env, ST_ERROR);
    }
  }
  bdb_note_own_change(h);
  bdb_release(h, op);
  return mk_int(env, status == 0 ? ST_OK : ST_NOTFOUND);
}

/* ------------------------------------------------------------------ */
/* sequence                                                            */
/* ------------------------------------------------------------------ */

static napi_value pair(napi_env env, napi_value a, napi_value b) {
  napi_value arr;
  if (!a || !b || napi_create_array_with_length(env, 2, &arr) != napi_ok) return NULL;
  if (napi_set_element(env, arr, 0, a) != napi_ok || napi_set_element(env, arr, 1, b) != napi_ok) return NULL;
  return arr;
}

/* The key as Postfix's sequence returns it: a C string copy unless raw. */
static napi_value mk_key(napi_env env, KvHandle *h, const void *data, size_t size) { return mk_value(env, h, data, size); }

typedef struct {
  MDB_cursor_op op;
  size_t klen, vlen;
} LmSeqArg;

/* slmdb_cursor_get() under MDB_NOLOCK: a cursor per call, positioned again from the saved key. */
static int lm_seq_step(KvHandle *h, MDB_txn *txn, void *arg) {
  LmSeqArg *a = arg;
  MDB_cursor *c = NULL;
  MDB_val k, v;
  int rc = mdb_cursor_open(txn, h->dbi, &c);
  if (rc != 0) {
    h->step_rc = rc;
    return -1;
  }
  if (h->have_saved && a->op != MDB_FIRST) rc = mdb_cursor_get(c, &h->saved_key, NULL, MDB_SET);
  if (rc == 0) rc = mdb_cursor_get(c, &k, &v, a->op);
  if (rc == 0 && (lm_saved_assign(h, &k) != 0 || !copy_out(&key_buf, k.mv_data, k.mv_size, h->raw, &a->klen) ||
                  !copy_out(&val_buf, v.mv_data, v.mv_size, h->raw, &a->vlen)))
    rc = ENOMEM;
  mdb_cursor_close(c);
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return 1;
  h->step_rc = rc;
  return -1;
}

/*
 * kvSeq(h, fn, flags) -> [key, value] | 1 (end) | 2 busy | -1 error. fn 0 =
 * first, 1 = next. LMDB: slmdb_cursor_get() under MDB_NOLOCK, i.e. a fresh
 * transaction per call that finds its place again from the last key.
 */
static napi_value KvSeq(napi_env env, napi_callback_info info) {
  NAPI_ARGS(3);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  int64_t fn, flags;
  if (!arg_int(env, argv[1], &fn) || !arg_int(env, argv[2], &flags)) return NULL;
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY); /* a write batch owns the handle: try again later */
  int nonblock = (flags & KV_NONBLOCK) != 0;
  int op = (flags & DF_LOCK) ? LK_SHARED : LK_NONE;

  if (h->kind == KV_LMDB) {
    if (h->mode == MODE_BULK) {
      set_err(h, "%s: internal error: slmdb_cursor_get: bulk transaction is not supported", h->label);
      return mk_int(env, ST_ERROR);
    }
    int st = lm_acquire(h, op, nonblock);
    if (st != ST_OK) return mk_int(env, st);
    LmSeqArg a = {fn == 0 ? MDB_FIRST : MDB_NEXT, 0, 0};
    int status = 0;
    st = lm_run(h, op, 0, lm_seq_step, &a, "error seeking", &status);
    lm_release(h, op);
    if (st != ST_OK) return mk_int(env, st);
    if (status == 1) {
      lm_saved_free(h);
      return mk_int(env, ST_NOTFOUND);
    }
    return pair(env, mk_str(env, key_buf.data, a.klen), mk_str(env, val_buf.data, a.vlen));
  }

  /* Berkeley DB: one cursor kept across calls (dict_db_sequence). */
  int st = bdb_acquire(h, op, nonblock);
  if (st != ST_OK) return mk_int(env, st);
  int reposition = 0;
  if (fn == 0) {
    h->cursor_lost = 0;
    h->seq_len = 0;
    if (h->cursor == NULL && h->db->cursor(h->db, NULL, &h->cursor, 0) != 0) h->cursor = NULL;
  } else if (h->cursor == NULL) {
    if (!h->cursor_lost || h->seq_key == NULL) {
      set_err(h, "dict_db_sequence: no cursor");
      bdb_release(h, op);
      return mk_int(env, ST_ERROR);
    }
    if (h->db->cursor(h->db, NULL, &h->cursor, 0) != 0) h->cursor = NULL;
    reposition = 1;
  }
  if (h->cursor == NULL) {
    set_err(h, "%s: cannot create a cursor", h->label);
    bdb_release(h, op);
    return mk_int(env, ST_ERROR);
  }
  DBT k, v;
  memset(&k, 0, sizeof(k));
  memset(&v, 0, sizeof(v));
  volatile int rc = 0;
  volatile int sig = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  if (reposition) {
    /* The handle was reopened: find the last key again and step past it. */
    h->cursor_lost = 0;
    k.data = h->seq_key;
    k.size = (u_int32_t)h->seq_len;
    rc = h->cursor->get(h->cursor, &k, &v, DB_SET);
    if (rc == 0) {
      memset(&k, 0, sizeof(k));
      rc = h->cursor->get(h->cursor, &k, &v, DB_NEXT);
    } else if (rc == DB_NOTFOUND && h->kind == KV_BTREE) {
      k.data = h->seq_key;
      k.size = (u_int32_t)h->seq_len;
      rc = h->cursor->get(h->cursor, &k, &v, DB_SET_RANGE);
    }
  } else {
    rc = h->cursor->get(h->cursor, &k, &v, fn == 0 ? DB_FIRST : DB_NEXT);
  }
  GUARD_CATCH(sig)
  if (sig) {
    bdb_faulted(h, op, sig, "error seeking");
    return mk_int(env, ST_ERROR);
  }
  if (rc != 0 && rc != DB_NOTFOUND) {
    set_err(h, "error [%d] seeking %s: %s", (int)rc, h->label, db_err_text(rc));
    bdb_release(h, op);
    return mk_int(env, ST_ERROR);
  }
  napi_value result = NULL;
  if (rc == 0) {
    if (h->seq_cap < k.size + 1) {
      char *p = realloc(h->seq_key, k.size + 1);
      if (p) {
        h->seq_key = p;
        h->seq_cap = k.size + 1;
      }
    }
    if (h->seq_cap >= k.size + 1) {
      memcpy(h->seq_key, k.data, k.size);
      h->seq_len = k.size;
    }
    result = pair(env, mk_key(env, h, k.data, k.size), mk_value(env, h, v.data, v.size));
  }
  bdb_release(h, op);
  return result ? result : mk_int(env, ST_NOTFOUND);
}

/* ------------------------------------------------------------------ */
/* commit (bulk), sync, close, flags, error, changed, stat             */
/* ------------------------------------------------------------------ */

/* kvCommit(h) -> 0 | 3 (restart: load everything again) | -1. Bulk LMDB only; others: sync. */
static napi_value KvCommit(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY); /* a write batch owns the handle: try again later */
  if (h->kind == KV_LMDB) {
    if (!h->bulk_txn) return mk_int(env, ST_OK);
    volatile int rc = 0;
    volatile int sig = 0;
    sigjmp_buf jb;
    GUARD_TRY(jb)
    rc = mdb_txn_commit(h->bulk_txn);
    GUARD_CATCH(sig)
    h->bulk_txn = NULL;
    if (sig) {
      lm_faulted(h, LK_NONE, sig, "error committing");
      return mk_int(env, ST_ERROR);
    }
    if (rc == 0) return mk_int(env, ST_OK);
    if (++h->bulk_retries <= LMDB_BULK_RETRY_LIMIT && lm_recover(h, rc) == 0) {
      MDB_txn *t;
      int rc2 = mdb_txn_begin(h->env, NULL, 0, &t);
      if (rc2 == 0 && (rc2 = mdb_drop(t, h->dbi, 0)) == 0) {
        h->bulk_txn = t;
        return mk_int(env, ST_RESTART);
      }
      if (rc2 == 0) mdb_txn_abort(t);
      rc = rc2;
    }
    set_err(h, "error committing %s: %s", h->label, mdb_strerror(rc));
    return mk_int(env, ST_ERROR);
  }
  if (!h->db) return mk_int(env, ST_OK);
  int rc = h->db->sync(h->db, 0);
  if (rc != 0) {
    set_err(h, "flush database %s: %s", h->label, db_err_text(rc));
    return mk_int(env, ST_ERROR);
  }
  return mk_int(env, ST_OK);
}

/* kvSync(h) -> 0 | -1: flush to disk (LMDB commits are durable already). */
static napi_value KvSync(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  if (h->closed || h->broken) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY);
  int rc = 0;
  if (h->kind == KV_LMDB) {
    if (h->env && h->mode != MODE_READ) rc = mdb_env_sync(h->env, 1);
    if (rc != 0) set_err(h, "%s: sync: %s", h->label, mdb_strerror(rc));
  } else if (h->db && h->mode != MODE_READ) {
    rc = h->db->sync(h->db, 0);
    if (rc != 0) set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(rc));
    else bdb_note_own_change(h);
  }
  return mk_int(env, rc == 0 ? ST_OK : ST_ERROR);
}

static int kv_close_now(KvHandle *h);

/* kvClose(h) -> 0 | -1. Bulk LMDB: an uncommitted transaction is abandoned (call kvCommit first). */
static napi_value KvClose(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  KvHandle *h = get_handle(env, argv[0], 0);
  if (!h) return NULL;
  if (h->closed) return mk_int(env, ST_OK);
  if (h->busy) {
    /* The batch's completion closes it (its outcome decides nothing here: the batch reports its own). */
    h->close_pending = 1;
    return mk_int(env, ST_OK);
  }
  return mk_int(env, kv_close_now(h));
}

/* Close an idle handle: flushes Berkeley DB. */
static int kv_close_now(KvHandle *h) {
  int rc = ST_OK;
  if (h->kind == KV_LMDB) {
    lm_close_env(h);
  } else {
    if (h->db && !h->broken) {
      if (h->cursor) {
        h->cursor->close(h->cursor);
        h->cursor = NULL;
      }
      int s = h->db->sync(h->db, 0);
      if (s != 0) {
        set_err(h, "flush database %s: %s", h->label, db_err_text(s));
        rc = ST_ERROR;
      }
    }
    bdb_close_handles(h);
  }
  h->closed = 1;
  return rc;
}

static napi_value KvFlags(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  KvHandle *h = get_handle(env, argv[0], 0);
  if (!h) return NULL;
  return mk_int(env, h->nul_flags);
}

/* kvError(h) -> { message, detail? } for the last failure. */
static napi_value KvError(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  KvHandle *h = get_handle(env, argv[0], 0);
  if (!h) return NULL;
  napi_value o;
  if (napi_create_object(env, &o) != napi_ok) return NULL;
  napi_set_named_property(env, o, "message", mk_cstr(env, h->err[0] ? h->err : (h->closed ? "table is closed" : "unknown error")));
  if (h->bdb_msg[0]) napi_set_named_property(env, o, "detail", mk_cstr(env, h->bdb_msg));
  return o;
}

/*
 * kvChanged(h, checkContent) -> bool: the file at the path is not the one
 * opened (removed, replaced, link count 0) or, with checkContent, its size
 * or modification time differ from open time (dict_changed_name(), which
 * skips the time check for MULTI_WRITER tables).
 */
static napi_value KvChanged(napi_env env, napi_callback_info info) {
  NAPI_ARGS(2);
  KvHandle *h = get_handle(env, argv[0], 0);
  if (!h) return NULL;
  bool content = false;
  if (napi_get_value_bool(env, argv[1], &content) != napi_ok) return NULL;
  napi_value r;
  int changed = 0;
  struct stat st;
  if (h->closed) {
    changed = 0;
  } else if (stat(h->path, &st) != 0) {
    changed = 1;
  } else if (st.st_nlink == 0 || st.st_dev != h->open_id.dev || st.st_ino != h->open_id.ino) {
    changed = 1;
  } else if (content && (st.st_size != h->open_id.size || ts_cmp(&st.st_mtim, &h->open_id.mtim) != 0)) {
    changed = 1;
  }
  if (napi_get_boolean(env, changed, &r) != napi_ok) return NULL;
  return r;
}

/* kvLockFile(path, style, exclusive, nonblock) -> fd | -errno | -1000 busy: a whole-file lock on its own descriptor. */
static napi_value KvLockFile(napi_env env, napi_callback_info info) {
  NAPI_ARGS(4);
  Buf pb = {NULL, 0};
  size_t plen;
  int64_t style, excl, nb;
  if (!arg_int(env, argv[1], &style) || !arg_int(env, argv[2], &excl) || !arg_int(env, argv[3], &nb)) return NULL;
  if (!get_arg_bytes(env, argv[0], &pb, &plen, 1)) return NULL;
  int fd = open(pb.data, O_RDWR | O_CLOEXEC);
  free(pb.data);
  if (fd < 0) return mk_int(env, -errno);
  int rc = style == KV_LMDB ? lock_fcntl(fd, excl ? LK_EXCL : LK_SHARED, nb != 0)
                            : lock_flock(fd, excl ? LK_EXCL : LK_SHARED, nb != 0);
  if (rc != 0) {
    int e = errno;
    close(fd);
    return mk_int(env, rc == ST_BUSY ? -1000 : -e);
  }
  return mk_int(env, fd);
}

static napi_value KvUnlockFile(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  int64_t fd;
  if (!arg_int(env, argv[0], &fd)) return NULL;
  return mk_int(env, fd >= 0 && close((int)fd) == 0 ? 0 : -1);
}

/* kvStrerror(errno) -> the C library's text (what Postfix's %m prints). */
static napi_value KvStrerror(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  int64_t e;
  if (!arg_int(env, argv[0], &e)) return NULL;
  return mk_cstr(env, strerror((int)e));
}

/* kvVersions() -> { lmdb, db } library version strings (run time). */
static napi_value KvVersions(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o;
  if (napi_create_object(env, &o) != napi_ok) return NULL;
  napi_set_named_property(env, o, "lmdb", mk_cstr(env, mdb_version(NULL, NULL, NULL)));
  napi_set_named_property(env, o, "db", mk_cstr(env, db_version(NULL, NULL, NULL)));
  return o;
}

/* ------------------------------------------------------------------ */
/* Write batches on a worker thread (group commit)                     */
/* ------------------------------------------------------------------ */

/*
 * kvBatch(h, ops, callback) applies several updates and deletes in one go
 * on a libuv pool thread: LMDB in one write transaction (one commit, one
 * fsync), Berkeley DB as separate puts/deletes followed by one db->sync()
 * when any of them asked for SYNC_UPDATE. The callback runs on the main
 * thread after the data is on disk, with one status per operation (OK,
 * NOTFOUND = key exists / not found, ERROR).
 *
 * The exclusive lock (fcntl for LMDB, flock for Berkeley DB, Postfix's
 * protocol with postmap) is taken on the main thread before the work is
 * queued and released on the main thread after it is done, so it covers the
 * writes and the flush. While the batch runs the handle is busy: every other
 * call on it answers ST_BUSY, so the main thread never touches the library
 * state (LMDB's MDB_NOLOCK environment, a Berkeley DB handle opened without
 * DB_THREAD) concurrently with the worker, and never converts or drops the
 * process's fcntl lock under it.
 *
 * An LMDB transaction that fails as a whole (an operation hit a library
 * error, the commit failed) is not left to decide the fate of unrelated
 * operations: with more than one operation, each is then run again in a
 * transaction of its own, so that only the failing one reports ERROR.
 */

/* Our op flag, next to the DICT_FLAG bits: this operation is a delete. */
#define KV_OP_DELETE 0x20000000

typedef struct {
  int flags;
  char *key;
  size_t klen;
  char *val;
  size_t vlen;
  int status;
} BatchOp;

typedef struct {
  napi_async_work work;
  napi_ref handle_ref;
  napi_ref cb_ref;
  KvHandle *h;
  BatchOp *ops;
  size_t n;
  size_t from, to; /* the LMDB step's range of ops */
  int whole_error; /* set when every op failed together (fault, lock, sync) */
} Batch;

static void batch_free(napi_env env, Batch *b) {
  if (!b) return;
  for (size_t i = 0; i < b->n; i++) {
    free(b->ops[i].key);
    free(b->ops[i].val);
  }
  free(b->ops);
  if (b->handle_ref) napi_delete_reference(env, b->handle_ref);
  if (b->cb_ref) napi_delete_reference(env, b->cb_ref);
  if (b->work) napi_delete_async_work(env, b->work);
  free(b);
}

/* One LMDB transaction over ops[from, to): each op's status, 0 = commit, 1 = nothing changed, -1 = error. */
static int lm_batch_step(KvHandle *h, MDB_txn *txn, void *arg) {
  Batch *b = arg;
  int changed = 0;
  for (size_t i = b->from; i < b->to; i++) {
    BatchOp *o = &b->ops[i];
    int rc;
    if (o->flags & KV_OP_DELETE) {
      o->status = ST_NOTFOUND;
      for (int pass = 0; pass < 2 && o->status != ST_OK; pass++) {
        int with_nul = pass == 0 && !h->raw;
        if (h->raw ? pass == 1 : !(h->nul_flags & (with_nul ? DF_TRY1NULL : DF_TRY0NULL))) continue;
        MDB_val k = {o->klen + (with_nul ? 1 : 0), o->key};
        rc = mdb_del(txn, h->dbi, &k, NULL);
        if (rc == 0) {
          o->status = ST_OK;
          changed = 1;
          if (!h->raw) h->nul_flags &= with_nul ? ~DF_TRY0NULL : ~DF_TRY1NULL;
        } else if (rc != MDB_NOTFOUND) {
          h->step_rc = rc;
          set_err(h, "error deleting from %s: %s", h->label, mdb_strerror(rc));
          return -1;
        }
      }
    } else {
      int nul = h->raw ? 0 : write_nul(h);
      MDB_val k = {o->klen + nul, o->key}, v = {o->vlen + nul, o->val};
      rc = mdb_put(txn, h->dbi, &k, &v, (o->flags & DF_DUP_REPLACE) ? 0 : MDB_NOOVERWRITE);
      if (rc == 0) {
        o->status = ST_OK;
        changed = 1;
      } else if (rc == MDB_KEYEXIST) {
        o->status = ST_NOTFOUND;
      } else {
        h->step_rc = rc;
        return -1;
      }
    }
  }
  return changed ? 0 : 1;
}

static void batch_execute(napi_env env, void *data) {
  (void)env;
  Batch *b = data;
  KvHandle *h = b->h;
  if (h->kind == KV_LMDB) {
    int status = 0;
    b->from = 0;
    b->to = b->n;
    int what_del = b->n == 1 && (b->ops[0].flags & KV_OP_DELETE);
    if (lm_run(h, LK_EXCL, 1, lm_batch_step, b, what_del ? "error deleting from" : "error updating", &status) == ST_OK) return;
    if (h->env == NULL || h->broken || b->n == 1) {
      for (size_t i = 0; i < b->n; i++) b->ops[i].status = ST_ERROR;
      return;
    }
    /* Attribute the failure: every op in a transaction of its own. */
    for (size_t i = 0; i < b->n; i++) {
      b->from = i;
      b->to = i + 1;
      int del = (b->ops[i].flags & KV_OP_DELETE) != 0;
      if (h->env == NULL || lm_run(h, LK_EXCL, 1, lm_batch_step, b, del ? "error deleting from" : "error updating", &status) != ST_OK)
        b->ops[i].status = ST_ERROR;
    }
    return;
  }

  /* Berkeley DB: the puts and deletes, then one flush. */
  int want_sync = 0, wrote = 0;
  volatile int src = 0;
  volatile int sig = 0;
  volatile size_t at = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  for (; at < b->n; at++) {
    BatchOp *o = &b->ops[at];
    int rc = 0, code = 0;
    if (o->flags & DF_SYNC_UPDATE) want_sync = 1;
    if (o->flags & KV_OP_DELETE) {
      int status = 1;
      for (int pass = 0; pass < 2 && status > 0; pass++) {
        int with_nul = pass == 0 && !h->raw;
        if (!h->raw && !(h->nul_flags & (with_nul ? DF_TRY1NULL : DF_TRY0NULL))) continue;
        if (h->raw && pass == 1) break;
        DBT k;
        memset(&k, 0, sizeof(k));
        k.data = o->key;
        k.size = (u_int32_t)(o->klen + (with_nul ? 1 : 0));
        rc = h->db->del(h->db, NULL, &k, 0);
        status = bdb_sanitize(rc, &code);
        if (status == 0) h->nul_flags &= with_nul ? ~DF_TRY0NULL : ~DF_TRY1NULL;
      }
      if (status < 0) set_err(h, "error deleting from %s: %s", h->label, db_err_text(code));
      else wrote = 1;
      o->status = status < 0 ? ST_ERROR : status == 0 ? ST_OK : ST_NOTFOUND;
    } else {
      int nul = h->raw ? 0 : write_nul(h);
      DBT k, v;
      memset(&k, 0, sizeof(k));
      memset(&v, 0, sizeof(v));
      k.data = o->key;
      k.size = (u_int32_t)(o->klen + nul);
      v.data = o->val;
      v.size = (u_int32_t)(o->vlen + nul);
      rc = h->db->put(h->db, NULL, &k, &v, (o->flags & DF_DUP_REPLACE) ? 0 : DB_NOOVERWRITE);
      int s = bdb_sanitize(rc, &code);
      if (s < 0) set_err(h, "error writing %s: %s", h->label, db_err_text(code));
      else wrote = 1;
      o->status = s < 0 ? ST_ERROR : s == 0 ? ST_OK : ST_NOTFOUND;
    }
  }
  if (want_sync && wrote) src = h->db->sync(h->db, 0);
  GUARD_CATCH(sig)
  if (sig) {
    /* Berkeley DB's state may be inconsistent: leak it (the lock is released on the main thread). */
    h->broken = 1;
    set_err(h, "error writing %s: %s (file damaged or truncated)", h->label, sig == SIGBUS ? "bus error" : "segmentation fault");
    b->whole_error = 1;
    return;
  }
  if (src != 0) {
    /* Not flushed: nothing that asked for a durable write may be acknowledged. */
    set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(src));
    for (size_t i = 0; i < b->n; i++)
      if (b->ops[i].flags & DF_SYNC_UPDATE) b->ops[i].status = ST_ERROR;
  }
}

static void batch_complete(napi_env env, napi_status status, void *data) {
  Batch *b = data;
  KvHandle *h = b->h;
  if (status != napi_ok) {
    b->whole_error = 1;
    set_err(h, "%s: write batch cancelled", h->label);
  }
  if (h->kind == KV_LMDB) {
    lm_release(h, LK_EXCL);
  } else {
    /* Our own writes raised inotify events: drain them while the lock still keeps others out. */
    if (!h->broken && h->db) bdb_note_own_change(h);
    if (h->lock_fd >= 0) (void)lock_flock(h->lock_fd, LK_NONE, 0);
  }
  h->busy = 0;
  if (h->close_pending) {
    h->close_pending = 0;
    (void)kv_close_now(h);
  }
  napi_value arr = NULL, cb, undef;
  if (napi_create_array_with_length(env, b->n, &arr) == napi_ok) {
    for (size_t i = 0; i < b->n; i++) napi_set_element(env, arr, (uint32_t)i, mk_int(env, b->whole_error ? ST_ERROR : b->ops[i].status));
  }
  if (napi_get_reference_value(env, b->cb_ref, &cb) == napi_ok && napi_get_undefined(env, &undef) == napi_ok && arr) {
    napi_value argv[1] = {arr};
    napi_call_function(env, undef, cb, 1, argv, NULL);
  }
  batch_free(env, b);
}

/*
 * kvBatch(h, ops, callback) -> 0 queued | 2 busy (lock held elsewhere, or a
 * batch already runs) | -1 error (kvError). ops = [flags, key, value, ...]
 * flattened; flags: DUP_REPLACE, SYNC_UPDATE, KV_OP_DELETE. callback(statuses).
 */
static napi_value KvBatch(napi_env env, napi_callback_info info) {
  NAPI_ARGS(3);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  napi_valuetype ft;
  bool is_arr = false;
  uint32_t len = 0;
  if (napi_is_array(env, argv[1], &is_arr) != napi_ok || !is_arr || napi_get_array_length(env, argv[1], &len) != napi_ok || len % 3 != 0 ||
      len == 0 || napi_typeof(env, argv[2], &ft) != napi_ok || ft != napi_function) {
    napi_throw_type_error(env, NULL, "expected a handle, a non-empty [flags, key, value, ...] array and a callback");
    return NULL;
  }
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY);
  if (h->mode != MODE_WRITE) {
    set_err(h, "error updating %s: %s", h->label, strerror(EACCES));
    return mk_int(env, ST_ERROR);
  }
  Batch *b = calloc(1, sizeof(*b));
  if (!b || !(b->ops = calloc(len / 3, sizeof(BatchOp)))) {
    free(b);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  b->h = h;
  for (uint32_t i = 0; i < len / 3; i++) {
    napi_value fv, kv, vv;
    int64_t fl;
    size_t kl, vl;
    BatchOp *o = &b->ops[i];
    if (napi_get_element(env, argv[1], i * 3, &fv) != napi_ok || napi_get_element(env, argv[1], i * 3 + 1, &kv) != napi_ok ||
        napi_get_element(env, argv[1], i * 3 + 2, &vv) != napi_ok || !arg_int(env, fv, &fl) ||
        !get_arg_bytes(env, kv, &key_buf, &kl, h->raw) || !get_arg_bytes(env, vv, &val_buf, &vl, h->raw)) {
      batch_free(env, b);
      return NULL;
    }
    b->n = i + 1;
    o->flags = (int)fl;
    o->klen = kl;
    o->vlen = vl;
    /* Room for the NUL terminator the handle may add. */
    o->key = malloc(kl + 1);
    o->val = malloc(vl + 1);
    if (!o->key || !o->val) {
      batch_free(env, b);
      napi_throw_error(env, NULL, "out of memory");
      return NULL;
    }
    memcpy(o->key, key_buf.data, kl);
    o->key[kl] = 0;
    memcpy(o->val, val_buf.data, vl);
    o->val[vl] = 0;
  }
  /* The exclusive lock, taken here so that all lock traffic stays on this thread. */
  int st = h->kind == KV_LMDB ? lm_acquire(h, LK_EXCL, 1) : bdb_acquire(h, LK_EXCL, 1);
  if (st != ST_OK) {
    batch_free(env, b);
    return mk_int(env, st);
  }
  napi_value name;
  if (napi_create_reference(env, argv[0], 1, &b->handle_ref) != napi_ok || napi_create_reference(env, argv[2], 1, &b->cb_ref) != napi_ok ||
      napi_create_string_latin1(env, "proxymapd:kvBatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, batch_execute, batch_complete, b, &b->work) != napi_ok ||
      napi_queue_async_work(env, b->work) != napi_ok) {
    if (h->kind == KV_LMDB) lm_release(h, LK_EXCL);
    else bdb_release(h, LK_EXCL);
    batch_free(env, b);
    napi_throw_error(env, NULL, "cannot queue the write batch");
    return NULL;
  }
  h->busy = 1;
  return mk_int(env, ST_OK);
}

int kv_register(napi_env env, napi_value exports);

int kv_register(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {
      {"kvOpen", KvOpen},   {"kvGet", KvGet},         {"kvPut", KvPut},       {"kvDel", KvDel},
      {"kvSeq", KvSeq},     {"kvCommit", KvCommit},   {"kvSync", KvSync},     {"kvClose", KvClose},
      {"kvFlags", KvFlags}, {"kvError", KvError},     {"kvChanged", KvChanged}, {"kvLockFile", KvLockFile},
      {"kvUnlockFile", KvUnlockFile}, {"kvVersions", KvVersions}, {"kvStrerror", KvStrerror}, {"kvBatch", KvBatch},
  };
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value fn;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, fn) != napi_ok)
      return 0;
  }
  return 1;
}
