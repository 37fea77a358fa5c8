// corral-init: pid 1 of every Corral sandbox.
//
// The host clones this process into new user, mount, pid, net, uts and ipc namespaces and
// execs it at once, before anything else happens, so the sandbox's pid 1 is this small
// program and not a copy of the host's address space. It then:
//   1. reads its plan (key/value strings) from fd 3 until EOF: the host writes the plan
//      only after it has written our uid/gid maps and put us in the project's cgroup, so
//      EOF is also the signal that we may proceed;
//   2. builds the sandbox (identity, cgroup namespace, hostname, loopback, mount tree,
//      pivot_root), reporting the first failure as {stage, errno} on fd 4;
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

static void bind_path(const char *src, const char *dst, int stage) {
    if (mount(src, dst, NULL, MS_BIND, NULL) != 0) fail(stage);
}

// Creates an empty file to bind a device node onto: a tmpfs made inside a user namespace
// cannot hold device nodes of its own (mknod needs CAP_MKNOD in the initial namespace).
static void bind_device(const char *name) {
    char host[64] = "/dev/", target[256];
    strcat(host, name);
    strcpy(target, "dev/");
    strcat(target, name);
    int fd = open(target, O_CREAT | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0666);
    if (fd < 0) fail(COR_STAGE_DEV);
    close(fd);
    bind_path(host, target, COR_STAGE_DEV);
}

static void build_dev(const char *shm_size) {
    if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") != 0) fail(COR_STAGE_DEV);
    const char *devices[] = {"null", "zero", "full", "random", "urandom", "tty"};
    for (size_t i = 0; i < sizeof devices / sizeof *devices; i++) bind_device(devices[i]);
    if (mkdir("dev/pts", 0755) != 0 || mkdir("dev/shm", 01777) != 0) fail(COR_STAGE_DEV);
    if (mount("devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620") != 0)
        fail(COR_STAGE_DEV);
    char opts[64] = "mode=1777,size=";
    strncat(opts, shm_size, sizeof opts - strlen(opts) - 1);
    if (mount("shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) fail(COR_STAGE_DEV);
    if (symlink("pts/ptmx", "dev/ptmx") != 0 || symlink("/proc/self/fd", "dev/fd") != 0 ||
        symlink("/proc/self/fd/0", "dev/stdin") != 0 || symlink("/proc/self/fd/1", "dev/stdout") != 0 ||
        symlink("/proc/self/fd/2", "dev/stderr") != 0)
        fail(COR_STAGE_DEV);
    // The tmpfs itself becomes read-only: nothing may add nodes or files to /dev later.
    if (mount_setattr_("dev", 0, MOUNT_ATTR_RDONLY) != 0) fail(COR_STAGE_DEV);
}

// Masks kernel information the sandbox has no business reading, and makes the parts of
// /proc that configure the kernel read-only. Paths a kernel lacks are skipped.
static void mask_proc(void) {
    const char *files[] = {"proc/kcore", "proc/keys", "proc/timer_list", "proc/sched_debug",
                           "proc/latency_stats", "proc/timer_stats", "proc/kmsg", "proc/config.gz"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        if (mount("/dev/null", files[i], NULL, MS_BIND, NULL) != 0 && errno != ENOENT) fail(COR_STAGE_PROC);
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

static void build_root(void) {
    const char *rootfs = need("rootfs"), *workspace = need("workspace");
    // Nothing we mount may propagate back to the host's mount namespace.
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) fail(COR_STAGE_MOUNT);
    if (mount(rootfs, rootfs, NULL, MS_BIND | MS_REC, NULL) != 0) fail(COR_STAGE_ROOTFS);
    // Read-only before anything is mounted on top, so it applies to the image only.
    if (mount_setattr_(rootfs, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) != 0)
        fail(COR_STAGE_ROOTFS);
    if (chdir(rootfs) != 0) fail(COR_STAGE_ROOTFS);

    // Descriptor 6 is the workspace, opened by the host-side child before it dropped to
    // our uid (see cor_spawn_init); the path is kept in the plan for error messages only.
    (void)workspace;
    bind_path("/proc/self/fd/6", "workspace", COR_STAGE_WORKSPACE);
    if (mount_setattr_("workspace", 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) != 0) fail(COR_STAGE_WORKSPACE);

    char opts[64] = "mode=1777,size=";
    strncat(opts, need("tmp_size"), sizeof opts - strlen(opts) - 1);
    if (mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0) fail(COR_STAGE_TMP);

    if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0) fail(COR_STAGE_PROC);
    mask_proc();
    build_dev(need("shm_size"));

    // Extra read-only binds from the policy: "ro_bind" values are "SRC\tDST" pairs.
    for (size_t i = 0; i < plan_len;) {
        const char *k = plan + i, *v = k + strlen(k) + 1;
        if (strcmp(k, "ro_bind") == 0) {
            const char *tab = strchr(v, '\t');
            if (tab == NULL) {
                errno = EINVAL;
                fail(COR_STAGE_BIND);
            }
            char src[4096];
            size_t sl = (size_t)(tab - v);
            if (sl >= sizeof src) {
                errno = ENAMETOOLONG;
                fail(COR_STAGE_BIND);
            }
            memcpy(src, v, sl);
            src[sl] = 0;
            const char *dst = tab + 1;
            while (*dst == '/') dst++;
            if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) != 0) fail(COR_STAGE_BIND);
            if (mount_setattr_(dst, AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV) != 0)
                fail(COR_STAGE_BIND);
        }
        i += strlen(k) + 1 + strlen(v) + 1;
    }

    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves no
    // path back to the host's tree (runc's approach; chroot would leave one).
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
