/*
 * loadgen: an independent closed-loop load generator for proxymap-compatible
 * UNIX sockets, written against the wire protocol alone (no project code).
 *
 * Each connection is a thread that behaves like one Postfix process using a
 * proxy: table (dict_proxy): blocking socket, read the server's announcement,
 * one `open`, then back-to-back `lookup` requests in the <= 3.10 dialect, each
 * written with one write() and its reply read before the next request is sent.
 * Every reply is parsed as an attribute record and checked against the
 * expected status and value.
 *
 *   loadgen -s SOCKET -t TABLE -k PLANFILE [-c CONNS] [-d SEC] [-w SEC]
 *           [-f LOOKUP_FLAGS] [-o OPEN_FLAGS] [-m NAME]
 *
 * -m NAME: speak socketmap(5) instead, as Postfix's dict_sockmap client does
 * (no announcement, no open; requests are netstrings "NAME key", replies
 * netstrings "OK value" or "NOTFOUND "); -t is then ignored. SOCKET is a
 * UNIX socket path, or inet:HOST:PORT (TCP, TCP_NODELAY; either protocol).
 *
 * PLANFILE: records "key\0S\0value\0", S = 0 (found, value) or 1 (not found,
 * value empty). Connection i starts at key (i * nkeys / conns) and walks the
 * keys in order. Lookups that complete in [warm-up end, warm-up + duration]
 * are counted. One JSON object is printed on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

struct entry {
    const char *key;
    size_t keylen;
    int status;
    const char *value;
    size_t vallen;
};

static const char *sock_path, *table_name, *sm_name;
static struct entry *entries;
static size_t nentries;
static int nconns = 20;
static double duration_s = 3, warmup_s = 1;
static long lookup_flags = 524353, open_flags = 524288;
static uint64_t t_start, t_measure, t_end;
static pthread_barrier_t barrier;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct conn {
    int id;
    int fd;
    char rbuf[65536];
    size_t rpos, rlen;
    /* results */
    uint64_t lookups, errors;
    uint32_t *lat;
    size_t nlat, caplat;
    char err[256];
};

static int fill(struct conn *c) {
    if (c->rpos > 0 && c->rpos == c->rlen) c->rpos = c->rlen = 0;
    if (c->rlen == sizeof(c->rbuf)) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    for (;;) {
        ssize_t n = read(c->fd, c->rbuf + c->rlen, sizeof(c->rbuf) - c->rlen);
        if (n > 0) {
            c->rlen += (size_t)n;
            return 0;
        }
        if (n < 0 && errno == EINTR) continue;
        return -1;
    }
}

/* Read one NUL-terminated string into out (at most cap-1 bytes kept); 0 ok, -1 EOF/error. */
static int read_str(struct conn *c, char *out, size_t cap, size_t *len) {
    size_t n = 0;
    for (;;) {
        while (c->rpos < c->rlen) {
            char ch = c->rbuf[c->rpos++];
            if (ch == '\0') {
                out[n < cap ? n : cap - 1] = '\0';
                *len = n;
                return 0;
            }
            if (n + 1 < cap) out[n] = ch;
            n++;
        }
        if (fill(c) < 0) return -1;
    }
}

/* Read one netstring's payload into out (cap bytes at most); 0 ok, -1 EOF/error, -2 malformed or too long. */
static int read_netstring(struct conn *c, char *out, size_t cap, size_t *len) {
    size_t n = 0, digits = 0;
    for (;;) {
        if (c->rpos == c->rlen && fill(c) < 0) return -1;
        char ch = c->rbuf[c->rpos++];
        if (ch == ':' && digits > 0) break;
        if (ch < '0' || ch > '9' || ++digits > 9) return -2;
        n = n * 10 + (size_t)(ch - '0');
    }
    if (n > cap) return -2;
    for (size_t got = 0; got < n;) {
        if (c->rpos == c->rlen && fill(c) < 0) return -1;
        size_t k = c->rlen - c->rpos < n - got ? c->rlen - c->rpos : n - got;
        memcpy(out + got, c->rbuf + c->rpos, k);
        c->rpos += k;
        got += k;
    }
    if (c->rpos == c->rlen && fill(c) < 0) return -1;
    if (c->rbuf[c->rpos++] != ',') return -2;
    *len = n;
    return 0;
}

#define MAXATTR 8
struct record {
    int n;
    char name[MAXATTR][64];
    char value[MAXATTR][8192];
    size_t vlen[MAXATTR];
};

/* Read one attribute record (name\0value\0 ... \0). */
static int read_record(struct conn *c, struct record *r) {
    r->n = 0;
    for (;;) {
        char name[64];
        size_t nl;
        if (read_str(c, name, sizeof(name), &nl) < 0) return -1;
        if (nl == 0) return 0;
        if (r->n == MAXATTR) return -2;
        memcpy(r->name[r->n], name, sizeof(name));
        if (read_str(c, r->value[r->n], sizeof(r->value[0]), &r->vlen[r->n]) < 0) return -1;
        r->n++;
    }
}

static const char *attr(const struct record *r, const char *name, size_t *len) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->name[i], name) == 0) {
            if (len) *len = r->vlen[i];
            return r->value[i];
        }
    return NULL;
}

static int write_all(int fd, const char *b, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t put(char *p, const char *s, size_t n) {
    memcpy(p, s, n);
    p[n] = '\0';
    return n + 1;
}

/* request=KIND, table=TABLE, flags=FLAGS (the <= 3.10 dialect): the bytes written to p, without the end of record */
static size_t head(char *p, const char *kind, size_t tl, long flags) {
    char num[32];
    size_t n = put(p, "request", 7);
    n += put(p + n, kind, strlen(kind));
    n += put(p + n, "table", 5);
    n += put(p + n, table_name, tl);
    n += put(p + n, "flags", 5);
    n += put(p + n, num, (size_t)snprintf(num, sizeof(num), "%ld", flags));
    return n;
}

static void lat_push(struct conn *c, uint64_t ns) {
    if (c->nlat == c->caplat) {
        c->caplat = c->caplat ? c->caplat * 2 : 65536;
        c->lat = realloc(c->lat, c->caplat * sizeof(uint32_t));
        if (!c->lat) abort();
    }
    c->lat[c->nlat++] = ns > 0xffffffffu ? 0xffffffffu : (uint32_t)ns;
}

static void fail(struct conn *c, const char *fmt, const char *a, const char *b) {
    c->errors++;
    if (!c->err[0]) snprintf(c->err, sizeof(c->err), fmt, a, b);
}

static void *run(void *arg) {
    struct conn *c = arg;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct record *rec = malloc(sizeof(*rec));
    char *req = malloc(16384 + strlen(table_name) + (sm_name ? strlen(sm_name) : 0));
    size_t i, tl = strlen(table_name);
    int ok = 1;

    if (strncmp(sock_path, "inet:", 5) == 0) {
        char host[256];
        const char *colon = strrchr(sock_path + 5, ':');
        struct sockaddr_in in = {.sin_family = AF_INET};
        int one = 1;
        snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - sock_path - 5) : 0, sock_path + 5);
        if (colon) in.sin_port = htons((uint16_t)atoi(colon + 1));
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0 || !colon || inet_pton(AF_INET, host, &in.sin_addr) != 1 ||
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 || connect(c->fd, (struct sockaddr *)&in, sizeof(in)) < 0) {
            fail(c, "connect %s: %s", sock_path, strerror(errno));
            ok = 0;
        }
    } else {
        c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
        if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            fail(c, "connect %s: %s", sock_path, strerror(errno));
            ok = 0;
        }
    }
    /* announcement (socketmap has none, nor an open) */
    if (ok && !sm_name && (read_record(c, rec) != 0 || !attr(rec, "protocol", NULL) || strcmp(attr(rec, "protocol", NULL), "proxymap_protocol") != 0)) {
        fail(c, "bad announcement%s%s", "", "");
        ok = 0;
    }
    if (ok && !sm_name) {
        size_t n = head(req, "open", tl, open_flags);
        req[n++] = '\0';
        const char *st;
        if (write_all(c->fd, req, n) < 0 || read_record(c, rec) != 0 || !(st = attr(rec, "status", NULL)) || strcmp(st, "0") != 0) {
            fail(c, "open %s failed%s", table_name, "");
            ok = 0;
        }
    }
    /* the request prefix is the same for every lookup */
    size_t pre = head(req, "lookup", tl, lookup_flags);
    pre += put(req + pre, "key", 3);

    pthread_barrier_wait(&barrier);
    i = (size_t)c->id * nentries / (size_t)nconns;
    while (ok) {
        const struct entry *e = &entries[i];
        if (++i == nentries) i = 0;
        size_t n;
        if (sm_name) {
            n = (size_t)sprintf(req, "%zu:%s ", strlen(sm_name) + 1 + e->keylen, sm_name);
            memcpy(req + n, e->key, e->keylen);
            n += e->keylen;
            req[n++] = ',';
        } else {
            n = pre + put(req + pre, e->key, e->keylen);
            req[n++] = '\0';
        }
        uint64_t t0 = now_ns();
        if (t0 >= t_end) break;
        if (write_all(c->fd, req, n) < 0) {
            fail(c, "write: %s%s", strerror(errno), "");
            break;
        }
        size_t vl = 0;
        const char *st = NULL, *val = NULL;
        int r = sm_name ? read_netstring(c, rec->value[0], sizeof(rec->value[0]), &vl) : read_record(c, rec);
        uint64_t t1 = now_ns();
        if (r != 0) {
            fail(c, "reply: %s%s", r == -1 ? "connection closed" : sm_name ? "malformed netstring" : "too many attributes", "");
            break;
        }
        int want = e->status, good;
        if (sm_name) {
            /* "OK value" or "NOTFOUND " */
            val = rec->value[0];
            st = vl >= 3 && memcmp(val, "OK ", 3) == 0 ? "0" : vl == 9 && memcmp(val, "NOTFOUND ", 9) == 0 ? "1" : "(other)";
            good = atoi(st) == want && strcmp(st, "(other)") != 0 && (want != 0 || (vl - 3 == e->vallen && memcmp(val + 3, e->value, e->vallen) == 0));
        } else {
            st = attr(rec, "status", NULL);
            val = attr(rec, "value", &vl);
            good = st && val && atoi(st) == want && (want != 0 || (vl == e->vallen && memcmp(val, e->value, vl) == 0));
        }
        if (t1 >= t_measure && t1 <= t_end) {
            if (good) {
                c->lookups++;
                lat_push(c, t1 - t0);
            }
        }
        if (!good) fail(c, "key %s: unexpected reply status %s", e->key, st ? st : "(none)");
    }
    if (c->fd >= 0) close(c->fd);
    free(rec);
    free(req);
    return NULL;
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen -s SOCKET|inet:HOST:PORT -t TABLE -k PLANFILE [-c CONNS] [-d SEC] [-w SEC] [-f LOOKUP_FLAGS] [-o OPEN_FLAGS] [-m SOCKETMAP_NAME]\n");
    exit(2);
}

static void json_str(const char *s) {
    putchar('"');
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') printf("\\%c", ch);
        else if (ch < 0x20 || ch >= 0x7f) printf("\\u%04x", ch);
        else putchar(ch);
    }
    putchar('"');
}

int main(int argc, char **argv) {
    const char *plan = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "s:t:k:c:d:w:f:o:m:")) != -1) {
        switch (opt) {
        case 's': sock_path = optarg; break;
        case 't': table_name = optarg; break;
        case 'k': plan = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 'd': duration_s = atof(optarg); break;
        case 'w': warmup_s = atof(optarg); break;
        case 'f': lookup_flags = atol(optarg); break;
        case 'o': open_flags = atol(optarg); break;
        case 'm': sm_name = optarg; break;
        default: usage();
        }
    }
    if (!sock_path || !table_name || !plan || nconns < 1 || duration_s <= 0 || warmup_s < 0) usage();

    /* plan file */
    FILE *fp = fopen(plan, "rb");
    if (!fp) { perror(plan); return 1; }
    struct stat st;
    fstat(fileno(fp), &st);
    char *buf = malloc((size_t)st.st_size + 1);
    if (fread(buf, 1, (size_t)st.st_size, fp) != (size_t)st.st_size) { perror(plan); return 1; }
    fclose(fp);
    buf[st.st_size] = '\0';
    size_t cap = 1024;
    entries = malloc(cap * sizeof(*entries));
    for (char *p = buf, *end = buf + st.st_size; p < end;) {
        struct entry e;
        e.key = p; e.keylen = strlen(p); p += e.keylen + 1;
        if (p >= end) break;
        e.status = atoi(p); p += strlen(p) + 1;
        if (p > end) break;
        e.value = p; e.vallen = strlen(p); p += e.vallen + 1;
        if (e.keylen > 8000) { fprintf(stderr, "loadgen: key too long\n"); return 1; }
        if (nentries == cap) entries = realloc(entries, (cap *= 2) * sizeof(*entries));
        entries[nentries++] = e;
    }
    if (nentries == 0) { fprintf(stderr, "loadgen: %s: no keys\n", plan); return 1; }

    struct conn *conns = calloc((size_t)nconns, sizeof(*conns));
    pthread_t *th = calloc((size_t)nconns, sizeof(*th));
    pthread_barrier_init(&barrier, NULL, (unsigned)nconns + 1);
    /* times are set before the threads pass the barrier */
    for (int i = 0; i < nconns; i++) {
        conns[i].id = i;
        conns[i].fd = -1;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setstacksize(&a, 256 * 1024);
        if (pthread_create(&th[i], &a, run, &conns[i]) != 0) { perror("pthread_create"); return 1; }
        pthread_attr_destroy(&a);
    }
    t_start = now_ns();
    t_measure = t_start + (uint64_t)(warmup_s * 1e9);
    t_end = t_measure + (uint64_t)(duration_s * 1e9);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < nconns; i++) pthread_join(th[i], NULL);
    getrusage(RUSAGE_SELF, &ru1);

    uint64_t lookups = 0, errors = 0;
    size_t nlat = 0;
    const char *err = "";
    for (int i = 0; i < nconns; i++) {
        lookups += conns[i].lookups;
        errors += conns[i].errors;
        nlat += conns[i].nlat;
        if (!err[0] && conns[i].err[0]) err = conns[i].err;
    }
    uint32_t *all = malloc((nlat ? nlat : 1) * sizeof(uint32_t));
    size_t k = 0;
    double sum = 0;
    for (int i = 0; i < nconns; i++)
        for (size_t j = 0; j < conns[i].nlat; j++) { all[k++] = conns[i].lat[j]; sum += conns[i].lat[j]; }
    qsort(all, nlat, sizeof(uint32_t), cmp_u32);
#define PCT(p) (nlat ? all[(size_t)((double)(nlat - 1) * (p))] / 1000.0 : 0.0)
    double cpu = (double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec + ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
                 (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec + ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6;
    printf("{\"connections\":%d,\"lookups\":%llu,\"errors\":%llu,\"elapsed_ms\":%.1f,\"lookups_per_sec\":%.1f,"
           "\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,\"max_us\":%.2f,\"mean_us\":%.2f,\"client_cpu_pct\":%.1f,\"error_sample\":",
           nconns, (unsigned long long)lookups, (unsigned long long)errors, duration_s * 1000, (double)lookups / duration_s, PCT(0.5),
           PCT(0.9), PCT(0.99), nlat ? all[nlat - 1] / 1000.0 : 0.0, nlat ? sum / (double)nlat / 1000.0 : 0.0,
           100.0 * cpu / (warmup_s + duration_s));
    json_str(err);
    printf("}\n");
    return errors ? 3 : 0;
}
