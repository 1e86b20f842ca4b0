/*
 * proxymapd_native, SQLite part: the system libsqlite3 (the library Postfix's
 * sqlite: tables link), exposed to Node through N-API for sqlite: tables.
 *
 *  - sqliteOpen(path, busyTimeoutMs) opens a database read-only (never
 *    creates it) and installs a busy timeout.
 *  - sqliteQuery(handle, sql) prepares the first statement of `sql`, steps
 *    it to the end and collects every row, all OFF the main thread (an
 *    napi_async_work on the libuv thread pool), so a slow or locked
 *    database never stalls the event loop. The promise resolves (it never
 *    rejects for database errors) with { rows, error? }.
 *  - sqliteClose(handle) closes at once, or as soon as a running query is
 *    done; a handle the garbage collector finds is closed the same way.
 *  - sqliteExec(path, sql) runs an SQL script on a database it creates if
 *    needed, synchronously: for tools and tests (building example
 *    databases), never for serving lookups.
 *
 * Strings cross the boundary as JS byte strings (char codes 0..255):
 * queries go to SQLite as those bytes, column values come back as the
 * bytes sqlite3_column_text() gives (sqlite3_column_bytes() long).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <node_api.h>

#include "napi_util.h"
#include <sqlite3.h>

#include "sqlite.h"

/* ------------------------------------------------------------------ */
/* Small helpers                                                      */
/* ------------------------------------------------------------------ */



/* A JS byte string as a malloc'd NUL-terminated C string (NULL + exception on error). */
static char *sq_get_bytes(napi_env env, napi_value v) {
  size_t len = 0, copied = 0;
  if (!js_string_length(env, v, &len)) return NULL;
  char *buf = malloc(len + 1);
  if (buf == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (napi_get_value_string_latin1(env, v, buf, len + 1, &copied) != napi_ok) {
    free(buf);
    napi_throw_error(env, NULL, "cannot read string");
    return NULL;
  }
  buf[copied] = 0;
  return buf;
}

static napi_value sq_string(napi_env env, const char *text, size_t len) {
  napi_value v;
  if (napi_create_string_latin1(env, text, len, &v) != napi_ok) return NULL;
  return v;
}

static int sq_set(napi_env env, napi_value obj, const char *name, napi_value v) {
  return v != NULL && napi_set_named_property(env, obj, name, v) == napi_ok;
}

static int sq_set_int(napi_env env, napi_value obj, const char *name, int64_t n) {
  napi_value v;
  return napi_create_int64(env, n, &v) == napi_ok && napi_set_named_property(env, obj, name, v) == napi_ok;
}

static char *sq_strdup(const char *s) {
  size_t n = strlen(s);
  char *p = malloc(n + 1);
  if (p) memcpy(p, s, n + 1);
  return p;
}

/* { error, code } for an SQLite failure. */
static napi_value sq_error_object(napi_env env, const char *message, int code) {
  napi_value obj;
  NAPI_CHECK(env, napi_create_object(env, &obj));
  if (!sq_set(env, obj, "error", sq_string(env, message, NAPI_AUTO_LENGTH)) || !sq_set_int(env, obj, "code", code))
    return NULL;
  return obj;
}

/* ------------------------------------------------------------------ */
/* Connections                                                         */
/* ------------------------------------------------------------------ */

#define SQ_MAGIC 0x53514c33u /* "SQL3" */

typedef struct {
  uint32_t magic;
  sqlite3 *db;
  int inflight; /* queries queued or running on the thread pool */
  int closing;  /* close asked for: done when inflight drops to 0 */
} SqConn;

static void conn_close_now(SqConn *c) {
  if (c->db != NULL) {
    /* sqlite3_close_v2: a zombie until any statement is finalized (there is none left). */
    sqlite3_close_v2(c->db);
    c->db = NULL;
  }
}

/* Garbage collector: the handle is gone, so no query can be running (each one holds a reference). */
static void conn_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  SqConn *c = data;
  conn_close_now(c);
  c->magic = 0;
  free(c);
}

static SqConn *get_conn(napi_env env, napi_value v) {
  napi_valuetype t;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok ||
      data == NULL || ((SqConn *)data)->magic != SQ_MAGIC) {
    napi_throw_type_error(env, NULL, "expected an sqlite handle");
    return NULL;
  }
  return data;
}

/*
 * sqliteOpen(path, busyTimeoutMs[, writable]) -> { handle } | { error, code }.
 * Read-only unless writable is true (then read-write; a missing database is never created).
 */
static napi_value SqliteOpen(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "sqliteOpen(path, busyTimeoutMs[, writable])");
  int32_t busy_ms;
  if (napi_get_value_int32(env, argv[1], &busy_ms) != napi_ok) NAPI_THROW_TYPE(env, "busyTimeoutMs must be a number");
  bool writable = false;
  if (argc >= 3 && napi_get_value_bool(env, argv[2], &writable) != napi_ok) NAPI_THROW_TYPE(env, "writable must be a boolean");
  char *path = sq_get_bytes(env, argv[0]);
  if (path == NULL) return NULL;

  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, writable ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY, NULL);
  free(path);
  if (rc != SQLITE_OK) {
    /* The message of a failed open lives in the (unusable) handle, or is the code's text. */
    char *msg = sq_strdup(db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close_v2(db);
    napi_value err = sq_error_object(env, msg != NULL ? msg : "out of memory", rc);
    free(msg);
    return err;
  }
  sqlite3_extended_result_codes(db, 0);
  if (busy_ms > 0) sqlite3_busy_timeout(db, busy_ms);

  SqConn *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    sqlite3_close_v2(db);
    NAPI_THROW_TYPE(env, "out of memory");
  }
  c->magic = SQ_MAGIC;
  c->db = db;
  napi_value handle, result;
  if (napi_create_external(env, c, conn_finalize, NULL, &handle) != napi_ok) {
    conn_close_now(c);
    free(c);
    NAPI_THROW_TYPE(env, "cannot create handle");
  }
  NAPI_CHECK(env, napi_create_object(env, &result));
  if (!sq_set(env, result, "handle", handle)) return NULL;
  return result;
}

/* sqliteClose(handle): close now, or after the queries still running. */
static napi_value SqliteClose(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) NAPI_THROW_TYPE(env, "sqliteClose(handle)");
  SqConn *c = get_conn(env, argv[0]);
  if (c == NULL) return NULL;
  c->closing = 1;
  if (c->inflight == 0) conn_close_now(c);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Queries on the thread pool                                          */
/* ------------------------------------------------------------------ */

/* One column value: len < 0 means SQL NULL. */
typedef struct {
  char *data;
  int64_t len;
} SqValue;

typedef struct {
  SqValue *values;
  int ncols;
} SqRow;

enum { STAGE_NONE = 0, STAGE_PREPARE = 1, STAGE_STEP = 2, STAGE_CLOSED = 3, STAGE_NOMEM = 4 };

typedef struct {
  SqConn *conn;
  napi_ref conn_ref; /* keeps the handle (and the connection) alive while the work runs */
  napi_async_work work;
  napi_deferred deferred;
  char *sql;
  /* results */
  SqRow *rows;
  size_t nrows, cap;
  int stage; /* where it failed (STAGE_NONE: it did not) */
  int code;
  char *message;
  char *tail; /* text after the first statement, if any */
  int64_t changes; /* rows the statement inserted, updated or deleted (sqlite3_changes64; 0 for a read-only one) */
} SqQuery;

static void query_free(SqQuery *q) {
  for (size_t i = 0; i < q->nrows; i++) {
    for (int j = 0; j < q->rows[i].ncols; j++) free(q->rows[i].values[j].data);
    free(q->rows[i].values);
  }
  free(q->rows);
  free(q->sql);
  free(q->message);
  free(q->tail);
  free(q);
}

static void query_fail(SqQuery *q, int stage, int code, const char *message) {
  q->stage = stage;
  q->code = code;
  free(q->message);
  q->message = sq_strdup(message != NULL ? message : "");
}

/* Copy the current row of stmt; 0 when out of memory. */
static int query_add_row(SqQuery *q, sqlite3_stmt *stmt) {
  if (q->nrows == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 16;
    SqRow *rows = realloc(q->rows, cap * sizeof(*rows));
    if (rows == NULL) return 0;
    q->rows = rows;
    q->cap = cap;
  }
  int ncols = sqlite3_column_count(stmt);
  SqRow *row = &q->rows[q->nrows];
  row->ncols = 0;
  row->values = ncols > 0 ? calloc((size_t)ncols, sizeof(SqValue)) : NULL;
  if (ncols > 0 && row->values == NULL) return 0;
  q->nrows++;
  for (int j = 0; j < ncols; j++) {
    /* The text form, as Postfix reads its column: sqlite3_column_text(), then its byte count. */
    const unsigned char *text = sqlite3_column_text(stmt, j);
    SqValue *v = &row->values[j];
    row->ncols = j + 1;
    if (text == NULL) {
      v->data = NULL;
      v->len = -1;
      continue;
    }
    int len = sqlite3_column_bytes(stmt, j);
    v->data = malloc((size_t)len + 1);
    if (v->data == NULL) return 0;
    memcpy(v->data, text, (size_t)len);
    v->data[len] = 0;
    v->len = len;
  }
  return 1;
}

static void query_execute(napi_env env, void *data) {
  (void)env;
  SqQuery *q = data;
  sqlite3 *db = q->conn->db;
  if (db == NULL) {
    query_fail(q, STAGE_CLOSED, SQLITE_MISUSE, "database is closed");
    return;
  }
  /* One statement at a time per connection, and its error message read before anyone else's. */
  sqlite3_mutex *mutex = sqlite3_db_mutex(db);
  if (mutex) sqlite3_mutex_enter(mutex);

  sqlite3_stmt *stmt = NULL;
  const char *tail = NULL;
  int rc = sqlite3_prepare_v2(db, q->sql, -1, &stmt, &tail);
  if (rc != SQLITE_OK) {
    query_fail(q, STAGE_PREPARE, rc, sqlite3_errmsg(db));
  } else {
    if (tail != NULL && *tail != 0) q->tail = sq_strdup(tail);
    /*
     * Step to the end. An empty statement (only a comment, say) gives no
     * statement; stepping it fails the way it fails for Postfix.
     */
    for (;;) {
      rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) {
        if (!sqlite3_stmt_readonly(stmt)) q->changes = sqlite3_changes64(db);
        break;
      }
      if (rc == SQLITE_ROW) {
        if (!query_add_row(q, stmt)) {
          query_fail(q, STAGE_NOMEM, SQLITE_NOMEM, "out of memory");
          break;
        }
        continue;
      }
      query_fail(q, STAGE_STEP, rc, sqlite3_errmsg(db));
      break;
    }
    sqlite3_finalize(stmt);
  }
  if (mutex) sqlite3_mutex_leave(mutex);
}

static napi_value query_result(napi_env env, SqQuery *q) {
  napi_value result, rows;
  NAPI_CHECK(env, napi_create_object(env, &result));
  NAPI_CHECK(env, napi_create_array_with_length(env, q->nrows, &rows));
  for (size_t i = 0; i < q->nrows; i++) {
    napi_value row;
    NAPI_CHECK(env, napi_create_array_with_length(env, (size_t)q->rows[i].ncols, &row));
    for (int j = 0; j < q->rows[i].ncols; j++) {
      SqValue *v = &q->rows[i].values[j];
      napi_value cell;
      if (v->len < 0)
        NAPI_CHECK(env, napi_get_null(env, &cell));
      else
        NAPI_CHECK(env, napi_create_string_latin1(env, v->data, (size_t)v->len, &cell));
      NAPI_CHECK(env, napi_set_element(env, row, (uint32_t)j, cell));
    }
    NAPI_CHECK(env, napi_set_element(env, rows, (uint32_t)i, row));
  }
  if (!sq_set(env, result, "rows", rows) || !sq_set_int(env, result, "changes", q->changes)) return NULL;
  if (q->tail != NULL && !sq_set(env, result, "tail", sq_string(env, q->tail, NAPI_AUTO_LENGTH))) return NULL;
  if (q->stage != STAGE_NONE) {
    static const char *stages[] = {"", "prepare", "step", "closed", "nomem"};
    napi_value err;
    NAPI_CHECK(env, napi_create_object(env, &err));
    if (!sq_set(env, err, "stage", sq_string(env, stages[q->stage], NAPI_AUTO_LENGTH)) ||
        !sq_set(env, err, "message", sq_string(env, q->message ? q->message : "", NAPI_AUTO_LENGTH)) ||
        !sq_set_int(env, err, "code", q->code) || !sq_set(env, result, "error", err))
      return NULL;
  }
  return result;
}

static void query_complete(napi_env env, napi_status status, void *data) {
  SqQuery *q = data;
  SqConn *c = q->conn;
  if (--c->inflight == 0 && c->closing) conn_close_now(c);

  napi_handle_scope scope;
  int scoped = napi_open_handle_scope(env, &scope) == napi_ok;
  napi_value value = NULL;
  if (status == napi_ok) value = query_result(env, q);
  if (value == NULL) {
    /* Out of memory building the answer, or the work was cancelled: report it as a step failure. */
    bool pending = false;
    napi_value exc;
    if (napi_is_exception_pending(env, &pending) == napi_ok && pending) napi_get_and_clear_last_exception(env, &exc);
    napi_value err, rows;
    if (napi_create_object(env, &value) == napi_ok && napi_create_array(env, &rows) == napi_ok &&
        napi_create_object(env, &err) == napi_ok) {
      sq_set(env, value, "rows", rows);
      sq_set(env, err, "stage", sq_string(env, "nomem", NAPI_AUTO_LENGTH));
      sq_set(env, err, "message", sq_string(env, "out of memory", NAPI_AUTO_LENGTH));
      sq_set_int(env, err, "code", SQLITE_NOMEM);
      sq_set(env, value, "error", err);
    }
  }
  if (value != NULL)
    napi_resolve_deferred(env, q->deferred, value);
  else {
    napi_value undef;
    napi_get_undefined(env, &undef);
    napi_reject_deferred(env, q->deferred, undef);
  }
  if (scoped) napi_close_handle_scope(env, scope);
  napi_delete_async_work(env, q->work);
  napi_delete_reference(env, q->conn_ref);
  query_free(q);
}

/* sqliteQuery(handle, sql) -> Promise<{ rows, tail?, error?: { stage, message, code } }> */
static napi_value SqliteQuery(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "sqliteQuery(handle, sql)");
  SqConn *c = get_conn(env, argv[0]);
  if (c == NULL) return NULL;
  if (c->closing || c->db == NULL) {
    napi_throw_error(env, NULL, "sqlite handle is closed");
    return NULL;
  }
  SqQuery *q = calloc(1, sizeof(*q));
  if (q == NULL) NAPI_THROW_TYPE(env, "out of memory");
  q->conn = c;
  q->sql = sq_get_bytes(env, argv[1]);
  if (q->sql == NULL) {
    free(q);
    return NULL;
  }
  napi_value promise, name;
  if (napi_create_reference(env, argv[0], 1, &q->conn_ref) != napi_ok ||
      napi_create_promise(env, &q->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, "proxymapd:sqliteQuery", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, query_execute, query_complete, q, &q->work) != napi_ok) {
    if (q->conn_ref) napi_delete_reference(env, q->conn_ref);
    query_free(q);
    NAPI_THROW_TYPE(env, "cannot start query");
  }
  if (napi_queue_async_work(env, q->work) != napi_ok) {
    napi_delete_async_work(env, q->work);
    napi_delete_reference(env, q->conn_ref);
    query_free(q);
    NAPI_THROW_TYPE(env, "cannot queue query");
  }
  c->inflight++;
  return promise;
}

/* ------------------------------------------------------------------ */
/* Tools                                                               */
/* ------------------------------------------------------------------ */

/* sqliteExec(path, sql) -> null | { error, code }: run a script on a database created if missing. */
static napi_value SqliteExec(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) NAPI_THROW_TYPE(env, "sqliteExec(path, sql)");
  char *path = sq_get_bytes(env, argv[0]);
  if (path == NULL) return NULL;
  char *sql = sq_get_bytes(env, argv[1]);
  if (sql == NULL) {
    free(path);
    return NULL;
  }
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
  free(path);
  napi_value result = NULL;
  if (rc != SQLITE_OK) {
    result = sq_error_object(env, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(rc), rc);
  } else {
    sqlite3_busy_timeout(db, 5000);
    char *errmsg = NULL;
    rc = sqlite3_exec(db, sql, NULL, NULL, &errmsg);
    if (rc != SQLITE_OK)
      result = sq_error_object(env, errmsg != NULL ? errmsg : sqlite3_errstr(rc), rc);
    else
      napi_get_null(env, &result);
    sqlite3_free(errmsg);
  }
  free(sql);
  sqlite3_close_v2(db);
  return result;
}

/* ------------------------------------------------------------------ */
/* Registration                                                        */
/* ------------------------------------------------------------------ */

static int sq_add_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, name, fn) == napi_ok;
}

int proxymapd_sqlite_register(napi_env env, napi_value exports) {
  napi_value consts;
  if (napi_create_object(env, &consts) != napi_ok) return 0;
  if (!sq_set(env, consts, "VERSION", sq_string(env, sqlite3_libversion(), NAPI_AUTO_LENGTH)) ||
      !sq_set_int(env, consts, "VERSION_NUMBER", sqlite3_libversion_number()) ||
      !sq_set_int(env, consts, "BUSY", SQLITE_BUSY) || !sq_set_int(env, consts, "LOCKED", SQLITE_LOCKED) ||
      !sq_set_int(env, consts, "CANTOPEN", SQLITE_CANTOPEN) || !sq_set_int(env, consts, "NOMEM", SQLITE_NOMEM) ||
      napi_set_named_property(env, exports, "SQLITE", consts) != napi_ok)
    return 0;
  return sq_add_fn(env, exports, "sqliteOpen", SqliteOpen) && sq_add_fn(env, exports, "sqliteQuery", SqliteQuery) &&
         sq_add_fn(env, exports, "sqliteClose", SqliteClose) && sq_add_fn(env, exports, "sqliteExec", SqliteExec);
}
