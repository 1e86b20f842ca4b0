/*
 * Berkeley DB 5.3 files for hash: and btree: tables, through libdb, opened
 * and used the way Postfix's dict_db module does: a private memory-pool
 * environment in the file's directory, DB_FCNTL_LOCKING, flock() on the
 * .db file (INTERNAL_LOCK on Linux). A handle whose file was replaced, or
 * changed in place by another process (its private page cache would be
 * stale), is reopened; faults inside the library become errors.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <db.h>

#include "kv.h"

/* dict_db.c */
#define DB_HASH_NELEM 4096

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
      int st = kv_lock_status(h, lock_flock(h->lock_fd, op, nonblock));
      if (st != ST_OK) return st;
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

/*
 * The outcome of one library call (made under the guard when sig may be
 * set): ST_OK, ST_NOTFOUND (not found / key exists) or ST_ERROR after a
 * fault or a library error, the text naming `what` was done.
 */
static int bdb_outcome(KvHandle *h, int op, int sig, int rc, const char *what) {
  if (sig) {
    bdb_faulted(h, op, sig, what);
    return ST_ERROR;
  }
  int code = 0;
  int s = bdb_sanitize(rc, &code);
  if (s < 0) {
    set_err(h, "%s %s: %s", what, h->label, db_err_text(code));
    return ST_ERROR;
  }
  return s == 0 ? ST_OK : ST_NOTFOUND;
}

/* ------------------------------------------------------------------ */
/* The operations                                                      */
/* ------------------------------------------------------------------ */

/* A DBT over our bytes (the library does not write through it). */
static void bdb_dbt(DBT *d, const void *data, size_t size) {
  memset(d, 0, sizeof(*d));
  d->data = (void *)data;
  d->size = (u_int32_t)size;
}

static const char *bdb_version(void) { return db_version(NULL, NULL, NULL); }

static int bdb_open_op(KvHandle *h, int64_t map_size, int64_t cache_size, int lock_flags) {
  (void)map_size;
  h->lock_fd = -1;
  h->ino_fd = -1;
  h->cache_size = cache_size > 0 ? (u_int32_t)cache_size : 131072;
  return bdb_open(h, LK_NONE, (lock_flags & KV_NONBLOCK) != 0);
}

static void bdb_destroy(KvHandle *h) {
  bdb_close_handles(h);
  free(h->seq_key);
  h->seq_key = NULL;
}

static int bdb_get(KvHandle *h, int op, const char *key, size_t ksize, Buf *scratch, KvBytes *val) {
  (void)scratch;
  DBT k, v;
  bdb_dbt(&k, key, ksize);
  bdb_dbt(&v, NULL, 0);
  volatile int rc = 0;
  volatile int sig = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  rc = h->db->get(h->db, NULL, &k, &v, 0);
  GUARD_CATCH(sig)
  int st = bdb_outcome(h, op, sig, rc, "error reading");
  if (st == ST_OK) kv_bytes(h, v.data, v.size, val);
  return st;
}

static int bdb_put(KvHandle *h, int op, int nonblock, const char *key, size_t ksize, const char *val, size_t vsize, int flags) {
  int st = bdb_acquire(h, op, nonblock);
  if (st != ST_OK) return st;
  DBT k, v;
  bdb_dbt(&k, key, ksize);
  bdb_dbt(&v, val, vsize);
  volatile int rc = 0, src = 0;
  volatile int sig = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  rc = h->db->put(h->db, NULL, &k, &v, (flags & DF_DUP_REPLACE) ? 0 : DB_NOOVERWRITE);
  if ((rc == 0 || rc == DB_KEYEXIST) && (flags & DF_SYNC_UPDATE)) src = h->db->sync(h->db, 0);
  GUARD_CATCH(sig)
  st = bdb_outcome(h, op, sig, rc, "error writing");
  if (st == ST_ERROR) {
    if (!sig) bdb_release(h, op); /* (bdb_faulted released it) */
    return ST_ERROR;
  }
  if (src != 0) {
    set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(src));
    bdb_release(h, op);
    return ST_ERROR;
  }
  if (h->mode != MODE_BULK) bdb_note_own_change(h);
  bdb_release(h, op);
  return st;
}

static int bdb_del(KvHandle *h, int op, const char *key, size_t ksize) {
  DBT k;
  bdb_dbt(&k, key, ksize);
  volatile int rc = 0;
  volatile int sig = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  rc = h->db->del(h->db, NULL, &k, 0);
  GUARD_CATCH(sig)
  return bdb_outcome(h, op, sig, rc, "error deleting from");
}

/* After a kvDel's deletes: flush when asked, remember the file as we left it. */
static int bdb_del_done(KvHandle *h, int op, int flags) {
  if (flags & DF_SYNC_UPDATE) {
    volatile int src = 0;
    volatile int sig = 0;
    sigjmp_buf jb;
    GUARD_TRY(jb)
    src = h->db->sync(h->db, 0);
    GUARD_CATCH(sig)
    if (sig) {
      bdb_faulted(h, op, sig, "flush");
      return ST_ERROR;
    }
    if (src != 0) {
      set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(src));
      return ST_ERROR;
    }
  }
  bdb_note_own_change(h);
  return ST_OK;
}

/* One cursor kept across calls (dict_db_sequence), found again after a reopen. */
static int bdb_seq(KvHandle *h, int op, int nonblock, int first, Buf *kbuf, Buf *vbuf, KvBytes *kout, KvBytes *vout) {
  (void)kbuf;
  (void)vbuf;
  int st = bdb_acquire(h, op, nonblock);
  if (st != ST_OK) return st;
  int reposition = 0;
  if (first) {
    h->cursor_lost = 0;
    h->seq_len = 0;
    if (h->cursor == NULL && h->db->cursor(h->db, NULL, &h->cursor, 0) != 0) h->cursor = NULL;
  } else if (h->cursor == NULL) {
    if (!h->cursor_lost || h->seq_key == NULL) {
      set_err(h, "dict_db_sequence: no cursor");
      bdb_release(h, op);
      return ST_ERROR;
    }
    if (h->db->cursor(h->db, NULL, &h->cursor, 0) != 0) h->cursor = NULL;
    reposition = 1;
  }
  if (h->cursor == NULL) {
    set_err(h, "%s: cannot create a cursor", h->label);
    bdb_release(h, op);
    return ST_ERROR;
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
    rc = h->cursor->get(h->cursor, &k, &v, first ? DB_FIRST : DB_NEXT);
  }
  GUARD_CATCH(sig)
  if (sig) {
    bdb_faulted(h, op, sig, "error seeking");
    return ST_ERROR;
  }
  if (rc != 0 && rc != DB_NOTFOUND) {
    set_err(h, "error [%d] seeking %s: %s", (int)rc, h->label, db_err_text(rc));
    bdb_release(h, op);
    return ST_ERROR;
  }
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
    /* The library's memory stays valid until its next call on the handle. */
    kv_bytes(h, k.data, k.size, kout);
    kv_bytes(h, v.data, v.size, vout);
  }
  bdb_release(h, op);
  return rc == 0 ? ST_OK : ST_NOTFOUND;
}

static int bdb_commit(KvHandle *h) {
  if (!h->db) return ST_OK;
  int rc = h->db->sync(h->db, 0);
  if (rc != 0) {
    set_err(h, "flush database %s: %s", h->label, db_err_text(rc));
    return ST_ERROR;
  }
  return ST_OK;
}

static int bdb_sync(KvHandle *h) {
  int rc = 0;
  if (h->db && h->mode != MODE_READ) {
    rc = h->db->sync(h->db, 0);
    if (rc != 0) set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(rc));
    else bdb_note_own_change(h);
  }
  return rc == 0 ? ST_OK : ST_ERROR;
}

/* Close an idle handle, flushing it. */
static int bdb_close(KvHandle *h) {
  int rc = ST_OK;
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
  return rc;
}

/* ------------------------------------------------------------------ */
/* Write batches: the puts and deletes, then one flush                 */
/* ------------------------------------------------------------------ */

static int bdb_batch_del_try(KvHandle *h, size_t ksize, void *ctx) {
  DBT k;
  bdb_dbt(&k, ((KvBatchOp *)ctx)->key, ksize);
  return bdb_outcome(h, LK_NONE, 0, h->db->del(h->db, NULL, &k, 0), "error deleting from");
}

static int bdb_batch(KvHandle *h, KvBatchOp *ops, size_t n) {
  volatile int src = 0;
  volatile int sig = 0;
  volatile size_t at = 0;
  sigjmp_buf jb;
  GUARD_TRY(jb)
  int want_sync = 0, wrote = 0;
  for (; at < n; at++) {
    KvBatchOp *o = &ops[at];
    if (o->flags & DF_SYNC_UPDATE) want_sync = 1;
    if (o->flags & KV_OP_DELETE) {
      o->status = kv_nul_passes(h, o->klen, bdb_batch_del_try, o);
      if (o->status != ST_ERROR) wrote = 1;
    } else {
      int nul = kv_write_nul(h);
      DBT k, v;
      bdb_dbt(&k, o->key, o->klen + nul);
      bdb_dbt(&v, o->val, o->vlen + nul);
      int rc = h->db->put(h->db, NULL, &k, &v, (o->flags & DF_DUP_REPLACE) ? 0 : DB_NOOVERWRITE);
      o->status = bdb_outcome(h, LK_NONE, 0, rc, "error writing");
      if (o->status != ST_ERROR) wrote = 1;
    }
  }
  if (want_sync && wrote) src = h->db->sync(h->db, 0);
  GUARD_CATCH(sig)
  if (sig) {
    /* Berkeley DB's state may be inconsistent: leak it (the lock is released on the main thread). */
    bdb_faulted(h, LK_NONE, sig, "error writing");
    return 1;
  }
  if (src != 0) {
    /* Not flushed: nothing that asked for a durable write may be acknowledged. */
    set_err(h, "%s: flush dictionary: %s", h->label, db_err_text(src));
    for (size_t i = 0; i < n; i++)
      if (ops[i].flags & DF_SYNC_UPDATE) ops[i].status = ST_ERROR;
  }
  return 0;
}

static void bdb_batch_end(KvHandle *h) {
  /* Our own writes raised inotify events: drain them while the lock still keeps others out. */
  if (!h->broken && h->db) bdb_note_own_change(h);
  if (h->lock_fd >= 0) (void)lock_flock(h->lock_fd, LK_NONE, 0);
}

/*
 * A read-only handle that faulted (the file was truncated under its memory
 * map, as postmap's in-place rewrite does): the library state is leaked (it
 * may be inconsistent), the descriptors closed, and the next acquire opens
 * the file again, waiting for the rewrite's lock like any other open.
 */
static int bdb_recover(KvHandle *h) {
  if (!h->broken || h->mode != MODE_READ) return 0;
  bdb_close_handles(h);
  h->broken = 0;
  return 1;
}

const KvOps kv_bdb_ops = {
    .version = bdb_version,
    .open = bdb_open_op,
    .destroy = bdb_destroy,
    .acquire = bdb_acquire,
    .release = bdb_release,
    .pending_get = NULL,
    .get = bdb_get,
    .put = bdb_put,
    .del = bdb_del,
    .del_done = bdb_del_done,
    .seq = bdb_seq,
    .commit = bdb_commit,
    .sync = bdb_sync,
    .close = bdb_close,
    .batch = bdb_batch,
    .batch_end = bdb_batch_end,
    .recover = bdb_recover,
};
