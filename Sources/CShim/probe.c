#define _GNU_SOURCE
#include "cshim.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int cor_probe_filter(const struct sock_fprog *prog, long nr, long arg0, int *out_errno) {
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
    if (pid == 0) {
        // Child of a multithreaded parent: raw syscalls only, then _exit.
        int result = 0;
        if (syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0) {
            result = -errno;
        } else {
            long r = syscall(nr, arg0, 0, 0, 0, 0, 0);
            result = r < 0 ? errno : 0;
        }
        (void)!write(fds[1], &result, sizeof result);
        _exit(0);
    }
    close(fds[1]);
    int result = 0;
    ssize_t n;
    do {
        n = read(fds[0], &result, sizeof result);
    } while (n < 0 && errno == EINTR);
    close(fds[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    if (n != (ssize_t)sizeof result) {
        errno = EPROTO;
        return -1;
    }
    if (result < 0) {
        errno = -result;
        return -1;
    }
    *out_errno = result;
    return 0;
}
