{
  "targets": [
    {
      "target_name": "proxymapd_native",
      "sources": ["native/addon_init.c", "native/pattern_engines.c", "native/ruleset.c", "native/exec_pool.c", "native/compile_pool.c", "native/sqlite.c", "native/kv.c", "native/kv_lmdb.c", "native/kv_bdb.c", "native/kv_file.c", "native/maillog.c", "native/patscan.c", "native/fd.c", "native/sockset.c", "native/cdb.c", "native/notify.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "libraries": ["-lpcre2-8", "-lsqlite3", "-llmdb", "-ldb"]
    }
  ]
}
