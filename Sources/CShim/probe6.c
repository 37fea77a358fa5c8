#define _GNU_SOURCE
#include "cshim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// The i386 gate: number in eax, arguments in ebx, ecx, edx; the result comes back in eax.
static long int80(long nr, const long args[6]) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(args[0]), "c"(args[1]), "d"(args[2]) : "memory");
    return (long)(int)ret;
#else
    (void)nr;
    (void)args;
    return -ENOSYS;
#endif
}

// Runs in the forked child: raw syscalls only, then _exit.
static void probe_child(const struct sock_fprog *prog, int abi, long nr, const long args[6], int fd) {
    struct cor_probe_result result = {0, 0, 0};
    if (prog != NULL && (syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
                         syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0)) {
        result.err = -errno;
    } else if (abi == COR_PROBE_INT80) {
        long r = int80(nr, args);
        result.value = r;
        result.err = (r < 0 && r > -4096) ? (int)-r : 0;
    } else {
        long r = syscall(nr, args[0], args[1], args[2], args[3], args[4], args[5]);
        // A fork-like call that succeeded returns 0 in a grandchild, which must not report.
        if (r == 0 && (nr == SYS_clone || nr == SYS_fork || nr == SYS_vfork || nr == SYS_clone3)) _exit(0);
        result.value = r;
        result.err = r < 0 ? errno : 0;
    }
    (void)!write(fd, &result, sizeof result);
    _exit(0);
}

int cor_probe_filter6(const struct sock_fprog *prog, int abi, long nr, const long args[6],
                      struct cor_probe_result *out) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -1;
    pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid < 0) {
        int e = errno;
        close(fds[0]);
        close(fds[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) probe_child(prog, abi, nr, args, fds[1]);
    close(fds[1]);
    struct cor_probe_result result;
    memset(&result, 0, sizeof result);
    ssize_t n;
    do {
        n = read(fds[0], &result, sizeof result);
    } while (n < 0 && errno == EINTR);
    close(fds[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (n == 0 && WIFSIGNALED(status)) {
        result.signal = WTERMSIG(status);
    } else if (n != (ssize_t)sizeof result) {
        errno = EPROTO;
        return -1;
    } else if (result.err < 0) {
        errno = -result.err;
        return -1;
    }
    *out = result;
    return 0;
}
