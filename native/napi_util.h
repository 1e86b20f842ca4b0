/*
 * The N-API helpers every file of the addon uses: a checked call that
 * returns NULL with a pending exception, a type-error throw, and argument
 * fetching.
 */
#ifndef PROXYMAPD_NAPI_UTIL_H
#define PROXYMAPD_NAPI_UTIL_H

#include <stdbool.h>
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

/* Declare argc/argv with the callback's first n arguments; a TypeError when fewer were passed. */
#define NAPI_ARGS(n)                                                                 \
  size_t argc = (n);                                                                 \
  napi_value argv[(n) > 0 ? (n) : 1];                                                \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;  \
  if (argc < (n)) {                                                                  \
    napi_throw_type_error(env, NULL, "missing arguments");                           \
    return NULL;                                                                     \
  }

#endif
