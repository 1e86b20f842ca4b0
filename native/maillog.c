/*
 * Logging where Postfix daemons log (src/addon/maillog.ts):
 *
 *   syslogOpen(ident, facility)      openlog(ident, LOG_PID | LOG_NDELAY, facility)
 *   syslogWrite(priority, text)      syslog(priority, "%s", text)
 *   setsid() -> 0 | errno
 *   dgramSend(path, bytes) -> 0 | errno
 *                                    one datagram on an AF_UNIX SOCK_DGRAM socket
 *                                    connected to path (the postlog service)
 *
 * Node has no AF_UNIX datagram sockets and no syslog(3), hence this file.
 * The datagram socket is connected once and kept; a failed send closes it,
 * and the next send connects again (the postlog service may be restarted).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <node_api.h>

#include "napi_util.h"


static char *ident_copy = NULL; /* openlog() keeps the pointer */
static int dgram_fd = -1;
static char dgram_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

/* A JS string argument as a malloc'ed UTF-8 C string (caller frees), or NULL after throwing. */
static char *get_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a string");
    return NULL;
  }
  char *s = malloc(len + 1);
  if (!s) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  if (napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    napi_throw_type_error(env, NULL, "expected a string");
    return NULL;
  }
  return s;
}

static napi_value SyslogOpen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "syslogOpen(ident, facility)");
    return NULL;
  }
  char *ident = get_string(env, argv[0]);
  if (!ident) return NULL;
  int32_t facility = 0;
  if (napi_get_value_int32(env, argv[1], &facility) != napi_ok) {
    free(ident);
    napi_throw_type_error(env, NULL, "facility must be a number");
    return NULL;
  }
  closelog();
  free(ident_copy);
  ident_copy = ident;
  openlog(ident_copy, LOG_PID | LOG_NDELAY, facility);
  return NULL;
}

static napi_value SyslogWrite(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "syslogWrite(priority, text)");
    return NULL;
  }
  int32_t priority = 0;
  if (napi_get_value_int32(env, argv[0], &priority) != napi_ok) {
    napi_throw_type_error(env, NULL, "priority must be a number");
    return NULL;
  }
  char *text = get_string(env, argv[1]);
  if (!text) return NULL;
  syslog(priority, "%s", text);
  free(text);
  return NULL;
}

static int dgram_connect(const char *path) {
  struct sockaddr_un sun;
  memset(&sun, 0, sizeof(sun));
  sun.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(sun.sun_path)) return ENAMETOOLONG;
  strcpy(sun.sun_path, path);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
    int err = errno;
    close(fd);
    return err;
  }
  dgram_fd = fd;
  strcpy(dgram_path, path);
  return 0;
}

static napi_value DgramSend(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) {
    napi_throw_type_error(env, NULL, "dgramSend(path, bytes)");
    return NULL;
  }
  char *path = get_string(env, argv[0]);
  if (!path) return NULL;
  bool is_buffer = false;
  void *data = NULL;
  size_t len = 0;
  NAPI_CHECK(env, napi_is_buffer(env, argv[1], &is_buffer));
  if (!is_buffer) {
    free(path);
    napi_throw_type_error(env, NULL, "bytes must be a Buffer");
    return NULL;
  }
  NAPI_CHECK(env, napi_get_buffer_info(env, argv[1], &data, &len));
  int err = 0;
  if (dgram_fd >= 0 && strcmp(path, dgram_path) != 0) {
    close(dgram_fd);
    dgram_fd = -1;
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    if (dgram_fd < 0 && (err = dgram_connect(path)) != 0) break;
    if (send(dgram_fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
      err = 0;
      break;
    }
    err = errno;
    close(dgram_fd); /* the service may have been restarted: connect again once */
    dgram_fd = -1;
  }
  free(path);
  napi_value result;
  NAPI_CHECK(env, napi_create_int32(env, err, &result));
  return result;
}

/* setsid() -> 0 | errno: proxywrite leaves master's process group, as Postfix's does. */
static napi_value Setsid(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result;
  NAPI_CHECK(env, napi_create_int32(env, setsid() < 0 ? errno : 0, &result));
  return result;
}

static int add(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  return napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, name, fn) == napi_ok;
}

int maillog_register(napi_env env, napi_value exports) {
  return add(env, exports, "syslogOpen", SyslogOpen) && add(env, exports, "syslogWrite", SyslogWrite) &&
         add(env, exports, "dgramSend", DgramSend) && add(env, exports, "setsid", Setsid);
}
