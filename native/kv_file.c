/*
 * File helpers of the key-value module: a file's identity (for "was it
 * replaced or changed?"), Postfix's whole-file locks (myflock.c: fcntl for
 * LMDB, flock for Berkeley DB on Linux) and the fault guard that turns
 * SIGBUS/SIGSEGV inside a library call into an error.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "kv.h"

/* ------------------------------------------------------------------ */
/* Fault guard: SIGBUS/SIGSEGV inside a library call become an error   */
/* ------------------------------------------------------------------ */

_Thread_local sigjmp_buf *guard_jmp = NULL;
_Thread_local volatile int guard_sig = 0;
static struct sigaction old_bus, old_segv;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;

static void guard_handler(int sig, siginfo_t *si, void *ctx) {
  sigjmp_buf *j = guard_jmp;
  if (j != NULL) {
    guard_jmp = NULL;
    guard_sig = sig;
    siglongjmp(*j, 1);
  }
  /* Not ours: hand it to whoever had it before (Node's WebAssembly trap handler, say). */
  struct sigaction *old = sig == SIGBUS ? &old_bus : &old_segv;
  if ((old->sa_flags & SA_SIGINFO) && old->sa_sigaction != NULL) {
    old->sa_sigaction(sig, si, ctx);
    return;
  }
  if (!(old->sa_flags & SA_SIGINFO) && old->sa_handler != SIG_DFL && old->sa_handler != SIG_IGN) {
    old->sa_handler(sig);
    return;
  }
  /* Default action: reinstate it; the faulting instruction runs again and the process dies as it would have. */
  signal(sig, SIG_DFL);
}

static void guard_install(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = guard_handler;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old_bus);
  sigaction(SIGSEGV, &sa, &old_segv);
}

void kv_guard_init(void) { pthread_once(&guard_once, guard_install); }

/* ------------------------------------------------------------------ */
/* File identity                                                       */
/* ------------------------------------------------------------------ */

void file_id(const struct stat *st, FileId *id) {
  id->dev = st->st_dev;
  id->ino = st->st_ino;
  id->size = st->st_size;
  id->mtim = st->st_mtim;
  id->ctim = st->st_ctim;
}

/*
 * The file's identity, size and link count without its time stamps (they
 * are left zero). Since Linux 6.13 (multigrain time stamps) reading a file's
 * mtime/ctime makes its next write take a fine-grained stamp, which dirties
 * the inode, so an fdatasync after it commits the journal too: on ext4 here
 * a stat around every synced update cost about 45 us per update (130 -> 180
 * us for a Berkeley DB put + sync). Writers check their file with this where
 * time stamps are not needed (LMDB always; Berkeley DB when inotify sees
 * in-place changes). Falls back to fstat() where statx() is missing.
 */
int file_id_quick(int fd, FileId *id, nlink_t *nlink) {
  struct statx sx;
  memset(id, 0, sizeof(*id));
  if (statx(fd, "", AT_EMPTY_PATH, STATX_INO | STATX_NLINK | STATX_SIZE, &sx) == 0) {
    id->dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
    id->ino = sx.stx_ino;
    id->size = (off_t)sx.stx_size;
    *nlink = sx.stx_nlink;
    return 0;
  }
  if (errno != ENOSYS) return -1;
  struct stat st;
  if (fstat(fd, &st) != 0) return -1;
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  id->size = st.st_size;
  *nlink = st.st_nlink;
  return 0;
}

int ts_cmp(const struct timespec *a, const struct timespec *b) {
  if (a->tv_sec != b->tv_sec) return a->tv_sec < b->tv_sec ? -1 : 1;
  if (a->tv_nsec != b->tv_nsec) return a->tv_nsec < b->tv_nsec ? -1 : 1;
  return 0;
}

int same_id(const FileId *a, const FileId *b) {
  return a->dev == b->dev && a->ino == b->ino && a->size == b->size && ts_cmp(&a->mtim, &b->mtim) == 0 &&
         ts_cmp(&a->ctim, &b->ctim) == 0;
}

/*
 * Whether a later change to the file could leave its status unchanged: the
 * kernel stamps files from the coarse clock, so a change within the same
 * tick as the last one keeps the time stamps. File systems with whole-second
 * stamps (nanoseconds 0) get a two-second window.
 */
int id_ambiguous(const FileId *id) {
  struct timespec now;
  if (clock_gettime(CLOCK_REALTIME_COARSE, &now) != 0) return 1;
  const struct timespec *t[2] = {&id->mtim, &id->ctim};
  for (int i = 0; i < 2; i++) {
    if (t[i]->tv_nsec == 0) {
      if (now.tv_sec - t[i]->tv_sec < 2) return 1;
    } else if (ts_cmp(t[i], &now) >= 0) {
      return 1;
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Locks (myflock.c: fcntl for LMDB, flock for Berkeley DB on Linux)   */
/* ------------------------------------------------------------------ */

/* 0 = done, ST_BUSY = held elsewhere (nonblock), -1 = error (errno). */
int lock_fcntl(int fd, int op, int nonblock) {
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = op == LK_SHARED ? F_RDLCK : op == LK_EXCL ? F_WRLCK : F_UNLCK;
  fl.l_whence = SEEK_SET;
  for (;;) {
    if (fcntl(fd, nonblock && op != LK_NONE ? F_SETLK : F_SETLKW, &fl) == 0) return 0;
    if (errno == EINTR) continue;
    if (nonblock && (errno == EAGAIN || errno == EACCES)) return ST_BUSY;
    return -1;
  }
}

int lock_flock(int fd, int op, int nonblock) {
  int how = op == LK_SHARED ? LOCK_SH : op == LK_EXCL ? LOCK_EX : LOCK_UN;
  if (nonblock && op != LK_NONE) how |= LOCK_NB;
  for (;;) {
    if (flock(fd, how) == 0) return 0;
    if (errno == EINTR) continue;
    if (nonblock && errno == EWOULDBLOCK) return ST_BUSY;
    return -1;
  }
}

/* A lock call's result as a status: ST_OK, ST_BUSY, or ST_ERROR with Postfix's "lock dictionary" text. */
int kv_lock_status(KvHandle *h, int rc) {
  if (rc == 0) return ST_OK;
  if (rc == ST_BUSY) return ST_BUSY;
  set_err(h, "%s: lock dictionary: %s", h->label, strerror(errno));
  return ST_ERROR;
}

/*
 * The file at the path is not the one opened (removed, replaced, link count
 * 0) or, with content, its size or modification time differ from open time
 * (dict_changed_name(), which skips the time check for MULTI_WRITER tables).
 */
int kv_file_changed(const char *path, const FileId *open_id, int content) {
  struct stat st;
  if (stat(path, &st) != 0) return 1;
  if (st.st_nlink == 0 || st.st_dev != open_id->dev || st.st_ino != open_id->ino) return 1;
  if (content && (st.st_size != open_id->size || ts_cmp(&st.st_mtim, &open_id->mtim) != 0)) return 1;
  return 0;
}
