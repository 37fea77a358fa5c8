#ifndef CORRAL_CSHIM_H
#define CORRAL_CSHIM_H

// The post-fork code of Corral. Everything here runs between fork and execve in a child of
// a multithreaded process, so it uses raw syscalls and libc functions that are
// async-signal-safe only. The parent (Swift) computes the whole plan before forking.

#include <linux/filter.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/types.h>

#include "cshim_stages.h"

/// Returns the shim's ABI version; lets tests prove the C target links.
int cor_shim_version(void);

/// Forks a child that sets no_new_privs, loads `prog` as its seccomp filter and then
/// makes the raw syscall `nr` with `arg0`. Returns 0 and stores the syscall's errno (0 on
/// success) in `*out_errno`, or -1 with errno set if the probe itself failed. Used to prove
/// a compiled filter does what its policy says without building a whole sandbox.
int cor_probe_filter(const struct sock_fprog *prog, long nr, long arg0, int *out_errno);

/// What a sandbox's mount tree is made of, prepared by the host before the clone: detached
/// copies (open_tree(OPEN_TREE_CLONE)) of exactly the host paths the sandbox shows, and the
/// template mount namespace the tree is assembled in. Nothing else of the host's mount
/// table ever reaches the sandbox (see cor_spawn_init).
struct cor_init_mounts {
    int template_fd;                   // cor_mount_template(): a namespace of one empty tmpfs
    int rootfs_fd;                     // the image, read-only: becomes /
    int workspace_fd;                  // the project: becomes /workspace
    int proc_fd;                       // a copy of the host's /proc, detached again by the init
    const int *bind_fds;               // the policy's read-only binds
    const char *const *bind_targets;   // where each goes, relative to the image's root
    int n_binds;
};

/// Starts a sandbox's init. A helper that shares our memory (CLONE_VM|CLONE_VFORK, as
/// posix_spawn does) joins the template namespace, makes a private copy of it and, still
/// as the host's root, attaches the detached trees of `mounts` (rootfs at /r, the workspace
/// and binds inside it, a fresh /dev, the proc copy at /proc). It then clones the init into
/// new user, mount, pid, net, uts and ipc namespaces as our own child (CLONE_PARENT) with a
/// pidfd from birth, and exits. Copied into a user namespace, every mount the helper made
/// is locked with its flags, so even root of the sandbox could not make the image writable.
/// The init's child side moves `plan_fd` to 3, `status_fd` to 4 and `init_fd` to 5, closes
/// every other descriptor above 2, waits for its id maps and execs `init_fd` (an O_PATH
/// descriptor of corral-init) with `argv`/`envp`. Returns the init's pid and stores its
/// pidfd in `*out_pidfd`; on failure returns -1 with errno set and, when the helper failed
/// at a step, that step in `*out_failure` (stage 0 otherwise).
pid_t cor_spawn_init(int init_fd, int plan_fd, int status_fd, const struct cor_init_mounts *mounts,
                     char *const argv[], char *const envp[], int *out_pidfd, struct cor_status *out_failure);

/// The template every sandbox's mount namespace is copied from: a new mount namespace whose
/// root is a small read-only tmpfs holding only the empty directories /r and /proc. Built
/// once per process (the caller keeps the descriptor) by a helper that pivots into the
/// tmpfs and detaches the host's whole tree, so no host mount (another project's workspace
/// above all) is copied into a sandbox. Returns an nsfs descriptor, or -1 with errno set.
int cor_mount_template(void);

/// A detached copy of the mount at `path` (open_tree(OPEN_TREE_CLONE), with everything
/// mounted below it when `recursive`), made private so nothing mounted on it later
/// propagates back to the host, and given the MOUNT_ATTR_* flags in `attr_set`. Returns
/// the descriptor (close-on-exec), or -1 with errno set.
int cor_detached_tree(const char *path, int recursive, uint64_t attr_set);

/// cor_detached_tree of the directory `fd` itself (an O_PATH descriptor is enough): for a
/// tree the host opened without following symlinks, such as the project's home inside a
/// workspace that jobs write to.
int cor_detached_tree_fd(int fd, uint64_t attr_set);

/// The kernel's MOUNT_ATTR_* flags for cor_detached_tree (older headers lack them).
#define COR_MOUNT_RDONLY 0x1
#define COR_MOUNT_NOSUID 0x2
#define COR_MOUNT_NODEV 0x4

/// One resource limit for the job process.
struct cor_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

/// Everything the child needs to become a job inside an existing sandbox. Built by the
/// parent; the child only reads it.
struct cor_exec_plan {
    int init_pidfd;               // the sandbox init's pidfd (setns target)
    int ns_flags;                 // CLONE_NEW* namespaces to join
    const int *cgroup_fds;        // cgroup.procs of the job's leaf, one per hierarchy
    int n_cgroup_fds;
    int stdin_fd, stdout_fd, stderr_fd;  // become 0, 1, 2
    const int *extra_fds;         // become 3, 4, ... (a session's command and reply pipes);
    int n_extra_fds;              // each, and status_fd, must be >= 3 + n_extra_fds
    int status_fd;                // close-on-exec pipe for cor_status records
    uint32_t uid, gid;            // inside the sandbox
    uint64_t keep_caps;           // capabilities to keep (0 = none)
    int last_cap;                 // highest capability this kernel knows
    const struct cor_rlimit *rlimits;
    int n_rlimits;
    const char *cwd;              // absolute, inside the sandbox
    const char *cwd_root;         // cwd must resolve at or under this directory
    char *const *argv;
    char *const *envp;
    char *const *path_dirs;       // PATH search list when argv[0] has no '/'
    const struct sock_fprog *seccomp;  // NULL: none
    char *scratch;                // preallocated buffer for PATH search and getcwd
    size_t scratch_len;
    int *job_pid;                 // the kernel stores the job's host pid here at its clone
    int stop_before_exec;         // tests only: the job stops itself just before execve
};

/// Starts a job inside a sandbox. The returned pid is an intermediate child that joins the
/// sandbox and clones the job process as a sibling (CLONE_PARENT), so the job is our own
/// child and its exit status comes to us. Both share the caller's memory until the job
/// execs, and the call returns only once the job has exec'd or exited. The job's host pid
/// is stored in `*plan->job_pid` as soon as it exists (so another thread can kill a job
/// that is stopped before its exec) and arrives as a COR_STAGE_PID record on `status_fd`;
/// a failure as a {stage, errno} record. The caller closes its copy of the write end,
/// reads records to EOF and reaps the intermediate. Returns -1 with errno set if the
/// first clone fails.
pid_t cor_enter(const struct cor_exec_plan *plan);

struct rusage;

/// pidfd_open(2).
int cor_pidfd_open(pid_t pid);

/// pidfd_send_signal(2) with no siginfo.
int cor_pidfd_send_signal(int pidfd, int sig);

/// waitid(P_PIDFD) with the child's rusage. Returns 1 with the CLD_* code and status when
/// the child was reaped, 0 under WNOHANG when it still runs, -1 with errno on failure.
int cor_waitid_pidfd(int pidfd, int options, int *out_code, int *out_status, struct rusage *usage);

/// setns(2), for tests that join a sandbox's namespaces the way nsenter does.
int cor_setns(int fd, int nstype);

/// pipe2(O_CLOEXEC); glibc declares pipe2 only under _GNU_SOURCE, which Swift lacks.
int cor_pipe_cloexec(int fds[2]);

/// open(O_PATH | O_CLOEXEC): a descriptor to exec a file by, not to read it.
int cor_open_path(const char *path);

/// Names the calling thread (Linux keeps the first 15 bytes); prctl is variadic, which
/// Swift cannot call.
int cor_set_thread_name(const char *name);
#include "cshim_probe6.h"
#include "cshim_tools.h"
#include "cshim_loop.h"
#include "cshim_netns.h"

#endif
