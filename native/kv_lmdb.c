/*
 * LMDB files for lmdb: tables, through the system liblmdb, opened and used
 * the way Postfix's dict_lmdb/slmdb modules do: MDB_NOSUBDIR|MDB_NOLOCK,
 * map size from the file size, doubling on MDB_MAP_FULL, a transaction per
 * operation, fcntl() whole-file locks. A writable handle whose file was
 * replaced reopens it; a file shorter than its meta page says is refused
 * instead of being touched (SIGBUS), and faults inside the library become
 * errors.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lmdb.h>

#include "kv.h"

/* slmdb/dict_lmdb tunables. */
#define LMDB_FUDGE 10240
#define LMDB_SIZE_INCR 2
#define LMDB_API_RETRY_LIMIT 2
#define LMDB_BULK_RETRY_LIMIT ((int)(2 * sizeof(size_t) * CHAR_BIT))

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
  if (op != LK_NONE) return kv_lock_status(h, lock_fcntl(h->lmdb_fd, op, nonblock));
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
      if (op != LK_NONE && kv_lock_status(h, lock_fcntl(h->lmdb_fd, op, 0)) != ST_OK) return ST_ERROR;
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

/*
 * slmdb_recover() in bulk mode, the transaction gone: grow the map and
 * begin a new, emptied transaction (the caller loads everything again).
 * 0 = restarted, else the library error to report.
 */
static int lm_bulk_restart(KvHandle *h, int rc) {
  if (++h->bulk_retries <= LMDB_BULK_RETRY_LIMIT && lm_recover(h, rc) == 0) {
    MDB_txn *t;
    int rc2 = mdb_txn_begin(h->env, NULL, 0, &t);
    if (rc2 == 0 && (rc2 = mdb_drop(t, h->dbi, 0)) == 0) {
      h->bulk_txn = t;
      return 0;
    }
    if (rc2 == 0) mdb_txn_abort(t);
    rc = rc2;
  }
  return rc;
}

/* ------------------------------------------------------------------ */
/* The operations                                                      */
/* ------------------------------------------------------------------ */

static const char *lm_version(void) { return mdb_version(NULL, NULL, NULL); }

static int lm_open(KvHandle *h, int64_t map_size, int64_t cache_size, int lock_flags) {
  (void)cache_size;
  h->lmdb_fd = -1;
  h->map_size = map_size > 0 ? (size_t)map_size : 16777216;
  if (lm_open_env(h) != 0) return ST_ERROR;
  /* dict_lmdb_open() in bulk mode: exclusive lock momentarily, then shared until done. */
  if (h->mode == MODE_BULK && (lock_flags & DF_LOCK)) {
    if (lock_fcntl(h->lmdb_fd, LK_EXCL, 0) != 0 || lock_fcntl(h->lmdb_fd, LK_SHARED, 0) != 0) {
      set_err(h, "%s: lock dictionary: %s", h->path, strerror(errno));
      lm_close_env(h);
      return ST_ERROR;
    }
  }
  return ST_OK;
}

static void lm_destroy(KvHandle *h) {
  lm_close_env(h);
  lm_saved_free(h);
}

/* Inside a bulk build: read the pending transaction (the exact key). */
static int lm_pending_get(KvHandle *h, const char *key, size_t klen, KvBytes *val) {
  if (!h->bulk_txn) return ST_NONE;
  MDB_val k = {klen, (void *)key}, v;
  int rc = mdb_get(h->bulk_txn, h->dbi, &k, &v);
  if (rc == 0) {
    kv_bytes(h, v.mv_data, v.mv_size, val);
    return ST_OK;
  }
  return rc == MDB_NOTFOUND ? ST_NOTFOUND : ST_ERROR;
}

typedef struct {
  MDB_val key;
  Buf *out;
  size_t vlen;
} LmGetArg;

static int lm_get_step(KvHandle *h, MDB_txn *txn, void *arg) {
  LmGetArg *a = arg;
  MDB_val v;
  int rc = mdb_get(txn, h->dbi, &a->key, &v);
  if (rc == 0 && !copy_out(a->out, v.mv_data, v.mv_size, h->raw, &a->vlen)) rc = ENOMEM;
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return 1;
  h->step_rc = rc;
  return -1;
}

static int lm_get(KvHandle *h, int op, const char *key, size_t ksize, Buf *scratch, KvBytes *val) {
  LmGetArg a = {{ksize, (void *)key}, scratch, 0};
  int status = 0;
  if (lm_run(h, op, 0, lm_get_step, &a, "error reading", &status) != ST_OK) return ST_ERROR;
  if (status != 0) return ST_NOTFOUND;
  val->data = scratch->data;
  val->len = a.vlen;
  return ST_OK;
}

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

static int lm_put(KvHandle *h, int op, int nonblock, const char *key, size_t ksize, const char *val, size_t vsize, int flags) {
  if (h->mode == MODE_READ) {
    set_err(h, "error updating %s: %s", h->label, strerror(EACCES));
    return ST_ERROR;
  }
  if (h->mode == MODE_BULK) {
    if (!h->bulk_txn) {
      set_err(h, "error updating %s: no bulk transaction", h->label);
      return ST_ERROR;
    }
    MDB_val k = {ksize, (void *)key}, v = {vsize, (void *)val};
    volatile int rc = 0;
    volatile int sig = 0;
    sigjmp_buf jb;
    GUARD_TRY(jb)
    rc = mdb_put(h->bulk_txn, h->dbi, &k, &v, (flags & DF_DUP_REPLACE) ? 0 : MDB_NOOVERWRITE);
    GUARD_CATCH(sig)
    if (sig) {
      lm_faulted(h, LK_NONE, sig, "error updating");
      return ST_ERROR;
    }
    if (rc == 0) return ST_OK;
    if (rc == MDB_KEYEXIST) return ST_NOTFOUND;
    /* Grow the map, start a new emptied transaction, load again. */
    mdb_txn_abort(h->bulk_txn);
    h->bulk_txn = NULL;
    int rrc = lm_bulk_restart(h, rc);
    if (rrc == 0) return ST_RESTART;
    set_err(h, "error updating %s: %s", h->label, mdb_strerror(rrc));
    return ST_ERROR;
  }
  int st = lm_acquire(h, op, nonblock);
  if (st != ST_OK) return st;
  LmPutArg a = {{ksize, (void *)key}, {vsize, (void *)val}, (flags & DF_DUP_REPLACE) ? 0 : MDB_NOOVERWRITE};
  int status = 0;
  st = lm_run(h, op, 1, lm_put_step, &a, "error updating", &status);
  lm_release(h, op);
  if (st != ST_OK) return st;
  return status == 1 ? ST_NOTFOUND : ST_OK;
}

static int lm_del_step(KvHandle *h, MDB_txn *txn, void *arg) {
  MDB_val *k = arg;
  int rc = mdb_del(txn, h->dbi, k, NULL);
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return 1;
  h->step_rc = rc;
  return -1;
}

static int lm_del(KvHandle *h, int op, const char *key, size_t ksize) {
  MDB_val k = {ksize, (void *)key};
  int s = 0;
  int st = lm_run(h, op, 1, lm_del_step, &k, "error deleting from", &s);
  if (st != ST_OK) return st;
  return s == 0 ? ST_OK : ST_NOTFOUND;
}

typedef struct {
  MDB_cursor_op op;
  Buf *kbuf, *vbuf;
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
  if (rc == 0 && (lm_saved_assign(h, &k) != 0 || !copy_out(a->kbuf, k.mv_data, k.mv_size, h->raw, &a->klen) ||
                  !copy_out(a->vbuf, v.mv_data, v.mv_size, h->raw, &a->vlen)))
    rc = ENOMEM;
  mdb_cursor_close(c);
  if (rc == 0) return 0;
  if (rc == MDB_NOTFOUND) return 1;
  h->step_rc = rc;
  return -1;
}

/* A fresh transaction per call that finds its place again from the last key. */
static int lm_seq(KvHandle *h, int op, int nonblock, int first, Buf *kbuf, Buf *vbuf, KvBytes *k, KvBytes *v) {
  if (h->mode == MODE_BULK) {
    set_err(h, "%s: internal error: slmdb_cursor_get: bulk transaction is not supported", h->label);
    return ST_ERROR;
  }
  int st = lm_acquire(h, op, nonblock);
  if (st != ST_OK) return st;
  LmSeqArg a = {first ? MDB_FIRST : MDB_NEXT, kbuf, vbuf, 0, 0};
  int status = 0;
  st = lm_run(h, op, 0, lm_seq_step, &a, "error seeking", &status);
  lm_release(h, op);
  if (st != ST_OK) return st;
  if (status == 1) {
    lm_saved_free(h);
    return ST_NOTFOUND;
  }
  k->data = kbuf->data;
  k->len = a.klen;
  v->data = vbuf->data;
  v->len = a.vlen;
  return ST_OK;
}

/* Bulk: commit the one transaction (ST_RESTART: the map grew, load everything again). */
static int lm_commit(KvHandle *h) {
  if (!h->bulk_txn) return ST_OK;
  volatile int rc = 0;
  volatile int sig = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  rc = mdb_txn_commit(h->bulk_txn);
  GUARD_CATCH(sig)
  h->bulk_txn = NULL;
  if (sig) {
    lm_faulted(h, LK_NONE, sig, "error committing");
    return ST_ERROR;
  }
  if (rc == 0) return ST_OK;
  int rrc = lm_bulk_restart(h, rc);
  if (rrc == 0) return ST_RESTART;
  set_err(h, "error committing %s: %s", h->label, mdb_strerror(rrc));
  return ST_ERROR;
}

/* Commits are durable already; this forces the file to disk. */
static int lm_sync(KvHandle *h) {
  int rc = 0;
  if (h->env && h->mode != MODE_READ) rc = mdb_env_sync(h->env, 1);
  if (rc != 0) set_err(h, "%s: sync: %s", h->label, mdb_strerror(rc));
  return rc == 0 ? ST_OK : ST_ERROR;
}

/* An uncommitted bulk transaction is abandoned. */
static int lm_close(KvHandle *h) {
  lm_close_env(h);
  return ST_OK;
}

/* ------------------------------------------------------------------ */
/* Write batches: one transaction, one commit                          */
/* ------------------------------------------------------------------ */

typedef struct {
  KvBatchOp *ops;
  size_t from, to; /* the step's range of ops */
} LmBatch;

typedef struct {
  MDB_txn *txn;
  char *key;
} LmDelTry;

static int lm_batch_del_try(KvHandle *h, size_t ksize, void *ctx) {
  LmDelTry *c = ctx;
  MDB_val k = {ksize, c->key};
  int rc = mdb_del(c->txn, h->dbi, &k, NULL);
  if (rc == 0) return ST_OK;
  if (rc == MDB_NOTFOUND) return ST_NOTFOUND;
  h->step_rc = rc;
  set_err(h, "error deleting from %s: %s", h->label, mdb_strerror(rc));
  return ST_ERROR;
}

/* One LMDB transaction over ops[from, to): each op's status, 0 = commit, 1 = nothing changed, -1 = error. */
static int lm_batch_step(KvHandle *h, MDB_txn *txn, void *arg) {
  LmBatch *b = arg;
  int changed = 0;
  for (size_t i = b->from; i < b->to; i++) {
    KvBatchOp *o = &b->ops[i];
    int rc;
    if (o->flags & KV_OP_DELETE) {
      LmDelTry c = {txn, o->key};
      rc = kv_nul_passes(h, o->klen, lm_batch_del_try, &c);
      if (rc == ST_ERROR) return -1;
      o->status = rc;
      if (rc == ST_OK) changed = 1;
    } else {
      int nul = kv_write_nul(h);
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

/*
 * A transaction that fails as a whole (an operation hit a library error,
 * the commit failed) is not left to decide the fate of unrelated
 * operations: with more than one operation, each is then run again in a
 * transaction of its own, so that only the failing one reports ERROR.
 */
static int lm_batch(KvHandle *h, KvBatchOp *ops, size_t n) {
  LmBatch b = {ops, 0, n};
  int status = 0;
  int what_del = n == 1 && (ops[0].flags & KV_OP_DELETE);
  if (lm_run(h, LK_EXCL, 1, lm_batch_step, &b, what_del ? "error deleting from" : "error updating", &status) == ST_OK) return 0;
  if (h->env == NULL || h->broken || n == 1) {
    for (size_t i = 0; i < n; i++) ops[i].status = ST_ERROR;
    return 0;
  }
  /* Attribute the failure: every op in a transaction of its own. */
  for (size_t i = 0; i < n; i++) {
    b.from = i;
    b.to = i + 1;
    int del = (ops[i].flags & KV_OP_DELETE) != 0;
    if (h->env == NULL || lm_run(h, LK_EXCL, 1, lm_batch_step, &b, del ? "error deleting from" : "error updating", &status) != ST_OK)
      ops[i].status = ST_ERROR;
  }
  return 0;
}

static void lm_batch_end(KvHandle *h) { lm_release(h, LK_EXCL); }

const KvOps kv_lmdb_ops = {
    .version = lm_version,
    .open = lm_open,
    .destroy = lm_destroy,
    .acquire = lm_acquire,
    .release = lm_release,
    .pending_get = lm_pending_get,
    .get = lm_get,
    .put = lm_put,
    .del = lm_del,
    .del_done = NULL,
    .seq = lm_seq,
    .commit = lm_commit,
    .sync = lm_sync,
    .close = lm_close,
    .batch = lm_batch,
    .batch_end = lm_batch_end,
};
