#ifndef CORRAL_CSHIM_STAGES_H
#define CORRAL_CSHIM_STAGES_H
#include <stdint.h>

// Where a child failed. Children report {stage, errno, value} on a close-on-exec pipe; the
// host turns a record into `setns: ESRCH`-style errors with cor_stage_name(). Shared by
// CShim (spawn.c: the sandbox's creation and a job's entry) and CInit (main.c: the init
// building the sandbox from inside). The numbers are the wire format between a child and
// the host: never renumber one, only add.
enum cor_stage {
    // Records that are not failures.
    COR_STAGE_READY = 0,  // init: the sandbox is built and the init waits for its jobs
    COR_STAGE_PID = 1,    // enter: value = the job's host pid, sent just before _exit

    // The init (CInit/main.c), in the new namespaces, building the sandbox in order.
    COR_STAGE_PLAN = 2,         // reading the host's go byte or the mount plan from fd 3
    COR_STAGE_IDS = 3,          // setresgid/setresuid(0) inside the new user namespace
    COR_STAGE_CGROUPNS = 4,     // unshare(CLONE_NEWCGROUP) once in the project's cgroup
    COR_STAGE_HOSTNAME = 5,     // sethostname(project id)
    COR_STAGE_NET = 6,          // bringing up loopback in the empty network namespace
    COR_STAGE_MOUNT = 7,        // making "/" private so nothing propagates to the host
    COR_STAGE_ROOTFS = 8,       // attaching the image (spawn.c) and entering a copy of it
    COR_STAGE_WORKSPACE = 9,    // attaching /workspace (spawn.c, as host root)
    COR_STAGE_TMP = 10,         // the size-capped tmpfs at /tmp
    COR_STAGE_PROC = 11,        // /proc and masking its sensitive files
    COR_STAGE_DEV = 12,         // the minimal /dev: null, zero, full, random, urandom, tty (spawn.c), pts, shm
    COR_STAGE_BIND = 13,        // attaching the policy's extra read-only binds (spawn.c)
    COR_STAGE_PIVOT = 14,       // pivot_root into the rootfs and detaching the old root
    COR_STAGE_CAPS = 15,        // dropping the init's own capabilities
    COR_STAGE_INIT_EXEC = 16,   // spawn.c: execveat of corral-init from its memfd
    COR_STAGE_TEMPLATE = 17,    // spawn.c: joining and copying the template mount namespace

    // Entering (spawn.c): the intermediate joins the sandbox and clones the job.
    COR_STAGE_CGROUP = 20,      // joining the job's cgroup leaf (before anything is charged)
    COR_STAGE_DUMPABLE = 21,    // PR_SET_DUMPABLE 0: nothing inside may ptrace us
    COR_STAGE_SETNS = 22,       // setns(init pidfd): ESRCH means the sandbox's init is gone
    COR_STAGE_FORK = 23,        // clone of the job: ENOMEM means the project's memory is full
    // The job (spawn.c become_job), in the sandbox, dropping everything before execve.
    COR_STAGE_SETSID = 24,      // its own session, so a kill of the group reaches its tree
    COR_STAGE_STDIO = 25,       // dup2 of the job's pipes onto 0, 1, 2 (and a session's onto 3, 4)
    COR_STAGE_SETGROUPS = 26,   // no supplementary groups
    COR_STAGE_SETGID = 27,      // the agent's gid
    COR_STAGE_SETUID = 28,      // the agent's uid
    COR_STAGE_BOUNDING = 29,    // dropping the capability bounding set
    COR_STAGE_CAPSET = 30,      // the capabilities the policy keeps (none by default)
    COR_STAGE_AMBIENT = 31,     // ambient capabilities, so kept ones survive execve
    COR_STAGE_RLIMIT = 32,      // the policy's rlimits
    COR_STAGE_NO_NEW_PRIVS = 33,// no setuid or file-capability gain through execve
    COR_STAGE_CHDIR = 34,       // chdir to the requested cwd
    COR_STAGE_CWD_OUTSIDE = 35, // the cwd resolved outside /workspace (a symlink out): EXDEV
    COR_STAGE_CLOSE_FDS = 36,   // closing every descriptor but 0-2 and the status pipe
    COR_STAGE_SIGNALS = 37,     // default dispositions and an empty signal mask
    COR_STAGE_SECCOMP = 38,     // the seccomp filter, last: it denies calls the steps above need
    COR_STAGE_EXEC = 39,        // execve of the command (or each PATH candidate)
};

struct cor_status {
    int32_t stage;
    int32_t err;
    int32_t value;
};

/// The readable name of a stage, e.g. "setns" or "mount(proc)"; NULL for an unknown number.
const char *cor_stage_name(int32_t stage);

/// The namespaces a job joins: every one the init has (user, mnt, pid, net, uts, ipc,
/// cgroup), spelled with the kernel's CLONE_NEW* names in C, once.
int cor_sandbox_namespaces(void);
#endif
