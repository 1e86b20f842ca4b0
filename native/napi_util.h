/*
 * The N-API helpers every file of the addon uses: a checked call that
 * returns NULL with a pending exception, a type-error throw, argument
 * fetching, and small value makers and getters (number, byte string,
 * property, exported function, string length, external data, typed array).
 */
#ifndef PROXYMAPD_NAPI_UTIL_H
#define PROXYMAPD_NAPI_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <node_api.h>

/* Run an N-API call; on failure throw (unless an exception is already pending) and return NULL. */
#define NAPI_CHECK(env, call)                                                                      \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      const napi_extended_error_info *info_ = NULL;                                                \
      napi_get_last_error_info((env), &info_);                                                     \
      bool pending_ = false;                                                                       \
      napi_is_exception_pending((env), &pending_);                                                 \
      if (!pending_)                                                                               \
        napi_throw_error((env), NULL, info_ && info_->error_message ? info_->error_message : "N-API call failed"); \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

/* Throw a TypeError and return NULL. */
#define NAPI_THROW_TYPE(env, msg)                \
  do {                                           \
    napi_throw_type_error((env), NULL, (msg));   \
    return NULL;                                 \
  } while (0)

/* Declare argc/argv with the callback's first n arguments; a TypeError(usage) when fewer were passed. */
#define NAPI_ARGS_USAGE(n, usage)                                                    \
  size_t argc = (n);                                                                 \
  napi_value argv[(n) > 0 ? (n) : 1];                                                \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;  \
  if (argc < (n)) {                                                                  \
    napi_throw_type_error(env, NULL, (usage));                                       \
    return NULL;                                                                     \
  }

/* Declare argc/argv with the callback's first n arguments; a TypeError when fewer were passed. */
#define NAPI_ARGS(n) NAPI_ARGS_USAGE(n, "missing arguments")

/* A JS number for n; NULL on failure. */
static inline napi_value js_int(napi_env env, int64_t n) {
  napi_value v;
  if (napi_create_int64(env, n, &v) != napi_ok) return NULL;
  return v;
}

/* A JS byte string (latin1) for a NUL-terminated C string; NULL on failure. */
static inline napi_value js_latin1(napi_env env, const char *text) {
  napi_value v;
  if (napi_create_string_latin1(env, text, NAPI_AUTO_LENGTH, &v) != napi_ok) return NULL;
  return v;
}

/* obj[name] = v; 0 when v is NULL (a failed js_* call) or the store fails. */
static inline int js_set_prop(napi_env env, napi_value obj, const char *name, napi_value v) {
  return v != NULL && napi_set_named_property(env, obj, name, v) == napi_ok;
}

/* exports[name] = a function calling cb; 0 on failure. */
static inline int js_add_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, name, fn) == napi_ok;
}

/* The length in bytes (latin1) of a JS string; 0 with a TypeError / Error pending when v is none or unreadable. */
static inline int js_string_length(napi_env env, napi_value v, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_string) {
    napi_throw_type_error(env, NULL, "expected a string");
    return 0;
  }
  if (napi_get_value_string_latin1(env, v, NULL, 0, len) != napi_ok) {
    napi_throw_error(env, NULL, "cannot read string");
    return 0;
  }
  return 1;
}

/* The data of an external value; NULL (no exception) when v is not one. */
static inline void *js_external_data(napi_env env, napi_value v) {
  napi_valuetype t;
  void *data = NULL;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok) return NULL;
  return data;
}

/* The elements of a typed array of the given type (*data, *len); 0 with a TypeError(msg) when v is none. */
static inline int js_typed_array(napi_env env, napi_value v, napi_typedarray_type type, void **data, size_t *len, const char *msg) {
  bool is_ta = false;
  napi_typedarray_type got;
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &got, len, data, NULL, NULL) != napi_ok || got != type) {
    napi_throw_type_error(env, NULL, msg);
    return 0;
  }
  return 1;
}

#endif
