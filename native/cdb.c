/*
 * tinycdb's cdb_find() over positioned reads, for src/tables/indexed/cdb.ts:
 *
 *   cdbFind(fd, header, fsize, dend, key) -> value (latin1 string) | 0 not found
 *                                           | -1 not a valid cdb (EPROTO) | -errno read error
 *
 * The same reads, bounds checks and order as the TypeScript find() it
 * replaces on the lookup path (one pread of hash slots, one of the record,
 * one more for a long value), without fs.readSync's per-call cost. The file
 * is never mapped: the process's resident memory stays flat whatever the
 * table's size (Postfix's tinycdb maps the file).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <node_api.h>

#define HEADER_SIZE 2048
#define SLOTS_PER_READ 16
#define RECORD_READ 512
#define R_EPROTO (-1)

static uint32_t rd32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* bytes read (fewer at end of file) or -errno */
static int64_t pread_fully(int fd, unsigned char *buf, int64_t len, int64_t pos) {
  int64_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, buf + got, (size_t)(len - got), (off_t)(pos + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (n == 0) break;
    got += n;
  }
  return got;
}

static __thread unsigned char *rec_buf;
static __thread size_t rec_cap;
static __thread char *key_buf;
static __thread size_t key_cap;

/* 1 match (*val, *vlen set: rec_buf or a malloc'ed copy in *own), 0 no match, <0 error */
static int match_record(int fd, int64_t dend, int64_t pos, const char *key, int64_t klen, const unsigned char **val,
                        int64_t *vlen, unsigned char **own) {
  if ((int64_t)rec_cap < 8 + klen) {
    size_t cap = (size_t)(8 + klen + RECORD_READ);
    unsigned char *nb = realloc(rec_buf, cap);
    if (!nb) return -ENOMEM;
    rec_buf = nb;
    rec_cap = cap;
  }
  int64_t want = (int64_t)rec_cap < dend - pos ? (int64_t)rec_cap : dend - pos;
  int64_t got = pread_fully(fd, rec_buf, want, pos);
  if (got < 0) return (int)got;
  if (got < 8) return R_EPROTO;
  if ((int64_t)rd32(rec_buf) != klen) return 0;
  if (dend - klen < pos + 8) return R_EPROTO;
  if (got < 8 + klen) return R_EPROTO;
  if (memcmp(rec_buf + 8, key, (size_t)klen) != 0) return 0;
  int64_t vl = rd32(rec_buf + 4), kpos = pos + 8;
  if (dend < vl || dend - vl < kpos + klen) return R_EPROTO;
  int64_t start = 8 + klen;
  if (start + vl <= got) {
    *val = rec_buf + start;
  } else {
    unsigned char *b = malloc(vl ? (size_t)vl : 1);
    if (!b) return -ENOMEM;
    int64_t g = pread_fully(fd, b, vl, kpos + klen);
    if (g != vl) {
      free(b);
      return g < 0 ? (int)g : R_EPROTO;
    }
    *own = b;
    *val = b;
  }
  *vlen = vl;
  return 1;
}

static napi_value ret_int(napi_env env, int v) {
  napi_value r;
  if (napi_create_int32(env, v, &r) != napi_ok) return NULL;
  return r;
}

static napi_value CdbFind(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t fd;
  uint32_t fsize32, dend32;
  unsigned char *header;
  size_t hlen, klen;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_buffer_info(env, argv[1], (void **)&header, &hlen) != napi_ok || hlen < HEADER_SIZE ||
      napi_get_value_uint32(env, argv[2], &fsize32) != napi_ok || napi_get_value_uint32(env, argv[3], &dend32) != napi_ok ||
      napi_get_value_string_latin1(env, argv[4], NULL, 0, &klen) != napi_ok) {
    napi_throw_type_error(env, NULL, "cdbFind: expected (fd, header, fsize, dend, key)");
    return NULL;
  }
  if (klen + 1 > key_cap) {
    char *nb = realloc(key_buf, klen + 1);
    if (!nb) return ret_int(env, -ENOMEM);
    key_buf = nb;
    key_cap = klen + 1;
  }
  if (napi_get_value_string_latin1(env, argv[4], key_buf, klen + 1, &klen) != napi_ok) return NULL;
  const int64_t fsize = fsize32, dend = dend32, kl = (int64_t)klen;
  if (kl >= dend) return ret_int(env, 0);
  uint32_t h = 5381;
  for (size_t i = 0; i < klen; i++) h = ((h << 5) + h) ^ (unsigned char)key_buf[i];
  const unsigned char *toc = header + ((h & 255) << 3);
  int64_t n = rd32(toc + 4);
  if (n == 0) return ret_int(env, 0);
  int64_t htab = rd32(toc);
  if (n > fsize / 8 || htab < dend || htab > fsize || n * 8 > fsize - htab) return ret_int(env, R_EPROTO);
  int64_t slot = (h >> 8) % n, todo = n;
  unsigned char slots[SLOTS_PER_READ * 8];
  while (todo > 0) {
    int64_t cnt = todo < n - slot ? todo : n - slot;
    if (cnt > SLOTS_PER_READ) cnt = SLOTS_PER_READ;
    int64_t got = pread_fully(fd, slots, cnt * 8, htab + slot * 8);
    if (got < 0) return ret_int(env, (int)got);
    if (got != cnt * 8) return ret_int(env, R_EPROTO);
    for (int64_t j = 0; j < cnt; j++) {
      int64_t pos = rd32(slots + j * 8 + 4);
      if (pos == 0) return ret_int(env, 0);
      if (rd32(slots + j * 8) == h) {
        if (pos > dend - 8) return ret_int(env, R_EPROTO);
        const unsigned char *val = NULL;
        unsigned char *own = NULL;
        int64_t vlen = 0;
        int r = match_record(fd, dend, pos, key_buf, kl, &val, &vlen, &own);
        if (r < 0) return ret_int(env, r);
        if (r == 1) {
          napi_value s;
          napi_status st = napi_create_string_latin1(env, (const char *)val, (size_t)vlen, &s);
          free(own);
          if (st != napi_ok) return NULL;
          return s;
        }
      }
    }
    todo -= cnt;
    slot += cnt;
    if (slot >= n) slot = 0;
  }
  return ret_int(env, 0);
}

int cdb_register(napi_env env, napi_value exports) {
  napi_value fn;
  return napi_create_function(env, "cdbFind", NAPI_AUTO_LENGTH, CdbFind, NULL, &fn) == napi_ok &&
         napi_set_named_property(env, exports, "cdbFind", fn) == napi_ok;
}
