/* SQLite part of proxymapd_native (native/sqlite.c). */
#ifndef PROXYMAPD_SQLITE_H
#define PROXYMAPD_SQLITE_H

#include <node_api.h>

/* Add the sqlite* functions and the SQLITE constants to exports; 0 on failure (exception may be pending). */
int proxymapd_sqlite_register(napi_env env, napi_value exports);

#endif
