// corral-init: pid 1 of every Corral sandbox.
//
// The host clones this process into new user, mount, pid, net, uts and ipc namespaces
// (its mount namespace a copy of the tree the host assembled from exactly what the sandbox
// shows: the image, the workspace, the policy's binds, /dev; see spawn.c) and execs it at
// once, before anything else happens, so the sandbox's pid 1 is this small
// program and not a copy of the host's address space. It then:
//   1. reads its plan (key/value strings) from fd 3 until EOF: the host writes the plan
//      only after it has written our uid/gid maps and put us in the project's cgroup, so
//      EOF is also the signal that we may proceed;
//   2. builds the sandbox (identity, cgroup namespace, hostname, loopback, /tmp, /proc,
//      /dev/pts, /dev/shm, pivot_root), reporting the first failure as {stage, errno} on fd 4;
//   3. drops every capability, reports READY on fd 4, closes every descriptor, and
//      reaps zombies for the rest of its life.
// It dies only when the host kills it (SIGKILL from the parent namespace); signals sent
// from inside the sandbox cannot kill a pid-namespace init that installs no handlers.

#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../CShim/include/cshim_stages.h"

#define PLAN_FD 3
#define STATUS_FD 4
#define PLAN_MAX (64 * 1024)

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
#define MOUNT_ATTR_NOEXEC 0x00000008
struct mount_attr {
    uint64_t attr_set;
    uint64_t attr_clr;
    uint64_t propagation;
    uint64_t userns_fd;
};
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

static char plan[PLAN_MAX];
static size_t plan_len;

static void report(int stage, int err) {
    struct cor_status s = {stage, err, 0};
    (void)!write(STATUS_FD, &s, sizeof s);
}

static _Noreturn void fail(int stage) {
    report(stage, errno);
    _exit(1);
}

// Returns the value of `key` in the plan, or NULL. The plan is NUL-separated
// key, value, key, value, ...
static const char *get(const char *key) {
    size_t i = 0;
    while (i < plan_len) {
        const char *k = plan + i;
        size_t kl = strlen(k);
        if (i + kl + 1 >= plan_len) return NULL;
        const char *v = k + kl + 1;
        if (strcmp(k, key) == 0) return v;
        i += kl + 1 + strlen(v) + 1;
    }
    return NULL;
}

static const char *need(const char *key) {
    const char *v = get(key);
    if (v == NULL) {
        errno = EINVAL;
        fail(COR_STAGE_PLAN);
    }
    return v;
}

static void read_plan(void) {
    for (;;) {
        ssize_t n = read(PLAN_FD, plan + plan_len, sizeof plan - plan_len - 1);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EINTR) continue;
            fail(COR_STAGE_PLAN);
        }
        plan_len += (size_t)n;
        if (plan_len >= sizeof plan - 1) {
            errno = E2BIG;
            fail(COR_STAGE_PLAN);
        }
    }
    close(PLAN_FD);
}

static int mount_setattr_(const char *path, unsigned flags, uint64_t set) {
    struct mount_attr attr = {.attr_set = set};
    return (int)syscall(SYS_mount_setattr, AT_FDCWD, path, flags, &attr, sizeof attr);
}

// The pts and shm mounts on the /dev the host built (read-only, with real device nodes).
static void finish_dev(const char *shm_size) {
    if (mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") != 0)
        fail(COR_STAGE_DEV);
    char opts[64] = "mode=1777,size=";
    strncat(opts, shm_size, sizeof opts - strlen(opts) - 1);
    if (mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) fail(COR_STAGE_DEV);
}

// Masks kernel information the sandbox has no business reading, and makes the parts of
// /proc that configure the kernel read-only. Paths a kernel lacks are skipped.
static void mask_proc(void) {
    const char *files[] = {"proc/kcore", "proc/keys", "proc/timer_list", "proc/sched_debug",
                           "proc/latency_stats", "proc/timer_stats", "proc/kmsg", "proc/config.gz"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (mount("dev/null", files[i], NULL, MS_BIND, NULL) != 0 && errno != ENOENT) fail(COR_STAGE_PROC);
    }
    const char *dirs[] = {"proc/acpi", "proc/scsi", "proc/asound"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        if (mount("tmpfs", dirs[i], "tmpfs", MS_RDONLY, "size=0") != 0 && errno != ENOENT) fail(COR_STAGE_PROC);
    }
    const char *readonly[] = {"proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus", "proc/fs"};
    for (size_t i = 0; i < sizeof readonly / sizeof *readonly; i++) {
        if (mount(readonly[i], readonly[i], NULL, MS_BIND | MS_REC, NULL) != 0) {
            if (errno == ENOENT) continue;
            fail(COR_STAGE_PROC);
        }
        if (mount_setattr_(readonly[i], AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) != 0)
            fail(COR_STAGE_PROC);
    }
}

// Our mount namespace is a copy of the one the host's builder assembled (spawn.c): a
// read-only tmpfs holding the image at /r (with /workspace, the policy's binds and /dev
// already attached, all locked read-only where the host made them so) and a copy of the
// host's /proc. No other host mount was ever in it.
static void build_root(void) {
    // Nothing we mount may propagate anywhere.
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail(COR_STAGE_MOUNT);
    // The image is locked to the template below it, and pivot_root refuses a locked mount:
    // a recursive bind of it is ours, and keeps every lock of the mounts it copies.
    if (mount("/r", "/r", NULL, MS_BIND | MS_REC, NULL) != 0) fail(COR_STAGE_ROOTFS);
    if (chdir("/r") != 0) fail(COR_STAGE_ROOTFS);

    char opts[64] = "mode=1777,size=";
    strncat(opts, need("tmp_size"), sizeof opts - strlen(opts) - 1);
    if (mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) fail(COR_STAGE_TMP);

    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fail(COR_STAGE_PROC);
    mask_proc();
    finish_dev(need("shm_size"));

    // pivot_root(".", ".") stacks the old root under the new one; detaching it takes the
    // template and the host's /proc with it, leaving no path out (runc's approach; chroot
    // would leave one).
    if (syscall(SYS_pivot_root, ".", ".") != 0) fail(COR_STAGE_PIVOT);
    if (umount2(".", MNT_DETACH) != 0) fail(COR_STAGE_PIVOT);
    if (chdir("/") != 0) fail(COR_STAGE_PIVOT);
}

static void loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) fail(COR_STAGE_NET);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) fail(COR_STAGE_NET);
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) fail(COR_STAGE_NET);
    close(s);
}

static void drop_privileges(void) {
    int last = (int)strtol(need("last_cap"), NULL, 10);
    for (int c = 0; c <= last; c++) {
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) fail(COR_STAGE_CAPS);
    }
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capset, &h, d) != 0) fail(COR_STAGE_CAPS);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail(COR_STAGE_CAPS);
    // Non-dumpable: nothing in the sandbox may ptrace us or read /proc/1/mem or environ.
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) fail(COR_STAGE_CAPS);
}

static _Noreturn void reap_forever(void) {
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {}
        // Blocked SIGCHLD stays pending, so a child dying between the reap loop and this
        // wait is not missed.
        siginfo_t info;
        sigwaitinfo(&chld, &info);
    }
}

int main(void) {
    read_plan();

    // Our uid/gid maps exist now: become root of the sandbox's user namespace and shed
    // the host's supplementary groups.
    if (setgroups(0, NULL) != 0) fail(COR_STAGE_IDS);
    if (setresgid(0, 0, 0) != 0 || setresuid(0, 0, 0) != 0) fail(COR_STAGE_IDS);

    // The host put us in the project's cgroup first, so it becomes the namespace's root.
    if (unshare(CLONE_NEWCGROUP) != 0) fail(COR_STAGE_CGROUPNS);
    const char *hostname = need("hostname");
    if (sethostname(hostname, strlen(hostname)) != 0) fail(COR_STAGE_HOSTNAME);
    loopback_up();
    build_root();

    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null < 0) fail(COR_STAGE_DEV);
    drop_privileges();
    report(COR_STAGE_READY, 0);
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    syscall(SYS_close_range, 3, ~0U, 0);
    reap_forever();
}
