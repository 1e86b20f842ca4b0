/*
 * Descriptor plumbing for handing accepted connections to the connection
 * threads (src/server/threads.ts):
 *
 *   dupFd(fd) -> new fd (close-on-exec) | -errno
 *
 * A connection accepted on the main thread is duplicated, its main-thread
 * handle closed, and the duplicate opened as a socket in the thread that
 * serves it. Node has no dup(2), hence this file.
 */
#include <errno.h>
#include <fcntl.h>

#include <node_api.h>

static napi_value DupFd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int32_t fd;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok) {
    napi_throw_type_error(env, NULL, "dupFd: expected a descriptor number");
    return NULL;
  }
  int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (napi_create_int32(env, nfd < 0 ? -errno : nfd, &result) != napi_ok) {
    napi_throw_error(env, NULL, "dupFd: N-API call failed");
    return NULL;
  }
  return result;
}

int fd_register(napi_env env, napi_value exports) {
  napi_value fn;
  return napi_create_function(env, "dupFd", NAPI_AUTO_LENGTH, DupFd, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, "dupFd", fn) == napi_ok;
}
