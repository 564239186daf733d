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
 * CONTROL_FD is a SOCK_SEQPACKET socket speaking coop_run.sandbox.initproto's wire format:
 * each record is a 4-byte big-endian length, then "op\0" and "key=value\0" items (a repeated
 * key is a list). What the records mean is in initproto's docstring; every op and field
 * name, with its kind, comes from initproto.h, which initproto.py generates: the init
 * spells none of its own. An op is taken by one table row (its handler); a record whose
 * op or fields its schema does not name is refused. Two phases:
 *
 * - set-up: "setup" (hostname, what children may hold), then the mount plan of
 *   coop_run.sandbox.mounts, one record per operation, ending with "pivot". Every mount
 *   point is resolved inside the new root exactly as coop_build.rootpath does (symlinks
 *   followed within it), so a symlink in an image can never steer a mount onto the host.
 *   The overlay's directories come as descriptors with their records (layers, mount
 *   point, upper, work), never as names to walk to: root's sandbox is an unprivileged
 *   id range that may not enter root's 0700 directories; so do root's bind sources (a
 *   plain user's init is that user and walks them). Any failure is reported ("failed")
 *   and ends the init.
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
#include <sched.h>
#include <signal.h>
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
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "initproto.h"          /* MAX_FRAME, MAX_FDS, the ops and their fields */

#define MAX_ITEMS 16384
#define ORPHAN_GRACE_MS 2000   /* the supervisor died: end the sandbox after this */
#define EXIT_BUG 125           /* sandbox.clone.EXEC_FAILED */
#define TEXT_MAX 1024          /* a human message, its prefix included, is cut below this */
#define MAX_HOPS 40            /* coop_build.rootpath._MAX_HOPS */
#define MAX_ID (1LL << 53)

#define PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

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

/* The wire name of field ``f`` of ``op``. */
static const char *field_name(enum op op, int f)
{
    return schema[op].field[f].name;
}

/* --- outgoing messages --------------------------------------------------------- */

struct msg {
    char buf[4 + 2 * TEXT_MAX];
    size_t len;
    enum op op;
};

/* "key=value", or "key" alone when ``value`` is NULL; cut to fit the buffer. */
static void msg_put(struct msg *m, const char *key, const char *value)
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

/* Field ``f`` of the message's op. */
static void msg_item(struct msg *m, int f, const char *value)
{
    msg_put(m, field_name(m->op, f), value);
}

static void msg_int(struct msg *m, int f, long long value)
{
    char text[24];
    snprintf(text, sizeof text, "%lld", value);
    msg_item(m, f, text);
}

static void msg_start(struct msg *m, enum op op)
{
    m->op = op;
    m->len = 4;
    msg_put(m, schema[op].name, NULL);
}

/* ``prefix`` then ``fmt`` as field ``f``: the two together are cut to TEXT_MAX - 1
 * bytes, however long the prefix. */
PRINTF(4, 0)
static void msg_textv(struct msg *m, int f, const char *prefix, const char *fmt, va_list ap)
{
    char text[TEXT_MAX];
    size_t used = strnlen(prefix, sizeof text - 1);

    memcpy(text, prefix, used);
    vsnprintf(text + used, sizeof text - used, fmt, ap); /* room for its NUL at least */
    msg_item(m, f, text);
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

/* "error", the answer to request ``id`` (-1: the request had none). */
PRINTF(2, 3)
static void reply_error(long long id, const char *fmt, ...)
{
    struct msg m;
    va_list ap;

    msg_start(&m, OP_ERROR);
    if (id >= 0)
        msg_int(&m, F_ERROR_ID, id);
    va_start(ap, fmt);
    msg_textv(&m, F_ERROR_MESSAGE, "", fmt, ap);
    va_end(ap);
    msg_send(&m, -1, 0);
}

/* "failed": why the init ends. */
PRINTF(2, 0)
static void send_failedv(const char *prefix, const char *fmt, va_list ap)
{
    struct msg m;

    msg_start(&m, OP_FAILED);
    msg_textv(&m, F_FAILED_MESSAGE, prefix, fmt, ap);
    msg_send(&m, -1, 0);
}

/* The root cannot be built: say why, and end (nothing runs inside yet). */
PRINTF(1, 2)
static _Noreturn void setup_failed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_failedv("sandbox setup failed: ", fmt, ap);
    va_end(ap);
    _exit(EXIT_BUG);
}

/* Reports ``fmt`` as "failed" with the given prefix (for ``die``). */
PRINTF(2, 3)
static void send_failed(const char *prefix, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    send_failedv(prefix, fmt, ap);
    va_end(ap);
}

static void reply_ok(long long id)
{
    struct msg m;
    msg_start(&m, OP_OK);
    msg_int(&m, F_OK_ID, id);
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
        msg_start(&m, OP_EXITED);
        msg_int(&m, F_EXITED_PID, pid);
        if (WIFSIGNALED(status))
            msg_int(&m, F_EXITED_SIGNAL, WTERMSIG(status));
        else
            msg_int(&m, F_EXITED_CODE, WEXITSTATUS(status));
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

/* --- records ------------------------------------------------------------------------ */

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

/* A record split in place: its op, then its items in order (a repeated key is there as
 * many times as it was sent); ``value`` is NULL for an item without '='. Checked against
 * its op's schema, ``field`` is each item's field there. */
struct record {
    const char *op;
    char *key[MAX_ITEMS], *value[MAX_ITEMS];
    int field[MAX_ITEMS];
    size_t count;
};

static struct record rec;

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

/* A record that fits its op's schema, as its handler reads it. A list field's values
 * are the items of ``rec`` whose ``field`` is it. */
struct args {
    enum op op;
    const struct record *rec;
    const char *one[MAX_OP_FIELDS]; /* a single-valued field's value; NULL when absent */
    long long id;                   /* a request's; -1 in set-up */
    const int *fds;                 /* the descriptors that came with a request */
    int nfds;
};

/* Why an item does not fit the schema of its record's op. */
enum misfit { FITS, UNKNOWN_FIELD, NO_VALUE, GIVEN_TWICE, NOT_BOOL, NOT_PAIR };

/* ``r``'s items against the fields of ``op``: the names, '=', at most one value for a
 * field that is no list, the form of a boolean (0 or 1) and of a map entry (name=value).
 * FITS with ``a`` filled in, or why item ``*bad`` does not. */
static enum misfit check_fields(struct record *r, enum op op, struct args *a, size_t *bad)
{
    const struct op_schema *s = &schema[op];

    memset(a, 0, sizeof *a);
    a->op = op;
    a->rec = r;
    a->id = -1;
    for (size_t i = 0; i < r->count; i++) {
        const char *value = r->value[i];
        int f = 0;

        *bad = i;
        while (f < s->count && strcmp(s->field[f].name, r->key[i]) != 0)
            f++;
        if (f == s->count)
            return UNKNOWN_FIELD;
        if (!value)
            return NO_VALUE;
        r->field[i] = f;
        switch (s->field[f].kind) {
        case KIND_INTS:
        case KIND_STRS:
            continue;
        case KIND_MAP:
            if (value[0] == '=' || !strchr(value, '='))
                return NOT_PAIR;
            continue;
        case KIND_BOOL:
            if (strcmp(value, "0") != 0 && strcmp(value, "1") != 0)
                return NOT_BOOL;
            break;
        default:
            break;
        }
        if (a->one[f])
            return GIVEN_TWICE;
        a->one[f] = value;
    }
    return FITS;
}

/* An op the init takes in one of its phases: a row of ``setup_ops`` or ``requests``. */
struct handler {
    enum op op;
    unsigned flags;
    void (*run)(const struct args *a);
    int fds; /* set-up: how many descriptors come with the record (requests check theirs) */
};

#define AFTER_OVERLAY 1u  /* set-up: only once the overlay is mounted */
#define ONE_OR_NONE (-1)  /* set-up: a descriptor, or a path the init walks itself */
#define WHILE_STOPPING 2u /* request: taken while the sandbox shuts down too */

static const struct handler *find_handler(const struct handler *table, size_t n,
                                          const char *op)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(schema[table[i].op].name, op) == 0)
            return &table[i];
    return NULL;
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

/* --- requests ---------------------------------------------------------------------- */

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

static char *spawn_argv[MAX_ITEMS + 1], *spawn_env[MAX_ITEMS + 1];

/* A child being started: what it becomes, and why it could not. It shares the init's
 * memory until its exec (CLONE_VM | CLONE_VFORK, as posix_spawn does), and the init waits
 * meanwhile: the two never run on it at once. Not CLONE_FS: its directory is its own. */
struct start {
    const struct spawn_req *r;
    const char *path, *pts;
    const int *fds;
    int nfds;
    int err;      /* 0 until a step fails */
    int in_chdir; /* with err: the spawn's cwd was refused (reported as such) */
};

static char child_stack[64 * 1024] __attribute__((aligned(16)));

static _Noreturn void start_failed(struct start *s, int in_chdir)
{
    s->in_chdir = in_chdir;
    s->err = errno ? errno : EINVAL;
    _exit(127);
}

/* The child: its own session, its stdio, the spawn's directory, the program. The init's
 * own directory stays "/": only the child ever changes it. */
static int become(void *arg)
{
    struct start *s = arg;
    const struct spawn_req *r = s->r;
    sigset_t none;

    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0 || setsid() < 0)
        start_failed(s, 0);
    if (r->pty || s->nfds == 0) {
        /* Opened after setsid without O_NOCTTY: the PTY becomes the controlling tty. */
        int fd = open(r->pty ? s->pts : "/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
            start_failed(s, 0);
    } else {
        for (int i = 0; i < s->nfds; i++) /* received with MSG_CMSG_CLOEXEC, all above 2 */
            if (dup2(s->fds[i], i) < 0)
                start_failed(s, 0);
    }
    if (chdir(r->cwd ? r->cwd : "/") < 0)
        start_failed(s, 1);
    execve(s->path, r->argv, r->env);
    start_failed(s, 0);
}

static void spawn(long long id, struct spawn_req *r, const int *fds, int nfds)
{
    char path[4096], pts[32] = "";
    struct start start = {.r = r, .path = path, .pts = pts, .fds = fds, .nfds = nfds};
    int master = -1, rc;
    pid_t pid;
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
    pid = clone(become, child_stack + sizeof child_stack, CLONE_VM | CLONE_VFORK | SIGCHLD,
                &start);
    if (pid < 0 || start.err) {
        if (pid < 0)
            start.err = errno;
        else
            waitpid(pid, NULL, 0); /* it has exited: never reported */
        if (start.in_chdir)
            reply_error(id, "cannot change to %s: %s", r->cwd ? r->cwd : "/",
                        strerror(start.err));
        else
            reply_error(id, "cannot run %s: %s", r->argv[0], strerror(start.err));
        if (master >= 0)
            close(master);
        return;
    }
    remember(pid);
    msg_start(&m, OP_SPAWNED);
    msg_int(&m, F_SPAWNED_ID, id);
    msg_int(&m, F_SPAWNED_PID, pid);
    if (r->pty)
        msg_item(&m, F_SPAWNED_PTS, pts);
    msg_send(&m, master, pid);
    if (master >= 0)
        close(master);
}

/* Field ``f`` of a request is not right: answer so. */
static void bad_field(const struct args *a, int f)
{
    reply_error(a->id, "%s: bad field '%s'", schema[a->op].name, field_name(a->op, f));
}

/* Integer field ``f`` in low..high into ``*out`` (left as it is when absent): 0, or -1
 * once the request is answered with an error. */
static int int_field(const struct args *a, int f, long long low, long long high,
                     long long *out)
{
    if (!a->one[f] || parse_int(a->one[f], low, high, out) == 0)
        return 0;
    bad_field(a, f);
    return -1;
}

static void run_spawn(const struct args *a)
{
    struct spawn_req r = {.argv = spawn_argv, .env = spawn_env, .cols = 80, .rows = 24};
    long long cols = 80, rows = 24, stdio = 0;

    for (size_t i = 0; i < a->rec->count; i++) {
        if (a->rec->field[i] == F_SPAWN_ARGV)
            r.argv[r.argc++] = a->rec->value[i];
        else if (a->rec->field[i] == F_SPAWN_ENV)
            r.env[r.envc++] = a->rec->value[i];
    }
    r.argv[r.argc] = NULL;
    r.env[r.envc] = NULL;
    r.cwd = a->one[F_SPAWN_CWD];
    if (r.cwd && r.cwd[0] != '/') {
        bad_field(a, F_SPAWN_CWD);
        return;
    }
    r.pty = a->one[F_SPAWN_PTY] && a->one[F_SPAWN_PTY][0] == '1';
    if (int_field(a, F_SPAWN_COLS, 1, 65535, &cols)
        || int_field(a, F_SPAWN_ROWS, 1, 65535, &rows)
        || int_field(a, F_SPAWN_STDIO, 0, MAX_FDS, &stdio))
        return;
    r.cols = (int)cols;
    r.rows = (int)rows;
    r.stdio = (int)stdio;
    if (r.argc == 0 || (r.stdio != 0 && r.stdio != MAX_FDS) || (r.pty && r.stdio)) {
        reply_error(a->id, "%s: a program, and '%s' 0 or %d (0 with a PTY)",
                    schema[a->op].name, field_name(a->op, F_SPAWN_STDIO), MAX_FDS);
        return;
    }
    spawn(a->id, &r, a->fds, a->nfds);
}

static void run_signal(const struct args *a)
{
    long long pid = -1, signo = -1;

    if (int_field(a, F_SIGNAL_PID, 1, 1 << 22, &pid)
        || int_field(a, F_SIGNAL_SIGNO, 0, 64, &signo))
        return;
    if (pid < 0 || signo < 0)
        reply_error(a->id, "%s: '%s' and '%s' are required", schema[a->op].name,
                    field_name(a->op, F_SIGNAL_PID), field_name(a->op, F_SIGNAL_SIGNO));
    else if (pid <= 1)
        reply_error(a->id, "cannot signal the init");
    else if (kill((pid_t)pid, (int)signo) < 0)
        reply_error(a->id, "kill %lld: %s", pid, strerror(errno));
    else
        reply_ok(a->id);
}

static void run_shutdown(const struct args *a)
{
    const char *text = a->one[F_SHUTDOWN_GRACE];
    double grace = 5.0;

    if (text) {
        char *end;
        grace = strtod(text, &end);
        if (!*text || *end || !(grace >= 0 && grace <= 3600)) {
            bad_field(a, F_SHUTDOWN_GRACE);
            return;
        }
    }
    reply_ok(a->id);
    begin_shutdown((int64_t)(grace * 1000));
}

/* The requests served once the root is built. */
static const struct handler requests[] = {
    {OP_SPAWN, 0, run_spawn, 0},
    {OP_SIGNAL, 0, run_signal, 0},
    {OP_SHUTDOWN, WHILE_STOPPING, run_shutdown, 0},
};

/* One request: the body of a record (NUL-terminated by read_record). */
static void handle(char *body, size_t len, const int *fds, int nfds)
{
    const char *problem = split_record(body, len, &rec);
    const char *op = rec.op, *id_name = field_name(OP_ERROR, F_ERROR_ID), *id_text;
    const struct handler *h;
    struct args a;
    enum misfit misfit;
    long long id = -1;
    size_t bad;

    if (problem) {
        reply_error(-1, "%s", problem);
        return;
    }
    /* The id first, so every error can carry it (an unknown op's too): looked up by the
     * name of the error reply's id field, which is every request's. */
    id_text = field(&rec, id_name);
    if (id_text && parse_int(id_text, 0, MAX_ID, &id)) {
        reply_error(-1, "%s: '%s' must be an integer in 0..%lld", op, id_name, MAX_ID);
        return;
    }
    if (id < 0) {
        reply_error(-1, "%s: '%s' is missing", op, id_name);
        return;
    }
    h = find_handler(requests, sizeof requests / sizeof requests[0], op);
    if (!h) {
        reply_error(id, "unknown request op '%s'", op);
        return;
    }
    misfit = check_fields(&rec, h->op, &a, &bad);
    if (misfit == NO_VALUE) {
        reply_error(id, "%s: item without '='", op);
    } else if (misfit != FITS) {
        reply_error(id, "%s: bad field '%s'", op, rec.key[bad]);
    } else if (deadline >= 0 && !(h->flags & WHILE_STOPPING)) {
        reply_error(id, "the sandbox is shutting down");
    } else {
        a.id = id;
        a.fds = fds;
        a.nfds = nfds;
        h->run(&a);
    }
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

#define MAX_LOWERS 500             /* overlayfs's own limit */

static char root[PATH_MAX];        /* the overlay, as /proc/self/fd/N (N: its mount) */
static int root_fd = -1;
static int lowers[MAX_LOWERS];     /* the layers' directories, bottom first */
static int n_lowers;
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

/* The host-side path of mount point ``path`` inside the root, created (in this
 * session's upper) if missing. 0, or an errno. */
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

/* Bind ``source`` on ``target`` (a NULL source: the mount already there); read-only
 * by mount_setattr, which unlike a remount needs no repeat of the flags a user
 * namespace locks (nosuid, nodev, ...), and covers the submounts of a recursive bind.
 * 0, or an errno. */
static int bind_mount(const char *source, const char *target, int readonly, int recursive)
{
    struct mount_attr ro = {.attr_set = MOUNT_ATTR_RDONLY};

    if (source && mount(source, target, NULL, MS_BIND | (recursive ? MS_REC : 0), NULL) < 0)
        return errno;
    if (readonly && mount_setattr(AT_FDCWD, target, recursive ? AT_RECURSIVE : 0, &ro,
                                  sizeof ro) < 0)
        return errno;
    return 0;
}

/* Field ``f`` of a set-up record, which must be there. */
static const char *required(const struct args *a, int f)
{
    if (!a->one[f])
        setup_failed("%s: '%s' is missing", schema[a->op].name, field_name(a->op, f));
    return a->one[f];
}

/* A boolean field (check_fields saw it is 0 or 1), which must be there. */
static int flag(const struct args *a, int f)
{
    return required(a, f)[0] == '1';
}

/* "setup": uid 0 of the sandbox, its hostname, what processes inside may hold. (Root's
 * init is uid 0 already: the cloned child became it before its exec, which would
 * otherwise leave it, whose host uid its namespace does not map, no capabilities.) */
static void setup_identity(const struct args *a)
{
    const char *hostname = required(a, F_SETUP_HOSTNAME);
    long long cap;

    for (size_t i = 0; i < a->rec->count; i++) {
        if (a->rec->field[i] != F_SETUP_CHILD_CAPS)
            continue;
        if (parse_int(a->rec->value[i], 0, 63, &cap))
            setup_failed("%s: bad capability '%s'", schema[a->op].name, a->rec->value[i]);
        child_caps |= 1ULL << cap;
    }
    if (setresgid(0, 0, 0) < 0 || setresuid(0, 0, 0) < 0)
        setup_failed("cannot become uid 0 of the sandbox: %s", strerror(errno));
    setgroups(0, NULL); /* refused after "deny" (a single mapping): nothing to drop then */
    if (sethostname(hostname, strlen(hostname)) < 0)
        setup_failed("sethostname: %s", strerror(errno));
}

/* The mount plan (sandbox.mounts.plan_records), one handler per operation. */

/* "lower": one layer's directory (its descriptor), bottom first. */
static void setup_lower(const struct args *a)
{
    const char *path = required(a, F_LOWER_PATH);

    if (n_lowers == MAX_LOWERS)
        setup_failed("layer %s: more than %d layers", path, MAX_LOWERS);
    if ((lowers[n_lowers] = fcntl(a->fds[0], F_DUPFD_CLOEXEC, 0)) < 0)
        setup_failed("layer %s: %s", path, strerror(errno));
    n_lowers++;
}

/* A new overlay of the layers so far (then forgotten), ``upper`` and ``work`` (their
 * descriptors), detached: its descriptor. The directories are named by descriptor
 * number from /proc/self/fd, the working directory meanwhile: short names, so even the
 * one string that lists every layer stays within what fsconfig takes (255 bytes). */
static int make_overlay(const char *where, int upper_fd, int work_fd)
{
    char lowerdir[256], upper[16], work[16];
    size_t used = 0;
    int fs = -1, mnt = -1;

    if (n_lowers == 0)
        setup_failed("overlay on %s: no layer", where);
    for (int i = n_lowers - 1; i >= 0; i--) { /* overlay wants the top layer first */
        int n = snprintf(lowerdir + used, sizeof lowerdir - used, "%s%d",
                         i == n_lowers - 1 ? "" : ":", lowers[i]);
        if (n < 0 || (size_t)n >= sizeof lowerdir - used)
            setup_failed("overlay on %s: too many layers (%d)", where, n_lowers);
        used += (size_t)n;
    }
    snprintf(upper, sizeof upper, "%d", upper_fd);
    snprintf(work, sizeof work, "%d", work_fd);
    /* Always userxattr: overlay inside a user namespace needs it (FIELD-NOTES). */
    if (chdir("/proc/self/fd") < 0 || (fs = fsopen("overlay", FSOPEN_CLOEXEC)) < 0
        || fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir", lowerdir, 0) < 0
        || fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", upper, 0) < 0
        || fsconfig(fs, FSCONFIG_SET_STRING, "workdir", work, 0) < 0
        || fsconfig(fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0
        || fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0
        || (mnt = fsmount(fs, FSMOUNT_CLOEXEC, 0)) < 0
        || chdir("/") < 0)
        setup_failed("overlay on %s: %s", where, strerror(errno));
    close(fs);
    for (int i = 0; i < n_lowers; i++)
        close(lowers[i]);
    n_lowers = 0;
    return mnt;
}

/* "overlay": the layers, upper and work (descriptors 1, 2) on the mount point (0). The
 * new mount is kept as a descriptor, ``root``'s way in. */
static void setup_overlay(const struct args *a)
{
    const char *where = required(a, F_OVERLAY_ROOT);
    int mnt;

    (void)required(a, F_OVERLAY_UPPER);
    (void)required(a, F_OVERLAY_WORK);
    mnt = make_overlay(where, a->fds[1], a->fds[2]);
    if (move_mount(mnt, "", a->fds[0], "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        setup_failed("overlay on %s: %s", where, strerror(errno));
    root_fd = mnt;
    snprintf(root, sizeof root, "/proc/self/fd/%d", root_fd);
}

static void setup_fresh(const struct args *a)
{
    const char *type = required(a, F_FRESH_FSTYPE), *target = required(a, F_FRESH_TARGET);
    char full[PATH_MAX];
    long long flags;
    int err;

    if (parse_int(required(a, F_FRESH_FLAGS), 0, 1LL << 32, &flags))
        setup_failed("%s: bad flags", schema[a->op].name);
    err = ensure_target(target, 0, full, sizeof full);
    /* A cover hides what lies at its target. Where the init itself may not walk to it (a
     * directory of host root's, bound into root's sandbox), nothing it starts may either:
     * it holds every right any process inside will have. */
    if (err == EACCES && flag(a, F_FRESH_COVER))
        return;
    if (!err && mount(type, full, type, (unsigned long)flags, a->one[F_FRESH_DATA]) < 0)
        err = errno;
    if (err)
        setup_failed("%s on %s: %s", type, target, strerror(err));
}

/* "bind": the source is the record's descriptor: a path (O_PATH) to bind, or with
 * "idmapped" a detached mount showing host owners through this sandbox's id map, made
 * by the supervisor (only host root may idmap a mount of the host's filesystems). */
static void setup_bind(const struct args *a)
{
    const char *source = required(a, F_BIND_SOURCE), *target = required(a, F_BIND_TARGET);
    int optional = flag(a, F_BIND_OPTIONAL), readonly = flag(a, F_BIND_READONLY), err;
    char full[PATH_MAX], by_fd[32];
    const char *from = source; /* no descriptor: a path the init may walk (a plain user's) */

    if (a->nfds) {
        snprintf(by_fd, sizeof by_fd, "/proc/self/fd/%d", a->fds[0]);
        from = by_fd;
    } else if (flag(a, F_BIND_IDMAPPED)) {
        setup_failed("bind %s on %s: an idmapped mount comes as a descriptor", source, target);
    } else if (optional && !exists(source, 1)) {
        return;
    }
    err = ensure_target(target, flag(a, F_BIND_FILE), full, sizeof full);
    if (err && optional)
        return;
    if (!err && flag(a, F_BIND_IDMAPPED)) {
        if (move_mount(a->fds[0], "", AT_FDCWD, full, MOVE_MOUNT_F_EMPTY_PATH) < 0)
            err = errno;
        else if (readonly)
            err = bind_mount(NULL, full, 1, 0);
    } else if (!err) {
        err = bind_mount(from, full, readonly, flag(a, F_BIND_RECURSIVE));
    }
    if (err)
        setup_failed("bind %s on %s: %s", source, target, strerror(err));
}

static void setup_symlink(const struct args *a)
{
    const char *target = required(a, F_SYMLINK_TARGET), *to = required(a, F_SYMLINK_POINTS_TO);
    char dir[PATH_MAX], rel[PATH_MAX], full[PATH_MAX];
    const char *name = strrchr(target, '/');
    int err;

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
}

/* "hostlayer" (image = "host"): one of the host's directories, the lowest of the layers
 * sent since the last overlay, with the upper and work dirs of its descriptors 0 and 1,
 * an overlay at ``target`` inside the root. */
static void setup_hostlayer(const struct args *a)
{
    const char *target = required(a, F_HOSTLAYER_TARGET);
    char full[PATH_MAX];
    int mnt, err;

    (void)required(a, F_HOSTLAYER_UPPER);
    (void)required(a, F_HOSTLAYER_WORK);
    err = ensure_target(target, 0, full, sizeof full);
    if (err)
        setup_failed("overlay on %s: %s", target, strerror(err));
    mnt = make_overlay(target, a->fds[0], a->fds[1]);
    if (move_mount(mnt, "", AT_FDCWD, full, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        setup_failed("overlay on %s: %s", target, strerror(errno));
    close(mnt);
}

/* image = "host": a top-level host entry that is a symlink stays one (unless the layers
 * have a real directory there); the host's directories are "hostlayer"s. */
static void setup_hostentry(const struct args *a)
{
    const char *name = required(a, F_HOSTENTRY_NAME);
    char host[PATH_MAX], inside[PATH_MAX], link[PATH_MAX];
    ssize_t n = snprintf(inside, sizeof inside, "%s/%s", root, name);

    if (n < 0 || (size_t)n >= sizeof inside || strlen(name) >= sizeof host - 1)
        setup_failed("host entry %s: %s", name, strerror(ENAMETOOLONG));
    snprintf(host, sizeof host, "/%s", name);
    if (!is_symlink(host) || (exists(inside, 0) && !is_symlink(inside)))
        return; /* not a symlink (any more), or the layers have a real directory there */
    if ((n = readlink(host, link, sizeof link - 1)) < 0)
        setup_failed("readlink %s: %s", host, strerror(errno));
    link[n] = '\0';
    if ((is_symlink(inside) && unlink(inside) < 0) || symlink(link, inside) < 0)
        setup_failed("symlink %s: %s", inside, strerror(errno));
}

static void setup_pivot(const struct args *a)
{
    (void)a;
    if (chdir(root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0
        || umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        setup_failed("pivot_root: %s", strerror(errno));
    close(root_fd);
    root_done = 1;
}

/* The set-up ops, in the order the supervisor sends them. */
static const struct handler setup_ops[] = {
    {OP_SETUP, 0, setup_identity, 0},
    {OP_LOWER, 0, setup_lower, 1},
    {OP_OVERLAY, 0, setup_overlay, 3},
    {OP_FRESH, AFTER_OVERLAY, setup_fresh, 0},
    {OP_BIND, AFTER_OVERLAY, setup_bind, ONE_OR_NONE},
    {OP_SYMLINK, AFTER_OVERLAY, setup_symlink, 0},
    {OP_HOSTLAYER, AFTER_OVERLAY, setup_hostlayer, 2},
    {OP_HOSTENTRY, AFTER_OVERLAY, setup_hostentry, 0},
    {OP_PIVOT, AFTER_OVERLAY, setup_pivot, 0},
};

/* A set-up record that does not fit its op's schema ends the start: a field renamed on
 * one side must never read as absent. */
static _Noreturn void misfit_failed(const struct record *r, enum misfit misfit, size_t i)
{
    switch (misfit) {
    case UNKNOWN_FIELD:
        setup_failed("%s: unknown field '%s'", r->op, r->key[i]);
    case NO_VALUE:
        setup_failed("%s: item without '='", r->op);
    case GIVEN_TWICE:
        setup_failed("%s: '%s' given twice", r->op, r->key[i]);
    case NOT_BOOL:
        setup_failed("%s: '%s' must be 0 or 1", r->op, r->key[i]);
    default:
        setup_failed("%s: '%s' is not name=value", r->op, r->key[i]);
    }
}

/* The set-up phase: records until "pivot". End of file first: a spare nobody needed. */
static void build_root(void)
{
    while (!root_done) {
        int fds[MAX_FDS], nfds;
        const char *problem = NULL;
        ssize_t len = read_record(0, fds, &nfds, &problem);
        const struct handler *h;
        enum misfit misfit;
        struct args a;
        size_t bad;

        if (len == -1)
            _exit(0);
        if (len >= 0) /* blocking: -2 (nothing yet) cannot come back */
            problem = split_record(frame + 4, (size_t)len, &rec);
        if (problem)
            setup_failed("%s", problem);
        h = find_handler(setup_ops, sizeof setup_ops / sizeof setup_ops[0], rec.op);
        if (!h)
            setup_failed("unknown set-up op '%s'", rec.op);
        misfit = check_fields(&rec, h->op, &a, &bad);
        if (misfit != FITS)
            misfit_failed(&rec, misfit, bad);
        if ((h->flags & AFTER_OVERLAY) && !root[0])
            setup_failed("%s before the overlay", rec.op);
        if (h->fds == ONE_OR_NONE ? nfds > 1 : nfds != h->fds)
            setup_failed("%s: %d descriptors sent, %d expected", rec.op, nfds, h->fds);
        a.fds = fds;
        a.nfds = nfds;
        h->run(&a); /* borrows the descriptors: what it keeps, it duplicates */
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
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

    msg_start(&m, OP_READY);
    msg_int(&m, F_READY_PID, getpid());
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
