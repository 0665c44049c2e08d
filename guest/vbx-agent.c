/*
 * voidbox guest agent: the guest end of the host<->guest protocol described in
 * src/sandbox/qemu/protocol.ts, on the virtio-serial port "voidbox.0".
 *
 *   vbx-agent PORT [ROOT]
 *
 * guest/init sets the guest up (mounts, network, image root) and then execs this as
 * PID 1. Jobs run as `sh /tmp/job.sh` in their own session (chrooted into ROOT when
 * given), stdin from the STDIN frame, stdout and stderr through pipes. A shell loop
 * did this before; under TCG every fork costs milliseconds and it needed ~25 of them
 * per command, where this needs one.
 *
 * One thread, one poll loop: the channel, the job's two pipes and a signalfd for
 * SIGCHLD (as PID 1 it also reaps orphans). Live output is sent in OUTC/ERRC frames,
 * coalesced at most every 10, 20, 50 and then 100 ms, so a flood makes few frames.
 * Output past the EXEC's cap is counted, never kept and never sent.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PAYLOAD (16u * 1024 * 1024) /* MAX_FRAME_PAYLOAD on the host */
#define LIVE_FRAME (256u * 1024)        /* largest OUTC/ERRC payload */
#define MAX_HEADER 128                  /* MAX_HEADER_BYTES on the host */

static int chan = -1;
static const char *root; /* image root the jobs chroot into, or NULL */

/* --- CRC-32 (zlib/IEEE), as the host checks it ------------------------------------- */

static uint32_t crc_table[256];

static void crc_init(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    crc_table[i] = c;
  }
}

static uint32_t crc32_of(const void *p, size_t n) {
  const unsigned char *b = p;
  uint32_t c = 0xFFFFFFFFu;
  while (n--) c = crc_table[(c ^ *b++) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* --- power off and console --------------------------------------------------------- */

/* Without ACPI (the minimal kernel on `-M microvm,acpi=off`) the kernel cannot power
 * off; a reboot by triple fault makes QEMU (-no-reboot) exit just the same. */
static void __attribute__((noreturn)) off(void) {
  sync();
  if (access("/sys/firmware/acpi", F_OK) == 0) reboot(RB_POWER_OFF);
  int fd = open("/sys/kernel/reboot/type", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    (void)!write(fd, "triple", 6);
    close(fd);
  }
  reboot(RB_AUTOBOOT);
  for (;;) pause(); /* PID 1 must never return */
}

static void __attribute__((noreturn)) fail(const char *msg) {
  int fd = open("/dev/console", O_WRONLY | O_CLOEXEC);
  if (fd >= 0) {
    dprintf(fd, "voidbox-agent: %s\n", msg);
    close(fd);
  }
  off();
}

static uint64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000 + (uint64_t)t.tv_nsec / 1000000;
}

/* --- frames to the host ------------------------------------------------------------ */

static void send_frame(const char *type, long long id, long long arg, const void *p, size_t n) {
  char h[MAX_HEADER];
  int hl = snprintf(h, sizeof h, "VBX1 %s %lld %lld %zu %08x\n", type, id, arg, n, crc32_of(p, n));
  struct iovec iov[2] = {{h, (size_t)hl}, {(void *)p, n}};
  int cnt = n ? 2 : 1;
  struct iovec *v = iov;
  while (cnt > 0) {
    ssize_t w = writev(chan, v, cnt);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      fail("channel write failed");
    }
    while (cnt > 0 && (size_t)w >= v->iov_len) {
      w -= (ssize_t)v->iov_len;
      v++;
      cnt--;
    }
    if (cnt > 0) {
      v->iov_base = (char *)v->iov_base + w;
      v->iov_len -= (size_t)w;
    }
  }
}

static void send_str(const char *type, long long id, long long arg, const char *s) {
  send_frame(type, id, arg, s, strlen(s));
}

/* --- the job ----------------------------------------------------------------------- */

struct stream {
  const char *live_type; /* OUTC / ERRC */
  const char *end_type;  /* OUT / ERR */
  int fd;                /* read end of the job's pipe; -1 once closed */
  char *buf;             /* the first `keep` bytes */
  size_t kept;
  unsigned long long total;
  size_t sent; /* bytes already sent live */
};

static struct {
  pid_t pid; /* 0: no job */
  long long id;
  size_t keep; /* the EXEC's cap (0: all, bounded by a frame) */
  int done;
  int status;
  int flushes;
  uint64_t next_flush; /* 0: nothing pending */
  struct stream s[2];
} job = {.s = {{"OUTC", "OUT", -1, 0, 0, 0, 0}, {"ERRC", "ERR", -1, 0, 0, 0, 0}}};

/* Gaps between live flushes: soon at first (most jobs are short), then every 100 ms. */
static const int FLUSH_GAP_MS[] = {10, 20, 50, 100};

static void live_flush(void) {
  for (int i = 0; i < 2; i++) {
    struct stream *s = &job.s[i];
    while (s->sent < s->kept) {
      size_t n = s->kept - s->sent;
      if (n > LIVE_FRAME) n = LIVE_FRAME;
      send_frame(s->live_type, job.id, (long long)s->sent, s->buf + s->sent, n);
      s->sent += n;
    }
  }
  job.next_flush = 0;
  if (job.flushes < 3) job.flushes++;
}

/* Reads what the pipe holds now; closes it at EOF. */
static void drain(struct stream *s) {
  char tmp[65536];
  for (;;) {
    ssize_t r = read(s->fd, tmp, sizeof tmp);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0 || errno != EAGAIN) {
        close(s->fd);
        s->fd = -1;
      }
      return;
    }
    size_t room = job.keep - s->kept;
    size_t take = (size_t)r < room ? (size_t)r : room;
    if (take) {
      memcpy(s->buf + s->kept, tmp, take);
      s->kept += take;
      if (!job.next_flush) job.next_flush = now_ms() + FLUSH_GAP_MS[job.flushes];
    }
    s->total += (unsigned long long)r;
  }
}

static void kill_job(void) {
  if (job.pid > 0 && !job.done) kill(-job.pid, SIGKILL);
}

/* The job's end: the rest of its output (live, then whole), EXIT last. */
static void finish_job(void) {
  for (int i = 0; i < 2; i++) {
    if (job.s[i].fd >= 0) drain(&job.s[i]);
    /* A leftover background process of the job may hold the pipe: it is not waited for. */
    if (job.s[i].fd >= 0) close(job.s[i].fd);
    job.s[i].fd = -1;
  }
  live_flush();
  for (int i = 0; i < 2; i++) {
    struct stream *s = &job.s[i];
    send_frame(s->end_type, job.id, (long long)s->total, s->buf, s->kept);
    free(s->buf);
    s->buf = NULL;
  }
  int st = job.status;
  int rc = WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 255;
  send_frame("EXIT", job.id, rc, "", 0);
  job.pid = 0;
}

/* Reap every exited child (PID 1 inherits orphans); note the job's status. */
static void reap(void) {
  int st;
  pid_t p;
  while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
    if (p == job.pid) {
      job.done = 1;
      job.status = st;
    }
  }
}

/* Waits for the killed job itself (SIGKILL: promptly), reaping others on the way. */
static void wait_job(void) {
  while (job.pid > 0 && !job.done) {
    int st;
    pid_t p = waitpid(-1, &st, 0);
    if (p < 0 && errno != EINTR) break;
    if (p == job.pid) {
      job.done = 1;
      job.status = st;
    }
  }
}

static int write_file(const char *path, const void *p, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return -1;
  const char *b = p;
  while (n) {
    ssize_t w = write(fd, b, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      close(fd);
      return -1;
    }
    b += w;
    n -= (size_t)w;
  }
  return close(fd);
}

static void start_job(long long id, long long cap, const char *script, size_t len) {
  kill_job();
  wait_job();
  if (job.pid > 0) finish_job(); /* the killed job's frames first, as the host expects */
  if (write_file("/tmp/job.sh", script, len) < 0) {
    send_str("ERROR", id, 0, "guest: cannot write the job script");
    return;
  }
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
    send_str("ERROR", id, 0, "guest: cannot make the job's pipes");
    return;
  }
  size_t keep = cap > 0 && cap < MAX_PAYLOAD ? (size_t)cap : MAX_PAYLOAD;
  pid_t pid = fork();
  if (pid < 0) {
    close(out[0]), close(out[1]), close(err[0]), close(err[1]);
    send_str("ERROR", id, 0, "guest: fork failed");
    return;
  }
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL); /* ignored dispositions survive exec: `yes | head` must end quietly */
    setsid(); /* its own process group: KILL reaches its children */
    int in = open("/tmp/stdin", O_RDONLY);
    if (in < 0) in = open("/dev/null", O_RDONLY);
    dup2(in, 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (root && (chroot(root) < 0 || chdir("/") < 0)) _exit(126);
    execl("/bin/sh", "sh", "/tmp/job.sh", (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  fcntl(out[0], F_SETFL, O_NONBLOCK);
  fcntl(err[0], F_SETFL, O_NONBLOCK);
  job.pid = pid;
  job.id = id;
  job.keep = keep;
  job.done = 0;
  job.status = 0;
  job.flushes = 0;
  job.next_flush = 0;
  for (int i = 0; i < 2; i++) {
    struct stream *s = &job.s[i];
    s->fd = i == 0 ? out[0] : err[0];
    s->kept = s->sent = 0;
    s->total = 0;
    s->buf = malloc(keep ? keep : 1);
    if (!s->buf) fail("out of memory for the job's output");
  }
}

/* --- requests ---------------------------------------------------------------------- */

/*
 * SEED (ARG = host time in ms since the epoch, payload = random bytes from the host),
 * answered with READY. A guest restored from a RAM snapshot shares the snapshot's
 * random pool and clock with every other guest restored from it: the host's bytes are
 * credited to the pool and the kernel's generator is reseeded at once (not on its own
 * schedule), before any job can ask it for a byte; the clock is set to the host's.
 */
static void seed(long long id, long long ms, const char *payload, size_t len) {
  int ok = 1;
  if (len > 0) {
    struct {
      struct rand_pool_info info;
      char bytes[512];
    } e;
    if (len > sizeof e.bytes) len = sizeof e.bytes;
    e.info.entropy_count = (int)(len * 8);
    e.info.buf_size = (int)len;
    memcpy(e.bytes, payload, len);
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    ok = fd >= 0 && ioctl(fd, RNDADDENTROPY, &e.info) == 0 && ioctl(fd, RNDRESEEDCRNG) == 0;
    if (fd >= 0) close(fd);
  }
  if (ms > 0) {
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    clock_settime(CLOCK_REALTIME, &t);
  }
  if (!ok) {
    send_str("ERROR", id, 0, "guest: cannot reseed the random generator");
    return;
  }
  struct utsname u;
  send_str("READY", id, 0, uname(&u) == 0 ? u.release : "unknown");
}

static void read_request(long long id, long long max, const char *payload, size_t len) {
  char rel[PATH_MAX];
  const char *nl = memchr(payload, '\n', len);
  size_t n = nl ? (size_t)(nl - payload) : len;
  if (n >= sizeof rel - 16) {
    send_str("ERROR", id, 0, "guest: invalid path");
    return;
  }
  memcpy(rel, payload, n);
  rel[n] = 0;
  /* Empty, or any ".." segment. */
  int bad = n == 0;
  for (const char *seg = rel; !bad;) {
    const char *end = strchr(seg, '/');
    size_t sl = end ? (size_t)(end - seg) : strlen(seg);
    if (sl == 2 && seg[0] == '.' && seg[1] == '.') bad = 1;
    if (!end) break;
    seg = end + 1;
  }
  if (bad) {
    send_str("ERROR", id, 0, "guest: invalid path");
    return;
  }
  if (rel[0] == '/') {
    send_str("ERROR", id, 0, "guest: absolute path");
    return;
  }
  char f[PATH_MAX + 16], real[PATH_MAX];
  snprintf(f, sizeof f, "/workspace/%s", rel);
  struct stat st;
  if (stat(f, &st) < 0) {
    send_frame("NOFILE", id, 0, "", 0);
    return;
  }
  if (!realpath(f, real) || strncmp(real, "/workspace/", 11) != 0) {
    send_str("ERROR", id, 0, "guest: path escapes /workspace");
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    char msg[PATH_MAX + 64];
    snprintf(msg, sizeof msg, "guest: not a regular file: %s", rel);
    send_str("ERROR", id, 0, msg);
    return;
  }
  if (st.st_size > max) {
    send_frame("TOOBIG", id, (long long)st.st_size, "", 0);
    return;
  }
  size_t size = (size_t)st.st_size;
  char *buf = malloc(size ? size : 1);
  int fd = buf ? open(real, O_RDONLY | O_CLOEXEC) : -1;
  size_t got = 0;
  while (fd >= 0 && got < size) {
    ssize_t r = read(fd, buf + got, size - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  if (fd >= 0) close(fd);
  if (fd < 0 || got < size) {
    send_str("ERROR", id, 0, "guest: cannot read the file");
  } else {
    send_frame("FILE", id, 0, buf, size);
  }
  free(buf);
}

static int all_digits(const char *s) {
  if (!s || !*s) return 0;
  for (; *s; s++)
    if (*s < '0' || *s > '9') return 0;
  return 1;
}

static char *rbuf;
static size_t rlen, rcap;

/* Handles the complete frames in rbuf; returns once one is incomplete. */
static void handle_frames(void) {
  size_t at = 0;
  for (;;) {
    char *start = rbuf + at;
    size_t avail = rlen - at;
    char *nl = memchr(start, '\n', avail);
    if (!nl) {
      if (avail > 4096) { /* a header never this long: drop the garbage */
        send_str("ERROR", 0, 0, "guest: malformed frame header");
        at = rlen;
      }
      break;
    }
    size_t hl = (size_t)(nl - start) + 1;
    char line[MAX_HEADER * 2];
    size_t ll = hl - 1 < sizeof line - 1 ? hl - 1 : sizeof line - 1;
    memcpy(line, start, ll);
    line[ll] = 0;
    char *save, *f[6] = {0};
    int nf = 0;
    for (char *t = strtok_r(line, " \t", &save); t && nf < 6; t = strtok_r(NULL, " \t", &save)) f[nf++] = t;
    if (nf < 1 || strcmp(f[0], "VBX1") != 0) {
      send_str("ERROR", 0, 0, "guest: malformed frame header");
      at += hl;
      continue;
    }
    long long id = f[2] ? atoll(f[2]) : 0;
    if (!all_digits(f[4]) || strlen(f[4]) > 9 || strtoul(f[4], NULL, 10) > MAX_PAYLOAD) {
      send_str("ERROR", id, 0, "guest: bad frame length");
      at += hl;
      continue;
    }
    size_t len = strtoul(f[4], NULL, 10);
    if (avail < hl + len) {
      if (rcap < hl + len) { /* room for the whole frame, once */
        memmove(rbuf, start, avail);
        rlen = avail;
        at = 0;
        rcap = hl + len + 65536;
        rbuf = realloc(rbuf, rcap);
        if (!rbuf) fail("out of memory for a frame");
      }
      break;
    }
    const char *type = f[1] ? f[1] : "";
    char *payload = start + hl;
    char sum[9];
    snprintf(sum, sizeof sum, "%08x", crc32_of(payload, len));
    long long arg = f[3] && (all_digits(f[3]) || (f[3][0] == '-' && all_digits(f[3] + 1))) ? atoll(f[3]) : 0;
    at += hl + len;
    if (!f[5] || strcmp(sum, f[5]) != 0) {
      char msg[96];
      snprintf(msg, sizeof msg, "guest: checksum mismatch on %.16s frame", type);
      send_str("ERROR", id, 0, msg);
    } else if (!strcmp(type, "STDIN")) {
      if (write_file("/tmp/stdin", payload, len) < 0) send_str("ERROR", id, 0, "guest: cannot write stdin");
    } else if (!strcmp(type, "EXEC")) {
      start_job(id, arg, payload, len);
    } else if (!strcmp(type, "SEED")) {
      seed(id, arg, payload, len);
    } else if (!strcmp(type, "KILL")) {
      kill_job();
    } else if (!strcmp(type, "READ")) {
      read_request(id, arg, payload, len);
    } else if (!strcmp(type, "POWEROFF")) {
      kill_job();
      off();
    } else {
      char msg[96];
      snprintf(msg, sizeof msg, "guest: unknown frame type %.16s", type);
      send_str("ERROR", id, 0, msg);
    }
  }
  memmove(rbuf, rbuf + at, rlen - at);
  rlen -= at;
}

int main(int argc, char **argv) {
  if (argc < 2) fail("usage: vbx-agent PORT [ROOT]");
  root = argc > 2 && argv[2][0] ? argv[2] : NULL;
  crc_init();
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) fail("signalfd failed");
  chan = open(argv[1], O_RDWR | O_CLOEXEC);
  if (chan < 0) fail("cannot open the channel");
  if (write_file("/tmp/stdin", "", 0) < 0) fail("cannot write /tmp/stdin");
  rcap = 65536 + MAX_HEADER;
  rbuf = malloc(rcap);
  if (!rbuf) fail("out of memory");

  struct utsname u;
  send_str("READY", 0, 0, uname(&u) == 0 ? u.release : "unknown");

  for (;;) {
    struct pollfd p[4] = {{chan, POLLIN, 0}, {sfd, POLLIN, 0}, {job.s[0].fd, POLLIN, 0}, {job.s[1].fd, POLLIN, 0}};
    int timeout = -1;
    if (job.next_flush) {
      uint64_t t = now_ms();
      timeout = job.next_flush > t ? (int)(job.next_flush - t) : 0;
    }
    int r = poll(p, 4, timeout);
    if (r < 0 && errno != EINTR) fail("poll failed");
    if (p[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) == sizeof si) {
      }
      reap();
    }
    for (int i = 0; i < 2; i++)
      if (job.s[i].fd >= 0 && (p[2 + i].revents & (POLLIN | POLLHUP | POLLERR))) drain(&job.s[i]);
    if (job.pid > 0 && job.done) {
      finish_job();
    } else if (job.next_flush && now_ms() >= job.next_flush) {
      live_flush();
    }
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      if (rcap - rlen < 65536) {
        rcap = rlen + 65536;
        rbuf = realloc(rbuf, rcap);
        if (!rbuf) fail("out of memory");
      }
      ssize_t n = read(chan, rbuf + rlen, rcap - rlen);
      if (n == 0) fail("channel closed");
      if (n < 0 && errno != EINTR && errno != EAGAIN) fail("channel read failed");
      if (n > 0) {
        rlen += (size_t)n;
        handle_frames();
      }
    }
  }
}
