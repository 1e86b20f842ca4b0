/*
 * The systemd readiness protocol, sd_notify(3) without libsystemd
 * (src/addon/notify.ts):
 *
 *   notifySend(address, bytes) -> 0 | errno
 *                                    one datagram to $NOTIFY_SOCKET: a socket
 *                                    path, or "@name" for an abstract name
 *
 * Node has no AF_UNIX datagram sockets, hence this file. Each message uses a
 * socket of its own (they are a handful in a daemon's life: ready, reloading,
 * stopping), as systemd's own sd_notify() does; unlike it, no credentials or
 * descriptors are passed, and vsock addresses are not supported.
 */
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <node_api.h>

#include "napi_util.h"

/* Send one datagram to addr (path or @abstract); 0 or errno. */
static int notify_send(const char *addr, size_t addr_len, const void *data, size_t len) {
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  if (addr_len == 0 || (addr[0] != '/' && addr[0] != '@')) return EAFNOSUPPORT;
  if (addr_len > sizeof(sun.sun_path) || (addr[0] == '/' && addr_len == sizeof(sun.sun_path))) return ENAMETOOLONG;
  memcpy(sun.sun_path, addr, addr_len);
  socklen_t sun_len;
  if (addr[0] == '@') {
    sun.sun_path[0] = '\0'; /* abstract: the name is the bytes after the NUL, not terminated */
    sun_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + addr_len);
  } else {
    sun_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + addr_len + 1);
  }
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int err = 0;
  if (sendto(fd, data, len, MSG_NOSIGNAL, (struct sockaddr *)&sun, sun_len) < 0) err = errno;
  close(fd);
  return err;
}

static napi_value NotifySend(napi_env env, napi_callback_info info) {
  NAPI_ARGS_USAGE(2, "notifySend(address, bytes)");
  size_t addr_len = 0;
  if (!js_string_length(env, argv[0], &addr_len)) return NULL;
  char addr[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
  if (addr_len >= sizeof(addr)) return js_int(env, ENAMETOOLONG);
  NAPI_CHECK(env, napi_get_value_string_latin1(env, argv[0], addr, sizeof(addr), &addr_len));
  bool is_buffer = false;
  void *data = NULL;
  size_t len = 0;
  NAPI_CHECK(env, napi_is_buffer(env, argv[1], &is_buffer));
  if (!is_buffer) NAPI_THROW_TYPE(env, "notifySend: bytes must be a Buffer");
  NAPI_CHECK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  return js_int(env, notify_send(addr, addr_len, data, len));
}

int notify_register(napi_env env, napi_value exports) {
  return js_add_fn(env, exports, "notifySend", NotifySend);
}
