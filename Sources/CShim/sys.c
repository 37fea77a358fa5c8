#define _GNU_SOURCE
#include "cshim.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int cor_pidfd_open(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int cor_pidfd_send_signal(int pidfd, int sig) { return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0); }

int cor_waitid_pidfd(int pidfd, int options, int *out_code, int *out_status, struct rusage *usage) {
    siginfo_t info;
    info.si_pid = 0;
    // The raw syscall takes a fifth argument glibc's waitid hides: the child's rusage.
    long r = syscall(SYS_waitid, P_PIDFD, pidfd, &info, options, usage);
    if (r != 0) return -1;
    if (info.si_pid == 0) return 0;  // WNOHANG and still running
    *out_code = info.si_code;
    *out_status = info.si_status;
    return 1;
}

int cor_setns(int fd, int nstype) { return setns(fd, nstype); }

int cor_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int cor_open_path(const char *path) { return open(path, O_PATH | O_CLOEXEC); }

int cor_set_thread_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }
