/*
 * A set of connected stream sockets served in batches (src/server/sockset.ts).
 *
 * Node gives every socket its own libuv handle, a stream object and, per
 * read and per write, a Buffer or write request and several callbacks; for
 * proxymap's small request/reply records that machinery costs more than the
 * lookup. Here one epoll descriptor holds all the connections of a server
 * thread and is watched by one uv_poll handle: when it is readable, every
 * ready socket is read and the bytes of all of them reach JavaScript in one
 * call; replies are written with one write(2) each, straight from the call
 * that produces them. Protocol decoding, request handling and deadlines stay
 * in TypeScript; this file only moves bytes.
 *
 *   sockSetCreate(onEvents) -> set
 *       onEvents(events): a flat array [id, kind, payload, ...] per batch:
 *       kind 0 data (payload: the bytes as a latin1 string), 1 end of input,
 *       2 error (payload: errno), 3 drain (queued output written),
 *       4 closed (after sockSetEnd, once the output is written)
 *   sockSetAdd(set, fd) -> id | -errno     takes the descriptor over (non-blocking)
 *   sockSetWrite(set, id, bytes) -> 1 written | 0 queued (drain follows) | -errno
 *   sockSetPause(set, id, paused)          stop / start reading
 *   sockSetEnd(set, id)                    close once queued output is written
 *   sockSetClose(set, id)                  close now, dropping queued output
 *   sockSetDestroy(set)                    close everything
 *   loopSpin(usec) -> 1 | 0 | -errno        busy-wait until the event loop has an event
 *       ready (1) or usec have passed (0), without running it: the busy poll of
 *       src/server/server.ts, one system call per turn instead of a turn of
 *       the event loop and an Immediate object per turn
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include <node_api.h>

#include "napi_util.h"
#include <uv.h>

#define READ_CHUNK 65536
#define MAX_EVENTS 256
/* bytes read from one socket per batch before the others get their turn (level-triggered: the rest comes next) */
#define READ_BUDGET (4 * READ_CHUNK)

enum { EV_DATA = 0, EV_END = 1, EV_ERROR = 2, EV_DRAIN = 3, EV_CLOSED = 4 };

typedef struct {
  int fd; /* -1: free slot */
  char *out;
  size_t out_len, out_off, out_cap;
  int paused, ending, eof;
  uint32_t events; /* registered epoll events */
} conn_t;

typedef struct {
  napi_env env;
  napi_ref callback;
  napi_async_context actx;
  napi_ref resource;
  uv_poll_t poll;
  int epfd;
  int destroyed;
  int owners; /* the external and the poll handle */
  conn_t *conns;
  int nconns;
  int *free_ids;
  int nfree;
  int active; /* open connections: the poll handle keeps the event loop alive only while there are some */
  char *rbuf;
  char *scratch;
  size_t scratch_cap;
} sockset_t;


/*
 * Register what the connection waits for. A connection that waits for
 * nothing (paused, or input ended, and no output queued) is taken out of the
 * epoll set: epoll reports a hang-up whatever the mask, and a paused
 * connection must not be reported again and again.
 */
static int set_events(sockset_t *s, conn_t *c, int id) {
  uint32_t ev = (c->paused || c->eof || c->ending ? 0 : EPOLLIN) | (c->out_len > c->out_off ? EPOLLOUT : 0);
  if (ev == c->events) return 0;
  struct epoll_event e = {.events = ev, .data = {.u32 = (uint32_t)id}};
  int op = ev == 0 ? EPOLL_CTL_DEL : c->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(s->epfd, op, c->fd, &e) < 0) return -errno;
  c->events = ev;
  return 0;
}

static void conn_close(sockset_t *s, int id) {
  conn_t *c = &s->conns[id];
  if (c->fd < 0) return;
  if (c->events != 0) epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  if (--s->active == 0 && !s->destroyed) uv_unref((uv_handle_t *)&s->poll);
  c->fd = -1;
  free(c->out);
  c->out = NULL;
  c->out_len = c->out_off = c->out_cap = 0;
  s->free_ids[s->nfree++] = id;
}

/* Write queued output; 1 when all is written, 0 when some is left, -errno on error. */
static int flush(conn_t *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -errno;
    }
    c->out_off += (size_t)n;
  }
  c->out_off = c->out_len = 0;
  return 1;
}

/* events array being built */
typedef struct {
  napi_value arr;
  uint32_t n;
} batch_t;

static int push3(napi_env env, batch_t *b, int id, int kind, napi_value payload) {
  napi_value v;
  if (napi_create_int32(env, id, &v) != napi_ok || napi_set_element(env, b->arr, b->n++, v) != napi_ok) return 0;
  if (napi_create_int32(env, kind, &v) != napi_ok || napi_set_element(env, b->arr, b->n++, v) != napi_ok) return 0;
  if (payload == NULL && napi_get_undefined(env, &payload) != napi_ok) return 0;
  return napi_set_element(env, b->arr, b->n++, payload) == napi_ok;
}

static void on_poll(uv_poll_t *h, int status, int events) {
  sockset_t *s = h->data;
  if (s->destroyed) return;
  napi_env env = s->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  batch_t b = {NULL, 0};
  struct epoll_event evs[MAX_EVENTS];
  int n;
  if (napi_create_array(env, &b.arr) != napi_ok) goto out;
  do {
    n = epoll_wait(s->epfd, evs, MAX_EVENTS, 0);
  } while (n < 0 && errno == EINTR);
  for (int i = 0; i < n; i++) {
    int id = (int)evs[i].data.u32;
    if (id < 0 || id >= s->nconns) continue;
    conn_t *c = &s->conns[id];
    if (c->fd < 0) continue;
    if (evs[i].events & EPOLLOUT) {
      int r = flush(c);
      if (r < 0) {
        napi_value e;
        napi_create_int32(env, -r, &e);
        push3(env, &b, id, EV_ERROR, e);
        conn_close(s, id);
        continue;
      }
      if (r == 1) {
        if (c->ending) {
          conn_close(s, id);
          push3(env, &b, id, EV_CLOSED, NULL);
          continue;
        }
        push3(env, &b, id, EV_DRAIN, NULL);
      }
      set_events(s, c, id);
    }
    if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) || c->paused || c->eof || c->ending) continue;
    size_t budget = READ_BUDGET;
    for (;;) {
      ssize_t r = read(c->fd, s->rbuf, READ_CHUNK);
      if (r > 0) {
        napi_value str;
        if (napi_create_string_latin1(env, s->rbuf, (size_t)r, &str) != napi_ok) break;
        push3(env, &b, id, EV_DATA, str);
        if ((size_t)r < READ_CHUNK || (budget -= (size_t)r) == 0 || budget > READ_BUDGET) break;
        continue;
      }
      if (r == 0) {
        c->eof = 1;
        set_events(s, c, id);
        push3(env, &b, id, EV_END, NULL);
        break;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        napi_value e;
        napi_create_int32(env, errno, &e);
        push3(env, &b, id, EV_ERROR, e);
        conn_close(s, id);
      }
      break;
    }
  }
  if (b.n > 0) {
    napi_value cb, argv[1] = {b.arr}, result;
    napi_value resource;
    if (napi_get_reference_value(env, s->callback, &cb) == napi_ok && napi_get_reference_value(env, s->resource, &resource) == napi_ok) {
      /* make_callback: microtasks and nextTicks run when it returns, as after any I/O callback */
      if (napi_make_callback(env, s->actx, resource, cb, 1, argv, &result) != napi_ok) {
        bool pending = false;
        napi_is_exception_pending(env, &pending);
        if (pending) {
          napi_value exc;
          napi_get_and_clear_last_exception(env, &exc);
          napi_fatal_exception(env, exc);
        }
      }
    }
  }
out:
  napi_close_handle_scope(env, scope);
}

/* The set is freed once both its JavaScript handle was collected and its libuv handle closed. */
static void release(sockset_t *s) {
  if (--s->owners > 0) return;
  free(s->conns);
  free(s->free_ids);
  free(s->rbuf);
  free(s->scratch);
  free(s);
}

static void on_poll_closed(uv_handle_t *h) {
  release(h->data);
}

static void set_destroy(sockset_t *s) {
  if (s->destroyed) return;
  s->destroyed = 1;
  for (int i = 0; i < s->nconns; i++) conn_close(s, i);
  uv_poll_stop(&s->poll);
  close(s->epfd);
  napi_delete_reference(s->env, s->callback);
  napi_delete_reference(s->env, s->resource);
  napi_async_destroy(s->env, s->actx);
  uv_close((uv_handle_t *)&s->poll, on_poll_closed);
}

static void finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  set_destroy(data);
  release(data);
}

static sockset_t *get_set(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || p == NULL) {
    napi_throw_type_error(env, NULL, "sockset: expected a socket set");
    return NULL;
  }
  sockset_t *s = p;
  if (s->destroyed) {
    napi_throw_error(env, NULL, "sockset: destroyed");
    return NULL;
  }
  return s;
}

static napi_value Create(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], ext, name, resource;
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t;
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "sockSetCreate: expected a callback");
    return NULL;
  }
  struct uv_loop_s *loop;
  NAPI_CHECK(env, napi_get_uv_event_loop(env, &loop));
  sockset_t *s = calloc(1, sizeof(*s));
  if (!s || !(s->rbuf = malloc(READ_CHUNK))) {
    free(s);
    napi_throw_error(env, NULL, "sockSetCreate: out of memory");
    return NULL;
  }
  s->env = env;
  s->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (s->epfd < 0 || uv_poll_init(loop, &s->poll, s->epfd) != 0) {
    int e = errno;
    if (s->epfd >= 0) close(s->epfd);
    free(s->rbuf);
    free(s);
    napi_throw_error(env, NULL, strerror(e));
    return NULL;
  }
  s->poll.data = s;
  s->owners = 2;
  NAPI_CHECK(env, napi_create_reference(env, argv[0], 1, &s->callback));
  NAPI_CHECK(env, napi_create_object(env, &resource));
  NAPI_CHECK(env, napi_create_reference(env, resource, 1, &s->resource));
  NAPI_CHECK(env, napi_create_string_utf8(env, "proxymapd:sockset", NAPI_AUTO_LENGTH, &name));
  NAPI_CHECK(env, napi_async_init(env, resource, name, &s->actx));
  uv_poll_start(&s->poll, UV_READABLE, on_poll);
  uv_unref((uv_handle_t *)&s->poll);
  NAPI_CHECK(env, napi_create_external(env, s, finalize, NULL, &ext));
  return ext;
}

static int int_arg(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "sockset: expected an integer");
    return 0;
  }
  return 1;
}

static napi_value ret_int(napi_env env, int v) {
  napi_value r;
  NAPI_CHECK(env, napi_create_int32(env, v, &r));
  return r;
}

static conn_t *get_conn(sockset_t *s, int32_t id) {
  if (id < 0 || id >= s->nconns || s->conns[id].fd < 0) return NULL;
  return &s->conns[id];
}

/* The call's arguments: the set, an integer (a connection id or a descriptor), and want - 2 more; NULL after throwing. */
static sockset_t *set_and_int(napi_env env, napi_callback_info info, size_t want, napi_value *argv, int32_t *n) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < want) {
    napi_throw_type_error(env, NULL, "sockset: missing arguments");
    return NULL;
  }
  sockset_t *s = get_set(env, argv[0]);
  return s && int_arg(env, argv[1], n) ? s : NULL;
}

static napi_value Add(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t fd;
  sockset_t *s = set_and_int(env, info, 2, argv, &fd);
  if (!s) return NULL;
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return ret_int(env, -errno);
  int id;
  if (s->nfree > 0) {
    id = s->free_ids[--s->nfree];
  } else {
    conn_t *nc = realloc(s->conns, (size_t)(s->nconns + 1) * sizeof(conn_t));
    int *nf = realloc(s->free_ids, (size_t)(s->nconns + 1) * sizeof(int));
    if (nc) s->conns = nc;
    if (nf) s->free_ids = nf;
    if (!nc || !nf) return ret_int(env, -ENOMEM);
    id = s->nconns++;
  }
  conn_t *c = &s->conns[id];
  memset(c, 0, sizeof(*c));
  c->fd = fd;
  c->events = EPOLLIN;
  struct epoll_event e = {.events = EPOLLIN, .data = {.u32 = (uint32_t)id}};
  if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
    int err = errno;
    c->fd = -1;
    s->free_ids[s->nfree++] = id;
    return ret_int(env, -err);
  }
  if (s->active++ == 0) uv_ref((uv_handle_t *)&s->poll);
  return ret_int(env, id);
}

static napi_value Write(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t id;
  sockset_t *s = set_and_int(env, info, 3, argv, &id);
  if (!s) return NULL;
  conn_t *c = get_conn(s, id);
  if (!c) return ret_int(env, -EBADF);
  size_t len;
  if (napi_get_value_string_latin1(env, argv[2], NULL, 0, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "sockSetWrite: expected a string");
    return NULL;
  }
  if (len + 1 > s->scratch_cap) {
    char *nb = realloc(s->scratch, len + 1);
    if (!nb) return ret_int(env, -ENOMEM);
    s->scratch = nb;
    s->scratch_cap = len + 1;
  }
  NAPI_CHECK(env, napi_get_value_string_latin1(env, argv[2], s->scratch, len + 1, &len));
  const char *p = s->scratch;
  if (c->out_len == c->out_off) {
    /* nothing queued: write at once */
    while (len > 0) {
      ssize_t n = write(c->fd, p, len);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return ret_int(env, -errno);
      }
      p += n;
      len -= (size_t)n;
    }
    if (len == 0) return ret_int(env, 1);
  }
  /* queue the rest */
  if (c->out_len + len > c->out_cap) {
    size_t keep = c->out_len - c->out_off;
    if (c->out_off > 0) {
      memmove(c->out, c->out + c->out_off, keep);
      c->out_off = 0;
      c->out_len = keep;
    }
    if (keep + len > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap : 4096;
      while (cap < keep + len) cap *= 2;
      char *nb = realloc(c->out, cap);
      if (!nb) return ret_int(env, -ENOMEM);
      c->out = nb;
      c->out_cap = cap;
    }
  }
  memcpy(c->out + c->out_len, p, len);
  c->out_len += len;
  int r = set_events(s, c, id);
  return ret_int(env, r < 0 ? r : 0);
}

static napi_value Pause(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int32_t id;
  bool paused;
  sockset_t *s = set_and_int(env, info, 3, argv, &id);
  if (!s) return NULL;
  NAPI_CHECK(env, napi_get_value_bool(env, argv[2], &paused));
  conn_t *c = get_conn(s, id);
  if (!c) return ret_int(env, -EBADF);
  c->paused = paused;
  return ret_int(env, set_events(s, c, id));
}

static napi_value End(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t id;
  sockset_t *s = set_and_int(env, info, 2, argv, &id);
  if (!s) return NULL;
  conn_t *c = get_conn(s, id);
  if (!c) return ret_int(env, -EBADF);
  if (c->out_len == c->out_off) {
    conn_close(s, id);
    return ret_int(env, 1);
  }
  c->ending = 1;
  return ret_int(env, set_events(s, c, id));
}

static napi_value Close(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  int32_t id;
  sockset_t *s = set_and_int(env, info, 2, argv, &id);
  if (!s) return NULL;
  if (get_conn(s, id)) conn_close(s, id);
  return ret_int(env, 0);
}

static napi_value Destroy(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  NAPI_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *p = NULL;
  if (argc >= 1 && napi_get_value_external(env, argv[0], &p) == napi_ok && p) set_destroy(p);
  return NULL;
}

/*
 * epoll_wait with a zero timeout on libuv's own epoll descriptor: libuv
 * registers its descriptors level-triggered, so looking does not take an
 * event away from the loop, which finds it in its next poll phase.
 */
static napi_value Spin(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t usec = 0;
  uv_loop_t *loop;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &usec) != napi_ok || napi_get_uv_event_loop(env, &loop) != napi_ok)
    return ret_int(env, -EINVAL);
  int fd = uv_backend_fd(loop);
  if (fd < 0) return ret_int(env, -EBADF);
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    struct epoll_event ev;
    int n = epoll_wait(fd, &ev, 1, 0);
    if (n > 0) return ret_int(env, 1);
    if (n < 0 && errno != EINTR) return ret_int(env, -errno);
    clock_gettime(CLOCK_MONOTONIC, &t);
    if ((t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000 >= usec) return ret_int(env, 0);
  }
}

int sockset_register(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback cb;
  } fns[] = {{"sockSetCreate", Create}, {"sockSetAdd", Add},     {"sockSetWrite", Write},   {"sockSetPause", Pause},
             {"sockSetEnd", End},       {"sockSetClose", Close}, {"sockSetDestroy", Destroy}, {"loopSpin", Spin}};
  for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++) {
    napi_value fn;
    if (napi_create_function(env, fns[i].name, NAPI_AUTO_LENGTH, fns[i].cb, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, fns[i].name, fn) != napi_ok)
      return 0;
  }
  return 1;
}
