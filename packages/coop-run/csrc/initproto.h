/* initproto.h: coop_run.sandbox.initproto's wire schema for coop-init.c. Generated
 * from initproto.py by scripts/gen-initproto-header; do not edit (test_coop_init.py
 * fails while this file differs from what initproto.py generates). */
#ifndef COOP_INITPROTO_H
#define COOP_INITPROTO_H

#define MAX_FRAME 131072
#define MAX_FDS 3
#define MAX_OP_FIELDS 8

enum kind { KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_INTS, KIND_MAP, KIND_STR, KIND_STRS,
            KIND_TEXT };

enum op {
    OP_SPAWN,
    OP_SIGNAL,
    OP_SHUTDOWN,
    OP_MAPPED,
    OP_SETUP,
    OP_LOWER,
    OP_OVERLAY,
    OP_FRESH,
    OP_BIND,
    OP_SYMLINK,
    OP_HOSTLAYER,
    OP_HOSTENTRY,
    OP_PIVOT,
    OP_READY,
    OP_SPAWNED,
    OP_OK,
    OP_ERROR,
    OP_EXITED,
    OP_FAILED,
    N_OPS
};

enum { F_SPAWN_ID, F_SPAWN_ARGV, F_SPAWN_ENV, F_SPAWN_CWD, F_SPAWN_PTY, F_SPAWN_COLS,
       F_SPAWN_ROWS, F_SPAWN_STDIO };
enum { F_SIGNAL_ID, F_SIGNAL_PID, F_SIGNAL_SIGNO };
enum { F_SHUTDOWN_ID, F_SHUTDOWN_GRACE };
enum { F_SETUP_HOSTNAME, F_SETUP_CHILD_CAPS };
enum { F_LOWER_PATH };
enum { F_OVERLAY_ROOT, F_OVERLAY_UPPER, F_OVERLAY_WORK };
enum { F_FRESH_FSTYPE, F_FRESH_TARGET, F_FRESH_FLAGS, F_FRESH_DATA, F_FRESH_COVER };
enum { F_BIND_SOURCE, F_BIND_TARGET, F_BIND_FILE, F_BIND_READONLY, F_BIND_RECURSIVE,
       F_BIND_OPTIONAL, F_BIND_IDMAPPED };
enum { F_SYMLINK_TARGET, F_SYMLINK_POINTS_TO };
enum { F_HOSTLAYER_TARGET, F_HOSTLAYER_UPPER, F_HOSTLAYER_WORK };
enum { F_HOSTENTRY_NAME };
enum { F_READY_PID };
enum { F_SPAWNED_ID, F_SPAWNED_PID, F_SPAWNED_PTS };
enum { F_OK_ID };
enum { F_ERROR_ID, F_ERROR_MESSAGE };
enum { F_EXITED_PID, F_EXITED_CODE, F_EXITED_SIGNAL };
enum { F_FAILED_MESSAGE };

static const struct op_schema {
    const char *name;
    int count;
    struct { const char *name; enum kind kind; } field[MAX_OP_FIELDS];
} schema[N_OPS] = {
    [OP_SPAWN] = {.name = "spawn", .count = 8, .field = {
        {"id", KIND_INT},
        {"argv", KIND_STRS},
        {"env", KIND_MAP},
        {"cwd", KIND_STR},
        {"pty", KIND_BOOL},
        {"cols", KIND_INT},
        {"rows", KIND_INT},
        {"stdio", KIND_INT},
    }},
    [OP_SIGNAL] = {.name = "signal", .count = 3, .field = {
        {"id", KIND_INT},
        {"pid", KIND_INT},
        {"signo", KIND_INT},
    }},
    [OP_SHUTDOWN] = {.name = "shutdown", .count = 2, .field = {
        {"id", KIND_INT},
        {"grace", KIND_FLOAT},
    }},
    [OP_MAPPED] = {.name = "mapped", .count = 0},
    [OP_SETUP] = {.name = "setup", .count = 2, .field = {
        {"hostname", KIND_STR},
        {"child_caps", KIND_INTS},
    }},
    [OP_LOWER] = {.name = "lower", .count = 1, .field = {
        {"path", KIND_STR},
    }},
    [OP_OVERLAY] = {.name = "overlay", .count = 3, .field = {
        {"root", KIND_STR},
        {"upper", KIND_STR},
        {"work", KIND_STR},
    }},
    [OP_FRESH] = {.name = "fresh", .count = 5, .field = {
        {"fstype", KIND_STR},
        {"target", KIND_STR},
        {"flags", KIND_INT},
        {"data", KIND_STR},
        {"cover", KIND_BOOL},
    }},
    [OP_BIND] = {.name = "bind", .count = 7, .field = {
        {"source", KIND_STR},
        {"target", KIND_STR},
        {"file", KIND_BOOL},
        {"readonly", KIND_BOOL},
        {"recursive", KIND_BOOL},
        {"optional", KIND_BOOL},
        {"idmapped", KIND_BOOL},
    }},
    [OP_SYMLINK] = {.name = "symlink", .count = 2, .field = {
        {"target", KIND_STR},
        {"points_to", KIND_STR},
    }},
    [OP_HOSTLAYER] = {.name = "hostlayer", .count = 3, .field = {
        {"target", KIND_STR},
        {"upper", KIND_STR},
        {"work", KIND_STR},
    }},
    [OP_HOSTENTRY] = {.name = "hostentry", .count = 1, .field = {
        {"name", KIND_STR},
    }},
    [OP_PIVOT] = {.name = "pivot", .count = 0},
    [OP_READY] = {.name = "ready", .count = 1, .field = {
        {"pid", KIND_INT},
    }},
    [OP_SPAWNED] = {.name = "spawned", .count = 3, .field = {
        {"id", KIND_INT},
        {"pid", KIND_INT},
        {"pts", KIND_STR},
    }},
    [OP_OK] = {.name = "ok", .count = 1, .field = {
        {"id", KIND_INT},
    }},
    [OP_ERROR] = {.name = "error", .count = 2, .field = {
        {"id", KIND_INT},
        {"message", KIND_TEXT},
    }},
    [OP_EXITED] = {.name = "exited", .count = 3, .field = {
        {"pid", KIND_INT},
        {"code", KIND_INT},
        {"signal", KIND_INT},
    }},
    [OP_FAILED] = {.name = "failed", .count = 1, .field = {
        {"message", KIND_TEXT},
    }},
};

#endif
