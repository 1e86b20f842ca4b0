/*
 * proxymapd_native: the project's N-API addon. Each file registers its own
 * exports; this one only calls them, in turn, when the module loads.
 *
 * Strings cross the boundary as JS "byte strings" (every char code 0..255,
 * read with napi_get_value_string_latin1) and are handed to C as
 * NUL-terminated strings where the libraries want them, as Postfix does.
 */
#include <node_api.h>

#include "compile_pool.h"
#include "pattern_engines.h"
#include "ruleset.h"
#include "sqlite.h"

/* native/exec_pool.c: rule-set evaluations on the evaluation threads. */
int exec_pool_register(napi_env env, napi_value exports);
/* native/kv.c: LMDB and Berkeley DB files for lmdb:, hash: and btree: tables. */
int kv_register(napi_env env, napi_value exports);
/* native/maillog.c: syslog(3) and the postlog datagram socket. */
int maillog_register(napi_env env, napi_value exports);
/* native/fd.c: dup(2) of accepted connections. */
int fd_register(napi_env env, napi_value exports);
/* native/sockset.c: connected sockets served in batches. */
int sockset_register(napi_env env, napi_value exports);
/* native/cdb.c: cdb lookups with positioned reads. */
int cdb_register(napi_env env, napi_value exports);
/* native/notify.c: sd_notify(3) datagrams to $NOTIFY_SOCKET. */
int notify_register(napi_env env, napi_value exports);

static napi_value Init(napi_env env, napi_value exports) {
  if (!pattern_engines_register(env, exports) || !ruleset_register(env, exports) || !exec_pool_register(env, exports) ||
      !compile_pool_register(env, exports))
    return NULL;
  if (!proxymapd_sqlite_register(env, exports)) return NULL;
  if (!kv_register(env, exports)) return NULL;
  if (!maillog_register(env, exports) || !fd_register(env, exports) || !sockset_register(env, exports) ||
      !cdb_register(env, exports) || !notify_register(env, exports))
    return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
