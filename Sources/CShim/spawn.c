// Creating a sandbox and starting a job in it: the code that runs after clone, in a child
// that shares (or has just copied) a multithreaded host's memory, so async-signal-safe
// only. The host (Swift) computes everything first and hands over a plan; the children
// execute it and report a {stage, errno} record on a close-on-exec pipe when a step fails
// (cshim_stages.h names each stage).
//
// Stage map. Who runs, in which namespaces, and what each must get done:
//
//   cor_mount_template  once per process: clone(NEWNS) of a helper that pivots into an
//                      empty tmpfs and detaches the host's tree; its namespace is kept.
//   cor_spawn_init  host thread -> clone(CLONE_VM|CLONE_VFORK), the thread waits
//     the builder      our job: as the host's root, join a private copy of the template
//                      and attach the host's detached trees (rootfs at /r, workspace,
//                      binds, /proc) and a fresh /dev, then clone3(NEWUSER|NEWNS|NEWPID|
//                      NEWNET|NEWUTS|NEWIPC|PARENT) the init, _exit.
//                                   stages TEMPLATE, ROOTFS, WORKSPACE, BIND, DEV, PROC
//     the init child   our job: take fds 3-5 (plan, status, init binary), close the rest,
//                      wait for the host to write our id maps, become uid 0 of the new
//                      user namespace and execveat corral-init (CInit/main.c), which
//                      mounts /tmp, /proc and /dev/pts and pivots into /r.
//                                                          stages PLAN, IDS, INIT_EXEC
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
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
    case COR_STAGE_TEMPLATE: return "setns(template)";
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

#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#endif
struct cor_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

#define COR_BUILD_STACK (256 * 1024)

static int move_mount_(int from_fd, const char *to) {
    return (int)syscall(SYS_move_mount, from_fd, "", AT_FDCWD, to, MOVE_MOUNT_F_EMPTY_PATH);
}

static int set_attr(int dfd, const char *path, unsigned flags, uint64_t set, uint64_t propagation) {
    struct cor_mount_attr attr = {set, 0, propagation, 0};
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, &attr, sizeof attr);
}

static int detached_tree_at(int dirfd, const char *path, unsigned flags, uint64_t attr_set) {
    int fd = (int)syscall(SYS_open_tree, dirfd, path, flags | OPEN_TREE_CLONE | O_CLOEXEC);
    if (fd < 0) return -1;
    // Private, so what the sandbox's builder mounts on the copy never propagates to the
    // host's peers of the original (on a host with shared mounts, as systemd makes them).
    if (set_attr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attr_set, MS_PRIVATE) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int cor_detached_tree(const char *path, int recursive, uint64_t attr_set) {
    return detached_tree_at(AT_FDCWD, path, recursive ? AT_RECURSIVE : 0, attr_set);
}

int cor_detached_tree_fd(int fd, uint64_t attr_set) { return detached_tree_at(fd, "", AT_EMPTY_PATH, attr_set); }

// MARK: template

struct template_args {
    int nsfd;
    int err;
};

// In a new mount namespace of its own (the clone made it), as the host's root: mount a
// tmpfs with the two directories a sandbox's builder attaches to, open the namespace, then
// pivot into the tmpfs and detach the host's tree. Owned by the initial user namespace,
// nothing in that tree is locked, so the detach drops every copied mount at once.
static int template_child(void *arg) {
    struct template_args *a = arg;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) goto fail;
    // Any directory serves as the mount point: the tmpfs replaces the whole tree below.
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=16k,mode=0755") != 0) goto fail;
    if (chdir("/tmp") != 0 || mkdir("r", 0755) != 0 || mkdir("proc", 0755) != 0) goto fail;
    a->nsfd = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
    if (a->nsfd < 0) goto fail;
    if (syscall(SYS_pivot_root, ".", ".") != 0 || umount2(".", MNT_DETACH) != 0 || chdir("/") != 0) goto fail;
    if (set_attr(AT_FDCWD, "/", 0, MOUNT_ATTR_RDONLY, 0) != 0) goto fail;
    _exit(0);
fail:
    a->err = errno;
    _exit(1);
}

int cor_mount_template(void) {
    void *stack = mmap(NULL, COR_BUILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    struct template_args args = {-1, 0};
    sigset_t old;
    block_all(&old);
    // CLONE_FILES: the namespace descriptor the child opens is ours.
    int pid = clone(template_child, (char *)stack + COR_BUILD_STACK,
                    CLONE_VM | CLONE_VFORK | CLONE_FILES | CLONE_NEWNS | SIGCHLD, &args);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, COR_BUILD_STACK);
    if (pid < 0) {
        errno = saved;
        return -1;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        if (args.nsfd >= 0) close(args.nsfd);
        errno = args.err != 0 ? args.err : EPROTO;
        return -1;
    }
    return args.nsfd;
}

// MARK: builder and init

struct build_args {
    int init_fd, plan_fd, status_fd;
    const struct cor_init_mounts *mounts;
    char *const *argv;
    char *const *envp;
    int pidfd;
    pid_t pid;
    struct cor_status failure;
};

// The init's side of the clone: it has copied the builder's memory (not shared it), so the
// arguments are read from that copy.
static _Noreturn void init_child(const struct build_args *a) {
    // Move the three descriptors init needs to fixed numbers (above 9 first, so no dup2
    // clobbers a source), then close everything else: nothing of the host's may be
    // inherited into the sandbox.
    int p = fcntl(a->plan_fd, F_DUPFD_CLOEXEC, 10);
    int s = fcntl(a->status_fd, F_DUPFD_CLOEXEC, 10);
    int i = fcntl(a->init_fd, F_DUPFD_CLOEXEC, 10);
    if (p < 0 || s < 0 || i < 0 || dup2(p, 3) != 3 || dup2(s, 4) != 4 || dup3(i, 5, O_CLOEXEC) != 5) _exit(126);
    syscall(SYS_close_range, 6, ~0U, 0);
    // Wait for the host to write our uid/gid maps (it sends one byte), then become uid 0 of
    // the new namespace before exec: exec recomputes capabilities, and only a process that
    // is root in its namespace keeps them.
    char go;
    ssize_t n;
    do {
        n = read(3, &go, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) die(4, COR_STAGE_PLAN);
    if (syscall(SYS_setresgid, 0, 0, 0) != 0 || syscall(SYS_setresuid, 0, 0, 0) != 0) die(4, COR_STAGE_IDS);
    syscall(SYS_execveat, 5, "", a->argv, a->envp, AT_EMPTY_PATH);
    die(4, COR_STAGE_INIT_EXEC);
}

// The minimal /dev, made by the host's root so its nodes are real device nodes (a tmpfs
// made inside a user namespace cannot hold any), then read-only: nothing may add nodes or
// files to it later. The init mounts pts and shm on the two directories.
static int build_dev(void) {
    if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0) return -1;
    const struct {
        const char *name;
        unsigned major, minor;
    } nodes[] = {{"dev/null", 1, 3}, {"dev/zero", 1, 5},    {"dev/full", 1, 7},
                 {"dev/random", 1, 8}, {"dev/urandom", 1, 9}, {"dev/tty", 5, 0}};
    for (size_t k = 0; k < sizeof nodes / sizeof *nodes; k++) {
        if (mknod(nodes[k].name, S_IFCHR | 0666, makedev(nodes[k].major, nodes[k].minor)) != 0) return -1;
    }
    if (mkdir("dev/pts", 0755) != 0 || mkdir("dev/shm", 01777) != 0) return -1;
    if (symlink("pts/ptmx", "dev/ptmx") != 0 || symlink("/proc/self/fd", "dev/fd") != 0 ||
        symlink("/proc/self/fd/0", "dev/stdin") != 0 || symlink("/proc/self/fd/1", "dev/stdout") != 0 ||
        symlink("/proc/self/fd/2", "dev/stderr") != 0)
        return -1;
    return set_attr(AT_FDCWD, "dev", 0, MOUNT_ATTR_RDONLY, 0);
}

// The builder: shares the host's memory and descriptors until it exits, and runs on its
// own stack, as the host's root in the host's user namespace.
static int build_child(void *arg) {
    struct build_args *a = arg;
    const struct cor_init_mounts *m = a->mounts;
    int stage = COR_STAGE_TEMPLATE;
    // Our own copy of the template, so sandboxes built at once never see each other's
    // mounts; it dies with us once the init has copied it.
    if (setns(m->template_fd, CLONE_NEWNS) != 0 || unshare(CLONE_NEWNS) != 0) goto fail;
    stage = COR_STAGE_ROOTFS;
    if (move_mount_(m->rootfs_fd, "/r") != 0 || chdir("/r") != 0) goto fail;
    stage = COR_STAGE_WORKSPACE;
    if (move_mount_(m->workspace_fd, "workspace") != 0) goto fail;
    stage = COR_STAGE_BIND;
    for (int k = 0; k < m->n_binds; k++) {
        if (move_mount_(m->bind_fds[k], m->bind_targets[k]) != 0) goto fail;
    }
    stage = COR_STAGE_DEV;
    umask(0);
    if (build_dev() != 0) goto fail;
    // Mounting its own /proc in a user namespace needs a fully visible proc mount already
    // in the namespace (the kernel's mount_too_revealing rule); the init detaches this
    // copy of the host's with the template when it pivots.
    stage = COR_STAGE_PROC;
    if (move_mount_(m->proc_fd, "/proc") != 0) goto fail;
    stage = COR_STAGE_ROOTFS;
    if (chdir("/") != 0) goto fail;

    struct cor_clone_args args;
    memset(&args, 0, sizeof args);
    // CLONE_PARENT: the init is the host's child, so the host reaps it through its pidfd.
    args.flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC |
                 CLONE_PIDFD | CLONE_PARENT;
    args.pidfd = (uint64_t)(uintptr_t)&a->pidfd;
    long pid = clone3_(&args);
    if (pid == 0) init_child(a);
    stage = COR_STAGE_INIT_EXEC;
    if (pid < 0) goto fail;
    a->pid = (pid_t)pid;
    _exit(0);
fail:
    a->failure.stage = stage;
    a->failure.err = errno;
    _exit(1);
}

pid_t cor_spawn_init(int init_fd, int plan_fd, int status_fd, const struct cor_init_mounts *mounts,
                     char *const argv[], char *const envp[], int *out_pidfd, struct cor_status *out_failure) {
    memset(out_failure, 0, sizeof *out_failure);
    void *stack = mmap(NULL, COR_BUILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -1;
    struct build_args args = {init_fd, plan_fd, status_fd, mounts, argv, envp, -1, -1, {0, 0, 0}};
    // Signals are blocked around the clones so no handler of the host runs in a child; the
    // init restores its own dispositions.
    sigset_t old;
    block_all(&old);
    // CLONE_FILES: the init's pidfd, made by the builder's clone3, lands in our table.
    int builder = clone(build_child, (char *)stack + COR_BUILD_STACK, CLONE_VM | CLONE_VFORK | CLONE_FILES | SIGCHLD,
                        &args);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    munmap(stack, COR_BUILD_STACK);
    if (builder < 0) {
        errno = saved;
        return -1;
    }
    int status = 0;
    while (waitpid(builder, &status, 0) < 0 && errno == EINTR) {}
    if (args.pid <= 0) {
        *out_failure = args.failure;
        errno = args.failure.err != 0 ? args.failure.err : EPROTO;
        return -1;
    }
    *out_pidfd = args.pidfd;
    return args.pid;
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
