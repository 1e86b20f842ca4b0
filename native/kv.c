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
 *
 * This file is the N-API layer: argument checks, the handle's life cycle,
 * Postfix's NUL rules (once, for both libraries) and the write batches'
 * thread plumbing. The libraries are behind the operations table of
 * kv.h: kv_lmdb.c and kv_bdb.c; locks, file identity and the fault guard
 * are in kv_file.c.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <node_api.h>

#include "kv.h"
#include "napi_util.h"

void set_err(KvHandle *h, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(h->err, sizeof(h->err), fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------------ */
/* N-API plumbing                                                      */
/* ------------------------------------------------------------------ */

static _Thread_local Buf key_buf = {NULL, 0};
static _Thread_local Buf val_buf = {NULL, 0};

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

static void handle_free(KvHandle *h) {
  if (!h) return;
  h->ops->destroy(h);
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

/* The lock request of a call: `lock` when the caller passed DICT_FLAG_LOCK. */
static int lock_op(int64_t flags, int lock) { return (flags & DF_LOCK) ? lock : LK_NONE; }

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
  kv_guard_init();

  KvHandle *h = calloc(1, sizeof(*h));
  if (!h) {
    free(pb.data);
    free(lb.data);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  h->magic = KV_MAGIC;
  h->kind = (int)kind;
  h->ops = kind == KV_LMDB ? &kv_lmdb_ops : &kv_bdb_ops;
  h->mode = (int)mode;
  h->raw = raw != 0;
  h->path = strndup(pb.data, plen);
  h->label = strndup(lb.data, llen);
  free(pb.data);
  free(lb.data);
  /* dict_*_open(): neither NUL flag requested means try both. */
  h->nul_flags = (int)(nul & (DF_TRY0NULL | DF_TRY1NULL));
  if (h->nul_flags == 0) h->nul_flags = DF_TRY0NULL | DF_TRY1NULL;

  int rc = h->ops->open(h, map_size, cache_size, (int)lock_flags);
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

/*
 * The checks every call on an open handle starts with: the handle, its
 * flags argument, closed (ST_ERROR) and busy (ST_BUSY: a write batch owns
 * the handle, try again later). NULL with *early unset = an exception is
 * pending; *early set = answer it.
 */
static KvHandle *call_handle(napi_env env, napi_value hv, napi_value fv, int64_t *flags, napi_value *early) {
  *early = NULL;
  KvHandle *h = get_handle(env, hv, 1);
  if (!h || !arg_int(env, fv, flags)) return NULL;
  if (h->closed) *early = mk_int(env, ST_ERROR);
  else if (h->busy) *early = mk_int(env, ST_BUSY);
  return *early ? NULL : h;
}

/* ------------------------------------------------------------------ */
/* get                                                                 */
/* ------------------------------------------------------------------ */

typedef struct {
  int op;
  const char *key;
  KvBytes val;
} GetCtx;

static int get_try(KvHandle *h, size_t ksize, void *ctx) {
  GetCtx *c = ctx;
  return h->ops->get(h, c->op, c->key, ksize, &val_buf, &c->val);
}

/*
 * Lookup with Postfix's NUL rules (kv_nul_passes). The value is made a JS
 * string before the next library call.
 */
static napi_value KvGet(napi_env env, napi_callback_info info) {
  NAPI_ARGS(3);
  int64_t flags;
  napi_value early;
  KvHandle *h = call_handle(env, argv[0], argv[2], &flags, &early);
  if (!h) return early;
  size_t klen;
  if (!get_arg_bytes(env, argv[1], &key_buf, &klen, h->raw)) return NULL;
  GetCtx c = {lock_op(flags, LK_SHARED), key_buf.data, {NULL, 0}};
  int st;
  if (h->ops->pending_get && (st = h->ops->pending_get(h, c.key, klen, &c.val)) != ST_NONE)
    return st == ST_OK ? mk_str(env, c.val.data, c.val.len) : mk_int(env, st);
  st = h->ops->acquire(h, c.op, (flags & KV_NONBLOCK) != 0);
  if (st != ST_OK) return mk_int(env, st);
  st = kv_nul_passes(h, klen, get_try, &c);
  if (st == ST_ERROR && h->broken && h->ops->recover && h->ops->recover(h)) {
    /* Faulted on a file rewritten under it: once more on the file as it is now (or busy while the rewrite holds its lock). */
    st = h->ops->acquire(h, c.op, (flags & KV_NONBLOCK) != 0);
    if (st != ST_OK) return mk_int(env, st);
    st = kv_nul_passes(h, klen, get_try, &c);
  }
  napi_value result = st == ST_OK ? mk_str(env, c.val.data, c.val.len) : mk_int(env, st);
  h->ops->release(h, c.op);
  return result;
}

/* ------------------------------------------------------------------ */
/* put                                                                 */
/* ------------------------------------------------------------------ */

/* kvPut(h, key, value, flags) -> 0 stored, 1 key exists, 2 busy, 3 restart (bulk), -1 error */
static napi_value KvPut(napi_env env, napi_callback_info info) {
  NAPI_ARGS(4);
  int64_t flags;
  napi_value early;
  KvHandle *h = call_handle(env, argv[0], argv[3], &flags, &early);
  if (!h) return early;
  size_t klen, vlen;
  if (!get_arg_bytes(env, argv[1], &key_buf, &klen, h->raw) || !get_arg_bytes(env, argv[2], &val_buf, &vlen, h->raw))
    return NULL;
  int nul = kv_write_nul(h);
  return mk_int(env, h->ops->put(h, lock_op(flags, LK_EXCL), (flags & KV_NONBLOCK) != 0, key_buf.data, klen + nul, val_buf.data,
                                 vlen + nul, (int)flags));
}

/* ------------------------------------------------------------------ */
/* del                                                                 */
/* ------------------------------------------------------------------ */

typedef struct {
  int op;
  const char *key;
} DelCtx;

static int del_try(KvHandle *h, size_t ksize, void *ctx) {
  DelCtx *c = ctx;
  return h->ops->del(h, c->op, c->key, ksize);
}

/* kvDel(h, key, flags) -> 0 deleted, 1 not found, 2 busy, -1 error */
static napi_value KvDel(napi_env env, napi_callback_info info) {
  NAPI_ARGS(3);
  int64_t flags;
  napi_value early;
  KvHandle *h = call_handle(env, argv[0], argv[2], &flags, &early);
  if (!h) return early;
  size_t klen;
  if (!get_arg_bytes(env, argv[1], &key_buf, &klen, h->raw)) return NULL;
  if (h->mode != MODE_WRITE) {
    set_err(h, "error deleting from %s: %s", h->label, strerror(EACCES));
    return mk_int(env, ST_ERROR);
  }
  DelCtx c = {lock_op(flags, LK_EXCL), key_buf.data};
  int st = h->ops->acquire(h, c.op, (flags & KV_NONBLOCK) != 0);
  if (st != ST_OK) return mk_int(env, st);
  st = kv_nul_passes(h, klen, del_try, &c);
  if (st != ST_ERROR && h->ops->del_done && h->ops->del_done(h, c.op, (int)flags) != ST_OK) st = ST_ERROR;
  h->ops->release(h, c.op);
  return mk_int(env, st);
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

/* kvSeq(h, fn, flags) -> [key, value] | 1 (end) | 2 busy | -1 error. fn 0 = first, 1 = next. */
static napi_value KvSeq(napi_env env, napi_callback_info info) {
  NAPI_ARGS(3);
  int64_t fn, flags;
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  if (!arg_int(env, argv[1], &fn) || !arg_int(env, argv[2], &flags)) return NULL;
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY); /* a write batch owns the handle: try again later */
  KvBytes k, v;
  int st = h->ops->seq(h, lock_op(flags, LK_SHARED), (flags & KV_NONBLOCK) != 0, fn == 0, &key_buf, &val_buf, &k, &v);
  if (st != ST_OK) return mk_int(env, st);
  return pair(env, mk_str(env, k.data, k.len), mk_str(env, v.data, v.len));
}

/* ------------------------------------------------------------------ */
/* commit (bulk), sync, close, flags, error, changed                   */
/* ------------------------------------------------------------------ */

/* kvCommit(h) -> 0 | 3 (restart: load everything again) | -1. Bulk LMDB commits; Berkeley DB flushes. */
static napi_value KvCommit(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  if (h->closed) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY); /* a write batch owns the handle: try again later */
  return mk_int(env, h->ops->commit(h));
}

/* kvSync(h) -> 0 | -1: flush to disk (LMDB commits are durable already). */
static napi_value KvSync(napi_env env, napi_callback_info info) {
  NAPI_ARGS(1);
  KvHandle *h = get_handle(env, argv[0], 1);
  if (!h) return NULL;
  if (h->closed || h->broken) return mk_int(env, ST_ERROR);
  if (h->busy) return mk_int(env, ST_BUSY);
  return mk_int(env, h->ops->sync(h));
}

/* Close an idle handle: flushes Berkeley DB. */
static int kv_close_now(KvHandle *h) {
  int rc = h->ops->close(h);
  h->closed = 1;
  return rc;
}

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
  int changed = h->closed ? 0 : kv_file_changed(h->path, &h->open_id, content);
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
  napi_set_named_property(env, o, "lmdb", mk_cstr(env, kv_lmdb_ops.version()));
  napi_set_named_property(env, o, "db", mk_cstr(env, kv_bdb_ops.version()));
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
 */

typedef struct {
  napi_async_work work;
  napi_ref handle_ref;
  napi_ref cb_ref;
  KvHandle *h;
  KvBatchOp *ops;
  size_t n;
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

static void batch_execute(napi_env env, void *data) {
  (void)env;
  Batch *b = data;
  if (b->h->ops->batch(b->h, b->ops, b->n)) b->whole_error = 1;
}

static void batch_complete(napi_env env, napi_status status, void *data) {
  Batch *b = data;
  KvHandle *h = b->h;
  if (status != napi_ok) {
    b->whole_error = 1;
    set_err(h, "%s: write batch cancelled", h->label);
  }
  h->ops->batch_end(h);
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
  if (!b || !(b->ops = calloc(len / 3, sizeof(KvBatchOp)))) {
    free(b);
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  b->h = h;
  for (uint32_t i = 0; i < len / 3; i++) {
    napi_value fv, kv, vv;
    int64_t fl;
    size_t kl, vl;
    KvBatchOp *o = &b->ops[i];
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
  int st = h->ops->acquire(h, LK_EXCL, 1);
  if (st != ST_OK) {
    batch_free(env, b);
    return mk_int(env, st);
  }
  napi_value name;
  if (napi_create_reference(env, argv[0], 1, &b->handle_ref) != napi_ok || napi_create_reference(env, argv[2], 1, &b->cb_ref) != napi_ok ||
      napi_create_string_latin1(env, "proxymapd:kvBatch", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, batch_execute, batch_complete, b, &b->work) != napi_ok ||
      napi_queue_async_work(env, b->work) != napi_ok) {
    h->ops->release(h, LK_EXCL);
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
