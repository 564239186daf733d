/*
 * coop-init: PID 1 of a coop sandbox (SPEC 4.1), from its first moments to its end.
 *
 * The sandbox's init is cloned from a running Python process (never a new interpreter)
 * into new namespaces; once its ids are mapped it execs this program from a sealed memfd.
 * A forked Python init would keep a copy-on-write share of the supervisor's heap for the
 * sandbox's whole life, and every line of Python it ran would copy more of it.
 *
 *     coop-init CONTROL_FD DEFAULT_PATH LOOPBACK(0|1)
 *
 * CONTROL_FD is a SOCK_SEQPACKET socket speaking coop_run.initproto's wire format: each
 * record is a 4-byte big-endian length, then "op\0" and "key=value\0" items (a repeated
 * key is a list). What the records mean is in initproto's docstring. Two phases:
 *
 * - set-up: "setup" (hostname, what children may hold), then the mount plan of
 *   coop_run.rootfs_mounts one record per operation, ending with "pivot". Every mount
 *   point is resolved inside the new root exactly as coop_build.rootpath does (symlinks
 *   followed within it), so a symlink in an image can never steer a mount onto the host.
 *   Any failure is reported ("failed") and ends the init.
 * - serving: "ready", then spawn / signal / shutdown on request; reaps; forwards
 *   SIGTERM/SIGINT/SIGHUP sent from outside the PID namespace to every process inside.
 *
 * Capabilities: processes started here may hold the "setup" set at most (the bounding
 * set); the init itself then keeps only CAP_SYS_ADMIN (to stamp a reply with the child's
 * pid, which the kernel translates for the supervisor), CAP_KILL and the DAC overrides.
 * It is not dumpable, so processes inside, which hold less, can neither trace it nor
 * read its descriptors through /proc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAME (128 * 1024) /* initproto.MAX_FRAME */
#define MAX_ITEMS 16384
#define MAX_FDS 3              /* initproto.MAX_FDS */
#define ORPHAN_GRACE_MS 2000   /* the supervisor died: end the sandbox after this */
#define EXIT_BUG 125           /* sandbox_clone.EXEC_FAILED */
#define TEXT_MAX 1024          /* a human message, its prefix included, is cut below this */
#define MAX_HOPS 40            /* coop_build.rootpath._MAX_HOPS */

static int ctl = -1;            /* the control socket; -1 once the supervisor is gone */
static int sigfd = -1;
static int64_t deadline = -1;   /* monotonic ms when whatever is left gets SIGKILL */
static const char *default_path;
static pid_t *spawned;          /* processes started on request: their exits are reported */
static size_t n_spawned, cap_spawned;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- outgoing messages --------------------------------------------------------- */

struct msg {
    char buf[4 + 2 * TEXT_MAX];
    size_t len;
};

static void msg_item(struct msg *m, const char *key, const char *value)
{
    size_t room = sizeof m->buf - m->len;
    int n;

    if (room < 2)
        return;
    n = value ? snprintf(m->buf + m->len, room, "%s=%s", key, value)
              : snprintf(m->buf + m->len, room, "%s", key);
    if (n < 0)
        n = 0;
    if ((size_t)n >= room)
        n = (int)room - 1; /* cut to fit: snprintf ended it with NUL there */
    m->len += (size_t)n + 1;
}

static void msg_int(struct msg *m, const char *key, long long value)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", value);
    msg_item(m, key, text);
}

static void msg_start(struct msg *m, const char *op, long long id)
{
    m->len = 4;
    msg_item(m, op, NULL);
    if (id >= 0)
        msg_int(m, "id", id);
}

static void begin_shutdown(int64_t grace_ms);

static void orphaned(void)
{
    if (ctl >= 0)
        close(ctl);
    ctl = -1;
    begin_shutdown(ORPHAN_GRACE_MS);
}

/* One record, with a descriptor and the pid the kernel should report, if given. */
static void msg_send(struct msg *m, int fd, pid_t cred_pid)
{
    union {
        char buf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {m->buf, m->len};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    struct cmsghdr *c = (struct cmsghdr *)control.buf;
    uint32_t body = (uint32_t)(m->len - 4);
    size_t used = 0;

    if (ctl < 0)
        return;
    m->buf[0] = (char)(body >> 24);
    m->buf[1] = (char)(body >> 16);
    m->buf[2] = (char)(body >> 8);
    m->buf[3] = (char)body;
    memset(&control, 0, sizeof control);
    if (fd >= 0) {
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
        used += CMSG_SPACE(sizeof(int));
        c = (struct cmsghdr *)(control.buf + used);
    }
    if (cred_pid > 0) {
        struct ucred cred = {.pid = cred_pid, .uid = getuid(), .gid = getgid()};
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_CREDENTIALS;
        c->cmsg_len = CMSG_LEN(sizeof cred);
        memcpy(CMSG_DATA(c), &cred, sizeof cred);
        used += CMSG_SPACE(sizeof cred);
    }
    if (used) {
        mh.msg_control = control.buf;
        mh.msg_controllen = used;
    }
    while (sendmsg(ctl, &mh, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR) {
            orphaned();
            return;
        }
    }
}

/* A message whose one field is a human text: "error" (with the request's id) or
 * "failed". ``prefix`` and ``fmt`` together are cut to TEXT_MAX - 1 bytes, however long
 * the prefix. */
static void send_textv(const char *op, long long id, const char *prefix, const char *fmt,
                       va_list ap)
{
    struct msg m;
    char text[TEXT_MAX];
    size_t used = strnlen(prefix, sizeof text - 1);

    memcpy(text, prefix, used);
    vsnprintf(text + used, sizeof text - used, fmt, ap); /* room for its NUL at least */
    msg_start(&m, op, id);
    msg_item(&m, "message", text);
    msg_send(&m, -1, 0);
}

static void reply_error(long long id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_textv("error", id, "", fmt, ap);
    va_end(ap);
}

/* The root cannot be built: say why, and end (nothing runs inside yet). */
static _Noreturn void setup_failed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_textv("failed", -1, "sandbox setup failed: ", fmt, ap);
    va_end(ap);
    _exit(EXIT_BUG);
}

/* Reports ``fmt`` as "failed" with the given prefix (for ``die``). */
static void send_failed(const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_textv("failed", -1, prefix, fmt, ap);
    va_end(ap);
}

static void reply_ok(long long id)
{
    struct msg m;
    msg_start(&m, "ok", id);
    msg_send(&m, -1, 0);
}

/* A bug or a broken kernel promise: take the sandbox down rather than limp on. */
static _Noreturn void die(const char *what)
{
    send_failed("sandbox init failed: ", "%s: %s", what, strerror(errno));
    kill(-1, SIGKILL);
    _exit(EXIT_BUG);
}

/* --- children -------------------------------------------------------------------- */

static void remember(pid_t pid)
{
    if (n_spawned == cap_spawned) {
        size_t grown = cap_spawned ? cap_spawned * 2 : 16;
        pid_t *more = realloc(spawned, grown * sizeof *more);
        if (!more)
            die("realloc");
        spawned = more;
        cap_spawned = grown;
    }
    spawned[n_spawned++] = pid;
}

static int forget(pid_t pid)
{
    for (size_t i = 0; i < n_spawned; i++) {
        if (spawned[i] == pid) {
            spawned[i] = spawned[--n_spawned];
            return 1;
        }
    }
    return 0;
}

static void reap(void)
{
    int status;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct msg m;
        if (!forget(pid))
            continue; /* an orphan re-parented to us: only reaped */
        msg_start(&m, "exited", -1);
        msg_int(&m, "pid", pid);
        if (WIFSIGNALED(status))
            msg_int(&m, "signal", WTERMSIG(status));
        else
            msg_int(&m, "code", WEXITSTATUS(status));
        msg_send(&m, -1, 0);
    }
}

static int has_children(void)
{
    siginfo_t info;

    reap();
    memset(&info, 0, sizeof info); /* WNOWAIT: look without reaping an unreported exit */
    return waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) == 0 || errno != ECHILD;
}

static void begin_shutdown(int64_t grace_ms)
{
    int64_t end = now_ms() + grace_ms;

    if (deadline < 0) {
        deadline = end;
        kill(-1, SIGTERM);
    } else if (end < deadline) {
        deadline = end;
    }
}

static void on_signals(void)
{
    struct signalfd_siginfo info;

    while (read(sigfd, &info, sizeof info) == (ssize_t)sizeof info) {
        int sig = (int)info.ssi_signo;
        /* pid 0: sent from outside our PID namespace. From inside, ignored: the agent
         * cannot take the sandbox down by signalling PID 1. */
        if ((sig == SIGTERM || sig == SIGINT || sig == SIGHUP) && info.ssi_pid == 0)
            kill(-1, sig);
    }
    reap();
}

/* --- requests ---------------------------------------------------------------------- */

static int parse_int(const char *text, long long low, long long high, long long *out)
{
    char *end;
    long long value;

    if (!*text || (text[0] == '0' && text[1]) || (text[0] == '-' && !text[1]))
        return -1;
    errno = 0;
    value = strtoll(text, &end, 10);
    if (errno || *end || value < low || value > high)
        return -1;
    *out = value;
    return 0;
}

static const char *find_path(char **env)
{
    for (; *env; env++)
        if (strncmp(*env, "PATH=", 5) == 0)
            return *env + 5;
    return default_path;
}

/* The program inside the sandbox: ``name`` looked up in the spawn's own PATH. */
static int find_program(const char *name, const char *path, char *out, size_t size)
{
    if (strchr(name, '/')) {
        if ((size_t)snprintf(out, size, "%s", name) >= size)
            return ENAMETOOLONG;
        return 0;
    }
    for (const char *dir = path;; dir++) {
        const char *colon = strchr(dir, ':');
        size_t len = colon ? (size_t)(colon - dir) : strlen(dir);
        struct stat st;
        int n = len ? snprintf(out, size, "%.*s/%s", (int)len, dir, name)
                    : snprintf(out, size, "./%s", name);
        if (n > 0 && (size_t)n < size && access(out, X_OK) == 0 && stat(out, &st) == 0
            && !S_ISDIR(st.st_mode))
            return 0;
        if (!colon)
            return -1;
        dir = colon;
    }
}

/* A PTY pair from the sandbox's own devpts: the master, and the slave's path inside. */
static int open_pty(int cols, int rows, char *pts, size_t size)
{
    int unlock = 0;
    unsigned int number;
    struct winsize ws = {.ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols};
    int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);

    if (master < 0)
        return -1;
    if (ioctl(master, TIOCSPTLCK, &unlock) < 0 || ioctl(master, TIOCGPTN, &number) < 0
        || ioctl(master, TIOCSWINSZ, &ws) < 0) {
        int saved = errno;
        close(master);
        errno = saved;
        return -1;
    }
    snprintf(pts, size, "/dev/pts/%u", number);
    return master;
}

struct spawn_req {
    char **argv, **env;
    size_t argc, envc;
    const char *cwd;
    int pty, cols, rows, stdio;
};

static void spawn(long long id, struct spawn_req *r, const int *fds, int nfds)
{
    char path[4096], pts[32] = "";
    int master = -1, rc;
    pid_t pid;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    sigset_t none;
    struct msg m;

    if (nfds != r->stdio) {
        reply_error(id, "spawn: %d descriptors sent, %d declared", nfds, r->stdio);
        return;
    }
    rc = find_program(r->argv[0], find_path(r->env), path, sizeof path);
    if (rc) {
        reply_error(id, "cannot run %s: %s", r->argv[0],
                    rc < 0 ? "not found in PATH" : strerror(rc));
        return;
    }
    if (r->pty && (master = open_pty(r->cols, r->rows, pts, sizeof pts)) < 0) {
        reply_error(id, "cannot open a PTY: %s", strerror(errno));
        return;
    }
    if (chdir(r->cwd ? r->cwd : "/") < 0) {
        reply_error(id, "cannot change to %s: %s", r->cwd ? r->cwd : "/", strerror(errno));
        if (master >= 0)
            close(master);
        return;
    }
    posix_spawn_file_actions_init(&actions);
    if (r->pty || nfds == 0) {
        /* Opened after setsid without O_NOCTTY: the PTY becomes the controlling tty. */
        posix_spawn_file_actions_addopen(&actions, 0, r->pty ? pts : "/dev/null", O_RDWR, 0);
        posix_spawn_file_actions_adddup2(&actions, 0, 1);
        posix_spawn_file_actions_adddup2(&actions, 0, 2);
    } else {
        for (int i = 0; i < nfds; i++) /* received with MSG_CMSG_CLOEXEC, all above 2 */
            posix_spawn_file_actions_adddup2(&actions, fds[i], i);
    }
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK);
    rc = posix_spawn(&pid, path, &actions, &attr, r->argv, r->env);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (chdir("/") < 0)
        die("chdir /");
    if (rc) {
        reply_error(id, "cannot run %s: %s", r->argv[0], strerror(rc));
        if (master >= 0)
            close(master);
        return;
    }
    remember(pid);
    msg_start(&m, "spawned", id);
    msg_int(&m, "pid", pid);
    if (r->pty)
        msg_item(&m, "pts", pts);
    msg_send(&m, master, pid);
    if (master >= 0)
        close(master);
}

/* A record split in place: its op, then its items in order (a repeated key is there as
 * many times as it was sent); ``value`` is NULL for an item without '='. */
struct record {
    const char *op;
    char *key[MAX_ITEMS], *value[MAX_ITEMS];
    size_t count;
};

static struct record rec;
static char *spawn_argv[MAX_ITEMS], *spawn_env[MAX_ITEMS];

/* ``body`` (``len`` bytes, NUL-terminated by read_record) into ``r``: NULL, or what is
 * wrong with it. */
static const char *split_record(char *body, size_t len, struct record *r)
{
    if (len == 0 || body[len - 1] != '\0')
        return "a record does not end its last item";
    r->op = body;
    r->count = 0;
    for (char *p = body + strlen(body) + 1, *next; p < body + len; p = next) {
        char *eq = strchr(p, '=');
        next = p + strlen(p) + 1; /* before the '=' below is cut */
        if (r->count == MAX_ITEMS)
            return "too many items";
        if (eq)
            *eq = '\0';
        r->key[r->count] = p;
        r->value[r->count++] = eq ? eq + 1 : NULL;
    }
    return NULL;
}

/* The first value of ``key`` in ``r``; NULL when absent. */
static const char *field(const struct record *r, const char *key)
{
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->key[i], key) == 0)
            return r->value[i];
    return NULL;
}

/* One "key=value" of a spawn request into ``r``; 0 if the key or value is bad. */
static int spawn_field(struct spawn_req *r, const char *key, char *val)
{
    long long value;
    const char *eq;

    if (strcmp(key, "argv") == 0) {
        r->argv[r->argc++] = val;
        return 1;
    }
    if (strcmp(key, "env") == 0) {
        eq = strchr(val, '=');
        if (!eq || eq == val)
            return 0;
        r->env[r->envc++] = val;
        return 1;
    }
    if (strcmp(key, "cwd") == 0) {
        r->cwd = val;
        return val[0] == '/';
    }
    if (strcmp(key, "pty") == 0 && parse_int(val, 0, 1, &value) == 0)
        r->pty = (int)value;
    else if (strcmp(key, "cols") == 0 && parse_int(val, 1, 65535, &value) == 0)
        r->cols = (int)value;
    else if (strcmp(key, "rows") == 0 && parse_int(val, 1, 65535, &value) == 0)
        r->rows = (int)value;
    else if (strcmp(key, "stdio") == 0 && parse_int(val, 0, MAX_FDS, &value) == 0)
        r->stdio = (int)value;
    else
        return 0;
    return 1;
}

/* One request: the body of a record (NUL-terminated by read_record). */
static void handle(char *body, size_t len, const int *fds, int nfds)
{
    const char *problem = split_record(body, len, &rec);
    const char *op = rec.op, *id_text;
    long long id = -1;
    struct spawn_req r = {.argv = spawn_argv, .env = spawn_env, .cols = 80, .rows = 24};
    long long pid = -1, signo = -1;
    double grace = 5.0;

    if (problem) {
        reply_error(-1, "%s", problem);
        return;
    }
    id_text = field(&rec, "id"); /* the id first, so every error can carry it */
    if (id_text && parse_int(id_text, 0, 1LL << 53, &id)) {
        reply_error(-1, "%s: 'id' must be an integer in 0..%lld", op, 1LL << 53);
        return;
    }
    if (id < 0) {
        reply_error(-1, "%s: 'id' is missing", op);
        return;
    }
    if (strcmp(op, "spawn") != 0 && strcmp(op, "signal") != 0 && strcmp(op, "shutdown") != 0) {
        reply_error(id, "unknown request op '%s'", op);
        return;
    }
    for (size_t i = 0; i < rec.count; i++) {
        const char *key = rec.key[i];
        char *val = rec.value[i];
        int ok = 1;

        if (!val) {
            reply_error(id, "%s: item without '='", op);
            return;
        }
        if (strcmp(key, "id") == 0)
            continue;
        if (strcmp(op, "spawn") == 0) {
            ok = spawn_field(&r, key, val);
        } else if (strcmp(op, "signal") == 0) {
            if (strcmp(key, "pid") == 0)
                ok = parse_int(val, 1, 1 << 22, &pid) == 0;
            else if (strcmp(key, "signo") == 0)
                ok = parse_int(val, 0, 64, &signo) == 0;
            else
                ok = 0;
        } else { /* shutdown */
            char *end;
            ok = strcmp(key, "grace") == 0;
            if (ok) {
                grace = strtod(val, &end);
                ok = *val && !*end && grace >= 0 && grace <= 3600;
            }
        }
        if (!ok) {
            reply_error(id, "%s: bad field '%s'", op, key);
            return;
        }
    }
    if (strcmp(op, "shutdown") == 0) {
        reply_ok(id);
        begin_shutdown((int64_t)(grace * 1000));
    } else if (deadline >= 0) {
        reply_error(id, "the sandbox is shutting down");
    } else if (strcmp(op, "signal") == 0) {
        if (pid < 0 || signo < 0)
            reply_error(id, "signal: 'pid' and 'signo' are required");
        else if (pid <= 1)
            reply_error(id, "cannot signal the init");
        else if (kill((pid_t)pid, (int)signo) < 0)
            reply_error(id, "kill %lld: %s", pid, strerror(errno));
        else
            reply_ok(id);
    } else {
        if (r.argc == 0 || (r.stdio != 0 && r.stdio != MAX_FDS) || (r.pty && r.stdio)) {
            reply_error(id, "spawn: a program, and 'stdio' 0 or 3 (0 with a PTY)");
            return;
        }
        r.argv[r.argc] = NULL;
        r.env[r.envc] = NULL;
        spawn(id, &r, fds, nfds);
    }
}

static char frame[4 + MAX_FRAME + 1];

/* One record into ``frame`` (its body NUL-terminated), with the descriptors it carried.
 * Returns the body's length; -1 at end of file or on a socket error (the supervisor is
 * gone), -2 when there was nothing to read yet, -3 for a malformed record. */
static ssize_t read_record(int flags, int *fds, int *nfds, const char **problem)
{
    union {
        char buf[CMSG_SPACE(MAX_FDS * sizeof(int))];
        struct cmsghdr align;
    } control;
    struct iovec iov = {frame, sizeof frame - 1};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                        .msg_controllen = sizeof control.buf};
    ssize_t n;

    *nfds = 0;
    do
        n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC | flags);
    while (n < 0 && errno == EINTR && !(flags & MSG_DONTWAIT));
    if (n < 0)
        return errno == EAGAIN || errno == EINTR ? -2 : -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        for (size_t k = 0; k < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); k++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + k * sizeof(int), sizeof fd);
            if (*nfds < MAX_FDS)
                fds[(*nfds)++] = fd;
            else
                close(fd);
        }
    }
    if (n == 0 && *nfds == 0)
        return -1; /* end of file: the supervisor is gone */
    if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
        *problem = "message or its descriptors were truncated";
        return -3;
    }
    if (n < 4 || ((uint32_t)(unsigned char)frame[0] << 24
                  | (uint32_t)(unsigned char)frame[1] << 16
                  | (uint32_t)(unsigned char)frame[2] << 8
                  | (uint32_t)(unsigned char)frame[3]) != (uint32_t)(n - 4)) {
        *problem = "frame is not exactly one message";
        return -3;
    }
    frame[n] = '\0';
    return n - 4;
}

static void on_request(void)
{
    int fds[MAX_FDS], nfds;
    const char *problem = NULL;
    ssize_t len = read_record(MSG_DONTWAIT, fds, &nfds, &problem);

    if (len == -1)
        orphaned();
    else if (len == -3)
        reply_error(-1, "%s", problem);
    else if (len >= 0)
        handle(frame + 4, (size_t)len, fds, nfds);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

/* --- set-up: the root ------------------------------------------------------------ */

static char root[PATH_MAX];        /* host path the overlay is mounted on */
static uint64_t child_caps;        /* what processes inside may hold */
static int root_done;

static int is_symlink(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0 && S_ISLNK(st.st_mode);
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int exists(const char *path, int follow)
{
    struct stat st;
    return (follow ? stat(path, &st) : lstat(path, &st)) == 0;
}

/* coop_build.rootpath.resolve_in_root: ``path`` with every symlink followed *within*
 * ``root`` (absolute links restart at it, ".." stops at it), relative to it; missing
 * components are kept. 0, or an errno. */
static int resolve_in_root(const char *path, char *out, size_t size)
{
    char pending[PATH_MAX], rest[PATH_MAX], candidate[PATH_MAX], link[PATH_MAX];
    size_t len = 0;
    int hops = 0;

    if ((size_t)snprintf(pending, sizeof pending, "%s", path) >= sizeof pending)
        return ENAMETOOLONG;
    out[0] = '\0';
    for (char *p = pending; *p;) {
        char *slash = strchr(p, '/');
        size_t plen = slash ? (size_t)(slash - p) : strlen(p);
        char part[NAME_MAX + 1];
        ssize_t n;

        if (plen > NAME_MAX)
            return ENAMETOOLONG;
        memcpy(part, p, plen);
        part[plen] = '\0';
        p = slash ? slash + 1 : p + plen;
        if (plen == 0 || strcmp(part, ".") == 0)
            continue;
        if (strcmp(part, "..") == 0) {
            char *last = strrchr(out, '/');
            len = last ? (size_t)(last - out) : 0;
            out[len] = '\0';
            continue;
        }
        if ((size_t)snprintf(candidate, sizeof candidate, "%s/%s%s%s", root, out,
                             len ? "/" : "", part) >= sizeof candidate)
            return ENAMETOOLONG;
        if (is_symlink(candidate)) {
            if (++hops > MAX_HOPS)
                return ELOOP;
            n = readlink(candidate, link, sizeof link - 1);
            if (n < 0)
                return errno;
            link[n] = '\0';
            if (link[0] == '/') {
                len = 0;
                out[0] = '\0';
            }
            /* the link's parts go before what is left */
            if ((size_t)snprintf(rest, sizeof rest, "%s/%s", link, p) >= sizeof rest)
                return ENAMETOOLONG;
            memcpy(pending, rest, strlen(rest) + 1);
            p = pending;
            continue;
        }
        if (len + plen + 2 > size)
            return ENAMETOOLONG;
        if (len)
            out[len++] = '/';
        memcpy(out + len, part, plen + 1);
        len += plen;
    }
    return 0;
}

/* rootfs_mounts.ensure_target: the host-side path of mount point ``path`` inside the
 * root, created (in this session's upper) if missing. 0, or an errno. */
static int ensure_target(const char *path, int is_file, char *full, size_t size)
{
    char rel[PATH_MAX];
    int err = resolve_in_root(path, rel, sizeof rel);

    if (err)
        return err;
    for (char *slash = strchr(rel, '/'); slash; slash = strchr(slash + 1, '/')) {
        int n;
        *slash = '\0';
        n = snprintf(full, size, "%s/%s", root, rel);
        *slash = '/';
        if (n < 0 || (size_t)n >= size)
            return ENAMETOOLONG;
        if (!is_dir(full) && mkdir(full, 0755) < 0)
            return errno;
    }
    if ((size_t)snprintf(full, size, "%s%s%s", root, rel[0] ? "/" : "", rel) >= size)
        return ENAMETOOLONG;
    if (!exists(full, 0)) {
        if (!is_file) {
            if (mkdir(full, 0755) < 0)
                return errno;
        } else {
            int fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd < 0)
                return errno;
            close(fd);
        }
    }
    return 0;
}

/* coop_build.linux.bind_mount: read-only needs a remount that keeps the flags a user
 * namespace locks (nosuid, nodev, noexec, atime). 0, or an errno. */
static int bind_mount(const char *source, const char *target, int readonly, int recursive)
{
    static const struct { unsigned long st, ms; } kept[] = {
        {ST_RDONLY, MS_RDONLY}, {ST_NOSUID, MS_NOSUID}, {ST_NODEV, MS_NODEV},
        {ST_NOEXEC, MS_NOEXEC}, {ST_NOATIME, MS_NOATIME}, {ST_NODIRATIME, MS_NODIRATIME},
        {ST_RELATIME, MS_RELATIME},
    };
    struct statvfs sv;
    unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY;

    if (mount(source, target, NULL, MS_BIND | (recursive ? MS_REC : 0), NULL) < 0)
        return errno;
    if (!readonly)
        return 0;
    if (statvfs(target, &sv) < 0)
        return errno;
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        if (sv.f_flag & kept[i].st)
            flags |= kept[i].ms;
    return mount(NULL, target, NULL, flags, NULL) < 0 ? errno : 0;
}

static const char *required(const struct record *r, const char *key)
{
    const char *value = field(r, key);
    if (!value)
        setup_failed("%s: '%s' is missing", r->op, key);
    return value;
}

static int flag(const struct record *r, const char *key)
{
    const char *value = required(r, key);
    if (strcmp(value, "0") != 0 && strcmp(value, "1") != 0)
        setup_failed("%s: '%s' must be 0 or 1", r->op, key);
    return value[0] == '1';
}

/* The fields of every set-up op (initproto.SCHEMAS): a record with another is refused,
 * so a field renamed on one side fails the start instead of reading as absent. */
static const struct {
    const char *op, *keys;
} setup_fields[] = {
    {"setup", " hostname child_caps "},
    {"overlay", " root base data "},
    {"fresh", " fstype target flags data "},
    {"bind", " source target file readonly recursive optional "},
    {"symlink", " target points_to "},
    {"hostentry", " name "},
    {"pivot", " "},
};

static void check_fields(const struct record *r)
{
    const char *keys = NULL;
    char padded[64];

    for (size_t i = 0; i < sizeof setup_fields / sizeof setup_fields[0]; i++)
        if (strcmp(r->op, setup_fields[i].op) == 0)
            keys = setup_fields[i].keys;
    if (!keys)
        setup_failed("unknown set-up op '%s'", r->op);
    for (size_t i = 0; i < r->count; i++) {
        int n = snprintf(padded, sizeof padded, " %s ", r->key[i]);
        if (n < 0 || (size_t)n >= sizeof padded || !strstr(keys, padded))
            setup_failed("%s: unknown field '%s'", r->op, r->key[i]);
    }
}

/* "setup": uid 0 of the sandbox, its hostname, what processes inside may hold. */
static void setup_identity(const struct record *r)
{
    const char *hostname = required(r, "hostname");
    long long cap;

    for (size_t i = 0; i < r->count; i++) {
        if (strcmp(r->key[i], "child_caps") != 0)
            continue;
        if (parse_int(r->value[i], 0, 63, &cap))
            setup_failed("setup: bad capability '%s'", r->value[i]);
        child_caps |= 1ULL << cap;
    }
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        setup_failed("cannot become uid 0 of the sandbox: %s", strerror(errno));
    setgroups(0, NULL); /* refused after "deny" (a single mapping): nothing to drop then */
    if (sethostname(hostname, strlen(hostname)) < 0)
        setup_failed("sethostname: %s", strerror(errno));
}

/* One operation of the mount plan (rootfs_mounts.plan_records). */
static void setup_op(const struct record *r)
{
    const char *op = r->op;
    char full[PATH_MAX];
    int err = 0;

    check_fields(r);
    if (strcmp(op, "setup") == 0) {
        setup_identity(r);
    } else if (strcmp(op, "overlay") == 0) {
        const char *base = required(r, "base");
        if ((size_t)snprintf(root, sizeof root, "%s", required(r, "root")) >= sizeof root)
            setup_failed("overlay: root path too long");
        /* Relative layer paths (from base) keep the option string under a page. */
        if (chdir(base) < 0 || mount("overlay", root, "overlay", 0,
                                     required(r, "data")) < 0 || chdir("/") < 0)
            setup_failed("overlay on %s: %s", root, strerror(errno));
    } else if (!root[0]) {
        setup_failed("%s before the overlay", op);
    } else if (strcmp(op, "fresh") == 0) {
        const char *type = required(r, "fstype"), *target = required(r, "target");
        long long flags;
        if (parse_int(required(r, "flags"), 0, 1LL << 32, &flags))
            setup_failed("fresh: bad flags");
        err = ensure_target(target, 0, full, sizeof full);
        if (!err && mount(type, full, type, (unsigned long)flags, field(r, "data")) < 0)
            err = errno;
        if (err)
            setup_failed("%s on %s: %s", type, target, strerror(err));
    } else if (strcmp(op, "bind") == 0) {
        const char *source = required(r, "source"), *target = required(r, "target");
        int optional = flag(r, "optional");
        if (optional && !exists(source, 1))
            return;
        err = ensure_target(target, flag(r, "file"), full, sizeof full);
        if (err && optional)
            return;
        if (!err)
            err = bind_mount(source, full, flag(r, "readonly"), flag(r, "recursive"));
        if (err)
            setup_failed("bind %s on %s: %s", source, target, strerror(err));
    } else if (strcmp(op, "symlink") == 0) {
        const char *target = required(r, "target"), *to = required(r, "points_to");
        char dir[PATH_MAX], rel[PATH_MAX];
        const char *name = strrchr(target, '/');
        snprintf(dir, sizeof dir, "%.*s", name ? (int)(name - target) : 0, target);
        name = name ? name + 1 : target;
        err = resolve_in_root(dir, rel, sizeof rel);
        if (!err && (size_t)snprintf(full, sizeof full, "%s/%s%s%s", root, rel,
                                     rel[0] ? "/" : "", name) >= sizeof full)
            err = ENAMETOOLONG;
        if (!err && symlink(to, full) < 0)
            err = errno;
        if (err)
            setup_failed("symlink %s: %s", target, strerror(err));
    } else if (strcmp(op, "hostentry") == 0) {
        /* image = "host": a top-level host entry; a symlink stays one, a dir is bound */
        const char *name = required(r, "name");
        char host[PATH_MAX], inside[PATH_MAX], link[PATH_MAX];
        ssize_t n = snprintf(inside, sizeof inside, "%s/%s", root, name);
        if (n < 0 || (size_t)n >= sizeof inside || strlen(name) >= sizeof host - 1)
            setup_failed("host entry %s: %s", name, strerror(ENAMETOOLONG));
        snprintf(host, sizeof host, "/%s", name);
        if (is_symlink(host)) {
            if (exists(inside, 0) && !is_symlink(inside))
                return; /* the layers have a real directory there; leave it */
            if ((n = readlink(host, link, sizeof link - 1)) < 0)
                setup_failed("readlink %s: %s", host, strerror(errno));
            link[n] = '\0';
            if ((is_symlink(inside) && unlink(inside) < 0) || symlink(link, inside) < 0)
                setup_failed("symlink %s: %s", inside, strerror(errno));
        } else if (is_dir(host)) {
            err = ensure_target(host, 0, full, sizeof full);
            if (!err)
                err = bind_mount(host, full, 1, 1);
            if (err)
                setup_failed("bind %s: %s", host, strerror(err));
        }
    } else if (strcmp(op, "pivot") == 0) {
        if (chdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0
            || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
            setup_failed("pivot_root: %s", strerror(errno));
        root_done = 1;
    }
}

/* The set-up phase: records until "pivot". End of file first: a spare nobody needed. */
static void build_root(void)
{
    while (!root_done) {
        int fds[MAX_FDS], nfds;
        const char *problem = NULL;
        ssize_t len = read_record(0, fds, &nfds, &problem);

        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        if (len == -1)
            _exit(0);
        if (len >= 0) /* blocking: -2 (nothing yet) cannot come back */
            problem = split_record(frame + 4, (size_t)len, &rec);
        if (problem)
            setup_failed("%s", problem);
        for (size_t i = 0; i < rec.count; i++)
            if (!rec.value[i])
                setup_failed("%s: item without '='", rec.op);
        setup_op(&rec);
    }
}

/* --- start ----------------------------------------------------------------------- */

static void limit_capabilities(uint64_t children)
{
    const uint64_t own = 1ULL << CAP_SYS_ADMIN | 1ULL << CAP_KILL | 1ULL << CAP_DAC_OVERRIDE
                         | 1ULL << CAP_DAC_READ_SEARCH;
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];

    for (int cap = 0; cap < 64; cap++) {
        if (children & (1ULL << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
            if (errno == EINVAL)
                break; /* past the kernel's last capability */
            die("prctl(PR_CAPBSET_DROP)");
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        die("prctl(PR_CAP_AMBIENT_CLEAR_ALL)");
    memset(data, 0, sizeof data);
    for (int word = 0; word < 2; word++)
        data[word].effective = data[word].permitted = (uint32_t)(own >> (32 * word));
    if (syscall(SYS_capset, &header, data) < 0)
        die("capset");
}

/* Set IFF_UP on "lo" of our network namespace. */
static void loopback_up(void)
{
    struct ifreq ifr;
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (sock < 0 || ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
        setup_failed("loopback: %s", strerror(errno));
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(sock, SIOCSIFFLAGS, &ifr) < 0)
        setup_failed("loopback: %s", strerror(errno));
    close(sock);
}

/* What needs no sandbox: own session, quiet stdio, signals by signalfd, loopback,
 * private mount propagation. */
static void base(int lo)
{
    sigset_t handled;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);

    setsid();
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
        setup_failed("/dev/null: %s", strerror(errno));
    close(null);
    /* Dispositions the Python side had (it ignores SIGPIPE and SIGXFSZ) survive exec. */
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    sigemptyset(&handled);
    sigaddset(&handled, SIGCHLD);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &handled, NULL) < 0
        || (sigfd = signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
        setup_failed("signalfd: %s", strerror(errno));
    if (lo)
        loopback_up();
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        setup_failed("private propagation: %s", strerror(errno));
}

static _Noreturn void serve(void)
{
    struct msg m;

    msg_start(&m, "ready", -1);
    msg_int(&m, "pid", getpid());
    msg_send(&m, -1, 0);
    for (;;) {
        struct pollfd watch[2] = {{.fd = sigfd, .events = POLLIN}, {.fd = ctl, .events = POLLIN}};
        int timeout = -1;

        if (deadline >= 0) {
            int64_t left;
            if (!has_children())
                _exit(0);
            left = deadline - now_ms();
            if (left <= 0) {
                kill(-1, SIGKILL);
                _exit(0); /* the kernel kills and reaps whatever is left */
            }
            timeout = left > 60000 ? 60000 : (int)left;
        }
        if (poll(watch, ctl >= 0 ? 2 : 1, timeout) < 0) {
            if (errno == EINTR)
                continue;
            die("poll");
        }
        if (watch[0].revents)
            on_signals();
        if (ctl >= 0 && watch[1].revents)
            on_request();
    }
}

int main(int argc, char **argv)
{
    long long fd, lo;

    if (argc != 4 || parse_int(argv[1], 3, 1 << 20, &fd) != 0
        || parse_int(argv[3], 0, 1, &lo) != 0) {
        fprintf(stderr, "usage: coop-init CONTROL_FD DEFAULT_PATH LOOPBACK\n");
        return 2;
    }
    ctl = (int)fd;
    default_path = argv[2];
    prctl(PR_SET_NAME, "coop-init", 0, 0, 0);
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || fcntl(ctl, F_SETFD, FD_CLOEXEC) < 0)
        setup_failed("prctl/fcntl: %s", strerror(errno));
    base((int)lo);
    build_root();
    limit_capabilities(child_caps);
    serve();
}
