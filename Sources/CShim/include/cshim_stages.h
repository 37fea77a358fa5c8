#ifndef CORRAL_CSHIM_STAGES_H
#define CORRAL_CSHIM_STAGES_H
#include <stdint.h>

// Where a child failed. Children report {stage, errno} on a close-on-exec pipe; the
// host turns it into `setns: EPERM`-style errors. Shared by CShim and CInit.
enum cor_stage {
    COR_STAGE_READY = 0,     // init: the sandbox is built
    COR_STAGE_PID = 1,       // exec: value = host pid of the job process
    COR_STAGE_PLAN = 2,
    COR_STAGE_IDS = 3,
    COR_STAGE_CGROUPNS = 4,
    COR_STAGE_HOSTNAME = 5,
    COR_STAGE_NET = 6,
    COR_STAGE_MOUNT = 7,
    COR_STAGE_ROOTFS = 8,
    COR_STAGE_WORKSPACE = 9,
    COR_STAGE_TMP = 10,
    COR_STAGE_PROC = 11,
    COR_STAGE_DEV = 12,
    COR_STAGE_BIND = 13,
    COR_STAGE_PIVOT = 14,
    COR_STAGE_CAPS = 15,
    COR_STAGE_INIT_EXEC = 16,
    COR_STAGE_CGROUP = 20,
    COR_STAGE_DUMPABLE = 21,
    COR_STAGE_SETNS = 22,
    COR_STAGE_FORK = 23,
    COR_STAGE_SETSID = 24,
    COR_STAGE_STDIO = 25,
    COR_STAGE_SETGROUPS = 26,
    COR_STAGE_SETGID = 27,
    COR_STAGE_SETUID = 28,
    COR_STAGE_BOUNDING = 29,
    COR_STAGE_CAPSET = 30,
    COR_STAGE_AMBIENT = 31,
    COR_STAGE_RLIMIT = 32,
    COR_STAGE_NO_NEW_PRIVS = 33,
    COR_STAGE_CHDIR = 34,
    COR_STAGE_CWD_OUTSIDE = 35,
    COR_STAGE_CLOSE_FDS = 36,
    COR_STAGE_SIGNALS = 37,
    COR_STAGE_SECCOMP = 38,
    COR_STAGE_EXEC = 39,
};

struct cor_status {
    int32_t stage;
    int32_t err;
    int32_t value;
};
#endif
