extension SeccompProfile {
    /// Corral's default: an allowlist as strong as Docker's default profile for a container
    /// without capabilities, and stricter where agents' jobs have no need.
    ///
    /// Everything not listed fails with EPERM. Beyond Docker it also denies `ptrace`,
    /// `process_vm_readv/writev`, `io_uring_*`, `adjtimex`/`clock_adjtime`, device `mknod`,
    /// and every socket family but unix, inet, inet6 and netlink (route and sock_diag).
    /// `clone3` gets ENOSYS so libc falls back to `clone`, whose flags a filter can see.
    public static let corralDefault = SeccompProfile(
        defaultErrno: 1,  // EPERM
        architectures: ["native"],
        rules: (allowedUnconditionally.map { Rule($0) } + conditionalRules).groupedBySyscall()
    )

    /// The calls `corralDefault` denies on purpose: each is kernel surface a job never
    /// needs, or a way out of the sandbox. Tests probe each one.
    public static let deniedByDefault: [String] = [
        "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
        "mount_setattr", "unshare", "setns", "chroot", "io_uring_setup", "io_uring_enter", "io_uring_register",
        "userfaultfd", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "kexec_load",
        "kexec_file_load", "init_module", "finit_module", "delete_module", "swapon", "swapoff", "acct",
        "clock_settime", "settimeofday", "adjtimex", "clock_adjtime", "syslog", "reboot", "open_by_handle_at",
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "quotactl", "lookup_dcookie",
        "fanotify_init", "sethostname", "setdomainname", "iopl", "ioperm", "vhangup", "mbind", "set_mempolicy",
        "migrate_pages", "move_pages", "uselib", "ustat", "sysfs", "_sysctl",
    ]

    // Namespace flags of clone(2); a clone carrying any of them is an unshare in disguise.
    static let cloneNamespaceFlags: UInt64 = 0x7E02_0000  // NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

    static var conditionalRules: [Rule] {
        var rules: [Rule] = []
        rules.append(Rule("clone", conditions: [Condition(argument: 0, .maskedEqual, 0, mask: cloneNamespaceFlags)]))
        rules.append(Rule("clone3", .errno(38)))  // ENOSYS: its flags sit in memory a filter cannot read
        // PER_LINUX, PER_LINUX32, UNAME26, both, and the 0xffffffff query; not
        // ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC, which weaken exploit mitigations.
        for persona: UInt32 in [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff] {
            rules.append(Rule("personality", conditions: [.int32(0, equals: persona)]))
        }
        // AF_UNIX, AF_INET, AF_INET6; each other family is a separate kernel parser
        // (AF_PACKET, AF_ALG, AF_VSOCK have all had privilege-escalation bugs).
        for family: UInt32 in [1, 2, 10] {
            rules.append(Rule("socket", conditions: [.int32(0, equals: family)]))
        }
        // AF_NETLINK for NETLINK_ROUTE (getifaddrs) and NETLINK_SOCK_DIAG (ss); never AUDIT.
        for proto: UInt32 in [0, 4] {
            rules.append(Rule("socket", conditions: [.int32(0, equals: 16), .int32(2, equals: proto)]))
        }
        rules.append(Rule("socketpair", conditions: [.int32(0, equals: 1)]))
        // FIFOs, sockets and regular files only: a device node is a door to the host.
        for type: UInt64 in [0, 0o010000, 0o100000, 0o140000] {
            rules.append(Rule("mknod", conditions: [Condition(argument: 1, .maskedEqual, type, mask: 0o170000)]))
            rules.append(Rule("mknodat", conditions: [Condition(argument: 2, .maskedEqual, type, mask: 0o170000)]))
        }
        return rules
    }

    /// Re-derived from Docker's default list for x86_64, minus everything in
    /// ``deniedByDefault`` and the calls that get conditional rules above.
    static let allowedUnconditionally: [String] = [
        "accept", "accept4", "access", "alarm", "arch_prctl", "bind", "brk", "cachestat", "capget", "capset",
        "chdir", "chmod", "chown", "clock_getres", "clock_gettime", "clock_nanosleep", "close", "close_range",
        "connect", "copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
        "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd",
        "eventfd2", "execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
        "fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchownat",
        "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
        "fstatfs", "fsync", "ftruncate", "futex", "futex_requeue", "futex_wait", "futex_waitv", "futex_wake",
        "futimesat", "getcpu", "getcwd", "getdents", "getdents64", "getegid", "geteuid", "getgid", "getgroups",
        "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid", "getpriority", "getrandom",
        "getresgid", "getresuid", "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname",
        "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getxattr", "inotify_add_watch",
        "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl", "io_destroy", "io_getevents",
        "io_pgetevents", "ioprio_get", "ioprio_set", "io_setup", "io_submit", "kill", "landlock_add_rule",
        "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lgetxattr", "link", "linkat", "listen",
        "listxattr", "llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise", "map_shadow_stack",
        "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir", "mkdirat", "mlock", "mlock2",
        "mlockall", "mmap", "modify_ldt", "mprotect", "mq_getsetattr", "mq_notify", "mq_open",
        "mq_timedreceive", "mq_timedsend", "mq_unlink", "mremap", "msgctl", "msgget", "msgrcv", "msgsnd",
        "msync", "munlock", "munlockall", "munmap", "name_to_handle_at", "nanosleep", "newfstatat", "open",
        "openat", "openat2", "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc",
        "pkey_free", "pkey_mprotect", "poll", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
        "process_mrelease", "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead", "readlink",
        "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg", "remap_file_pages", "removexattr", "rename",
        "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
        "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
        "sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity",
        "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
        "semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsuid",
        "setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid", "setresuid",
        "setreuid", "setrlimit", "set_robust_list", "setsid", "setsockopt", "set_thread_area",
        "set_tid_address", "setuid", "setxattr", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
        "sigaltstack", "signalfd", "signalfd4", "splice", "stat", "statfs", "statx", "symlink", "symlinkat",
        "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time", "timer_create", "timer_delete",
        "timer_getoverrun", "timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime",
        "timerfd_settime", "times", "tkill", "truncate", "umask", "uname", "unlink", "unlinkat", "utime",
        "utimensat", "utimes", "vfork", "vmsplice", "wait4", "waitid", "write", "writev",
    ]
}
