// Creating a sandbox and starting a job in it: the code that runs after clone, in a child
// that shares (or has just copied) a multithreaded host's memory, so async-signal-safe
// only. The host (Swift) computes everything first and hands over a plan; the children
// execute it and report a {stage, errno} record on a close-on-exec pipe when a step fails
// (cshim_stages.h names each stage).
//
// Stage map. Who runs, in which namespaces, and what each must get done:
//
//   cor_spawn_init  host thread -> clone3(NEWUSER|NEWNS|NEWPID|NEWNET|NEWUTS|NEWIPC)
//     the init child   our job: take fds 3-6 (plan, status, init memfd, workspace), close
//                      the rest, wait for the host to write our id maps, become uid 0 of
//                      the new user namespace and execveat corral-init (CInit/main.c),
//                      which builds the mount tree.        stages PLAN, IDS, WORKSPACE,
//                                                                   INIT_EXEC
//   cor_enter       host thread -> clone(CLONE_VM|CLONE_VFORK), the thread waits
//     the intermediate our job: join the job's cgroup leaf, become non-dumpable, set up
//                      stdio, setns into every namespace of the init (through its pidfd),
//                      clone the job as the host's child, report its pid, _exit.
//                                          stages CGROUP, DUMPABLE, STDIO, SETNS, FORK, PID
//     the job          in the sandbox, still sharing the host's memory until execve: our
//                      job is to drop everything the host has (session, groups, ids,
//                      capabilities, rlimits, no_new_privs, cwd inside /workspace, fds,
//                      signals, seccomp last) and execve the command.
//                                                          stages SETSID ... EXEC (24-39)
#define _GNU_SOURCE
#include "cshim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

// Why raw syscalls for ids: these children come from a raw clone of a multithreaded
// process, so glibc still believes other threads exist. Its setresuid/setgroups wrappers
// would try to broadcast the change to those threads and hang. The kernel calls change
// exactly this process, which is what we want.

struct cor_clone_args {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid, set_tid_size,
        cgroup;
};

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

int cor_sandbox_namespaces(void) {
    return CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
}

const char *cor_stage_name(int32_t stage) {
    switch (stage) {
    case COR_STAGE_READY: return "ready";
    case COR_STAGE_PID: return "pid";
    case COR_STAGE_PLAN: return "plan";
    case COR_STAGE_IDS: return "ids";
    case COR_STAGE_CGROUPNS: return "unshare(cgroup)";
    case COR_STAGE_HOSTNAME: return "sethostname";
    case COR_STAGE_NET: return "loopback";
    case COR_STAGE_MOUNT: return "mount(private)";
    case COR_STAGE_ROOTFS: return "mount(rootfs)";
    case COR_STAGE_WORKSPACE: return "mount(workspace)";
    case COR_STAGE_TMP: return "mount(tmp)";
    case COR_STAGE_PROC: return "mount(proc)";
    case COR_STAGE_DEV: return "mount(dev)";
    case COR_STAGE_BIND: return "mount(bind)";
    case COR_STAGE_PIVOT: return "pivot_root";
    case COR_STAGE_CAPS: return "capabilities";
    case COR_STAGE_INIT_EXEC: return "execveat(init)";
    case COR_STAGE_CGROUP: return "cgroup";
    case COR_STAGE_DUMPABLE: return "prctl(dumpable)";
    case COR_STAGE_SETNS: return "setns";
    case COR_STAGE_FORK: return "clone";
    case COR_STAGE_SETSID: return "setsid";
    case COR_STAGE_STDIO: return "dup2(stdio)";
    case COR_STAGE_SETGROUPS: return "setgroups";
    case COR_STAGE_SETGID: return "setresgid";
    case COR_STAGE_SETUID: return "setresuid";
    case COR_STAGE_BOUNDING: return "prctl(capbset_drop)";
    case COR_STAGE_CAPSET: return "capset";
    case COR_STAGE_AMBIENT: return "prctl(ambient)";
    case COR_STAGE_RLIMIT: return "prlimit";
    case COR_STAGE_NO_NEW_PRIVS: return "prctl(no_new_privs)";
    case COR_STAGE_CHDIR: return "chdir";
    case COR_STAGE_CWD_OUTSIDE: return "cwd";
    case COR_STAGE_CLOSE_FDS: return "close_range";
    case COR_STAGE_SIGNALS: return "sigprocmask";
    case COR_STAGE_SECCOMP: return "seccomp";
    case COR_STAGE_EXEC: return "execve";
    default: return NULL;
    }
}

static long clone3_(struct cor_clone_args *args) { return syscall(SYS_clone3, args, sizeof *args); }

static void report(int fd, int stage, int err, int value) {
    struct cor_status s = {stage, err, value};
    ssize_t n;
    do {
        n = write(fd, &s, sizeof s);
    } while (n < 0 && errno == EINTR);
}

static _Noreturn void die(int fd, int stage) {
    report(fd, stage, errno, 0);
    _exit(127);
}

// Signals are blocked in the parent thread around the clone so no handler of the host can
// run in the child between clone and exec; the child restores defaults itself.
static void block_all(sigset_t *old) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, old);
}

// MARK: - init

pid_t cor_spawn_init(int init_fd, int plan_fd, int status_fd, const char *workspace, char *const argv[],
                     char *const envp[], int *out_pidfd) {
    int pidfd = -1;
    struct cor_clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = SIGCHLD;
    sigset_t old;
    block_all(&old);
    long pid = clone3_(&args);
    if (pid == 0) {
        // Move the three descriptors init needs to fixed numbers (above 9 first, so no
        // dup2 clobbers a source), then close everything else: nothing of the host's
        // may be inherited into the sandbox.
        int p = fcntl(plan_fd, F_DUPFD_CLOEXEC, 10);
        int s = fcntl(status_fd, F_DUPFD_CLOEXEC, 10);
        int i = fcntl(init_fd, F_DUPFD_CLOEXEC, 10);
        if (p < 0 || s < 0 || i < 0 || dup2(p, 3) != 3 || dup2(s, 4) != 4 || dup3(i, 5, O_CLOEXEC) != 5)
            _exit(126);
        // The workspace is opened here, while we are still the host's uid 0 (its owner),
        // and after clone, so the descriptor names this mount namespace's copy of it: the
        // init binds it through /proc/self/fd/6 without needing to traverse the host's
        // (private) data directory as its unprivileged uid.
        int w = open(workspace, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (w < 0) die(4, COR_STAGE_WORKSPACE);
        if (dup2(w, 6) != 6) die(4, COR_STAGE_WORKSPACE);
        syscall(SYS_close_range, 7, ~0U, 0);
        // Wait for the host to write our uid/gid maps (it sends one byte), then become
        // uid 0 of the new namespace before exec: exec recomputes capabilities, and only
        // a process that is root in its namespace keeps them.
        char go;
        ssize_t n;
        do {
            n = read(3, &go, 1);
        } while (n < 0 && errno == EINTR);
        if (n != 1) die(4, COR_STAGE_PLAN);
        if (syscall(SYS_setresgid, 0, 0, 0) != 0 || syscall(SYS_setresuid, 0, 0, 0) != 0) die(4, COR_STAGE_IDS);
        syscall(SYS_execveat, 5, "", argv, envp, AT_EMPTY_PATH);
        die(4, COR_STAGE_INIT_EXEC);
    }
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        errno = saved;
        return -1;
    }
    *out_pidfd = pidfd;
    return (pid_t)pid;
}

// MARK: - exec

static _Noreturn void become_job(const struct cor_exec_plan *p) {
    int fd = p->status_fd;
    if (setsid() < 0) die(fd, COR_STAGE_SETSID);

    if (syscall(SYS_setgroups, 0, NULL) != 0) die(fd, COR_STAGE_SETGROUPS);
    // The bounding set needs CAP_SETPCAP, which a non-root uid no longer has: drop it
    // before the ids change.
    if (p->keep_caps != 0 && prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) die(fd, COR_STAGE_CAPSET);
    for (int c = 0; c <= p->last_cap; c++) {
        if ((p->keep_caps >> c) & 1) continue;
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) die(fd, COR_STAGE_BOUNDING);
    }
    if (syscall(SYS_setresgid, p->gid, p->gid, p->gid) != 0) die(fd, COR_STAGE_SETGID);
    if (syscall(SYS_setresuid, p->uid, p->uid, p->uid) != 0) die(fd, COR_STAGE_SETUID);

    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    for (int i = 0; i < 2; i++) {
        uint32_t word = (uint32_t)(p->keep_caps >> (32 * i));
        d[i].effective = d[i].permitted = d[i].inheritable = word;
    }
    if (syscall(SYS_capset, &h, d) != 0) die(fd, COR_STAGE_CAPSET);
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) die(fd, COR_STAGE_AMBIENT);
    for (int c = 0; c <= p->last_cap; c++) {
        // Ambient capabilities are what lets a kept capability survive execve as non-root.
        if (((p->keep_caps >> c) & 1) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) != 0)
            die(fd, COR_STAGE_AMBIENT);
    }

    for (int i = 0; i < p->n_rlimits; i++) {
        struct rlimit64 r = {p->rlimits[i].soft, p->rlimits[i].hard};
        if (syscall(SYS_prlimit64, 0, p->rlimits[i].resource, &r, NULL) != 0) die(fd, COR_STAGE_RLIMIT);
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die(fd, COR_STAGE_NO_NEW_PRIVS);

    // chdir follows symlinks, so the directory we land in is checked afterwards: a link
    // to "/" or a /proc/self/fd path must not put the job outside the workspace.
    if (chdir(p->cwd) != 0) die(fd, COR_STAGE_CHDIR);
    long n = syscall(SYS_getcwd, p->scratch, p->scratch_len);
    size_t rl = strlen(p->cwd_root);
    if (n < 0 || strncmp(p->scratch, p->cwd_root, rl) != 0 || (p->scratch[rl] != '/' && p->scratch[rl] != 0)) {
        errno = EXDEV;
        die(fd, COR_STAGE_CWD_OUTSIDE);
    }

    // Every descriptor but 0-2, a session's pipes (3, 4, ...) and the status pipe goes; the
    // status pipe is close-on-exec.
    unsigned first = 3 + (unsigned)p->n_extra_fds;
    if ((unsigned)fd > first && syscall(SYS_close_range, first, fd - 1, 0) != 0) die(fd, COR_STAGE_CLOSE_FDS);
    if (syscall(SYS_close_range, fd + 1, ~0U, 0) != 0) die(fd, COR_STAGE_CLOSE_FDS);

    // Ignored signals and the blocked mask survive execve: reset both, or the job would
    // inherit the host's choices (the host blocks SIGTERM, for one).
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) (void)sigaction(sig, &dfl, NULL);
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0) die(fd, COR_STAGE_SIGNALS);

    // Seccomp last: everything above needs syscalls the filter denies.
    if (p->seccomp != NULL && syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p->seccomp) != 0)
        die(fd, COR_STAGE_SECCOMP);
    // Tests stand in for a sandbox process that stops the job here (it may: the job has
    // the sandbox's uid now) and check that the host kills it instead of waiting forever.
    if (p->stop_before_exec) syscall(SYS_kill, syscall(SYS_getpid), SIGSTOP);

    const char *file = p->argv[0];
    if (strchr(file, '/') != NULL) {
        execve(file, p->argv, p->envp);
        die(fd, COR_STAGE_EXEC);
    }
    int saw_eacces = 0;
    size_t fl = strlen(file);
    for (char *const *dir = p->path_dirs; dir != NULL && *dir != NULL; dir++) {
        size_t dl = strlen(*dir);
        if (dl + 1 + fl + 1 > p->scratch_len) continue;
        memcpy(p->scratch, *dir, dl);
        p->scratch[dl] = '/';
        memcpy(p->scratch + dl + 1, file, fl + 1);
        execve(p->scratch, p->argv, p->envp);
        if (errno == EACCES) saw_eacces = 1;
        else if (errno != ENOENT && errno != ENOTDIR) die(fd, COR_STAGE_EXEC);
    }
    errno = saw_eacces ? EACCES : ENOENT;
    die(fd, COR_STAGE_EXEC);
}

// The job runs on the lower half of the stack cor_enter maps; the intermediate, which
// waits while it runs, on the upper half.
static int job_child(void *plan) { become_job((const struct cor_exec_plan *)plan); }

#define COR_ENTER_STACK (256 * 1024)

static _Noreturn void join_sandbox(const struct cor_exec_plan *p, char *job_stack_top) {
    int fd = p->status_fd;
    // The job's cgroup first, so everything after, including the job's own clone, is
    // accounted and limited there; "0" means "the writer".
    for (int i = 0; i < p->n_cgroup_fds; i++) {
        ssize_t n;
        do {
            n = write(p->cgroup_fds[i], "0", 1);
        } while (n < 0 && errno == EINTR);
        if (n != 1) die(fd, COR_STAGE_CGROUP);
    }
    // Non-dumpable before setns: nothing inside may ptrace the job or open /proc/<pid>/mem
    // or environ while it still holds host descriptors and shares the host's memory. The
    // flag belongs to the memory map, which this process and the job share with the host:
    // the host is non-dumpable from its first job on (it is root; this only keeps its
    // memory, which holds tokens, out of core dumps).
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) die(fd, COR_STAGE_DUMPABLE);
    if (dup2(p->stdin_fd, 0) != 0 || dup2(p->stdout_fd, 1) != 1 || dup2(p->stderr_fd, 2) != 2)
        die(fd, COR_STAGE_STDIO);
    // A session's pipes go to 3, 4, ...: the caller keeps every source above the targets,
    // so no dup2 here overwrites a descriptor a later one still reads from.
    for (int i = 0; i < p->n_extra_fds; i++) {
        if (p->extra_fds[i] < 3 + p->n_extra_fds || fd < 3 + p->n_extra_fds) {
            errno = EBADF;
            die(fd, COR_STAGE_STDIO);
        }
        if (dup2(p->extra_fds[i], 3 + i) != 3 + i) die(fd, COR_STAGE_STDIO);
    }
    // A pidfd names exactly the init we created: if it died, setns fails with ESRCH
    // rather than joining whatever process now has its pid.
    if (setns(p->init_pidfd, p->ns_flags) != 0) die(fd, COR_STAGE_SETNS);
    // setns into a pid namespace affects children only, so the job is a fresh clone;
    // CLONE_PARENT makes it the host's child, not ours, so the host reaps it directly.
    // It too shares the host's memory until its execve (CLONE_VM|CLONE_VFORK): copying
    // the host's page tables for it and tearing the copy down at exec was the largest
    // cost of a job's start. The kernel stores its pid in *job_pid before it runs, so the
    // host can kill it if a sandbox process stops it before its exec completes
    // (SIGSTOP cannot be blocked, and the job has the sandbox's uid by then). The OOM
    // killer skips a process in a vfork (in_vfork), so a full project cgroup never picks
    // the job while it shares the host's memory, which would kill the host with it.
    int pid = clone(job_child, job_stack_top, CLONE_VM | CLONE_VFORK | CLONE_PARENT | CLONE_PARENT_SETTID,
                    (void *)p, p->job_pid);
    if (pid < 0) die(fd, COR_STAGE_FORK);
    report(fd, COR_STAGE_PID, 0, pid);
    _exit(0);
}

struct enter_args {
    const struct cor_exec_plan *plan;
    char *job_stack_top;
};

// The intermediate only joins the sandbox and clones the job, so it shares the host's
// memory (CLONE_VM) instead of copying its page tables, and the calling thread waits
// until it has exited (CLONE_VFORK), as posix_spawn does. It runs on a stack of its own
// and touches no memory but that stack (errno aside: it is the waiting thread's). The
// sandbox cannot see it: setns puts only its children in the sandbox's pid namespace.
static int enter_child(void *arg) {
    const struct enter_args *a = arg;
    join_sandbox(a->plan, a->job_stack_top);
}

pid_t cor_enter(const struct cor_exec_plan *plan) {
    void *stack = mmap(NULL, COR_ENTER_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    struct enter_args args = {plan, (char *)stack + COR_ENTER_STACK / 2};
    sigset_t old;
    block_all(&old);
    int pid = clone(enter_child, (char *)stack + COR_ENTER_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, COR_ENTER_STACK);
    if (pid < 0) errno = saved;
    return (pid_t)pid;
}
