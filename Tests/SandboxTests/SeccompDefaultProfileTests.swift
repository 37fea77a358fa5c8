import CShim
import Foundation
import Glibc
import Sandbox
import TestSupport
import Testing

/// The default profile, loaded for real by a forked child: each attack from THREATS.md's
/// kernel-surface and escape lists gets exactly the errno the profile promises, and what an
/// ordinary build needs still works. Arguments are chosen so that even an unfiltered call
/// would fail harmlessly (bad pointers, bad fds), because the probe runs on this machine.
@Suite(.serialized) struct SeccompDefaultProfileTests {
    let program: SeccompProgram

    init() throws { program = try SeccompProfile.corralDefault.compile() }

    static let bad = 1  // a pointer no page is mapped at: EFAULT if the call ever ran

    /// Each call with its arguments; all must get EPERM.
    static let kernelSurface: [(String, [Int])] = [
        ("mount", [bad, bad, bad, 0, 0]), ("umount2", [bad, 0]), ("pivot_root", [bad, bad]),
        ("open_tree", [-1, bad, 0]), ("move_mount", [-1, bad, -1, bad, 0]), ("fsopen", [bad, 0]),
        ("fsconfig", [-1, 0, 0, 0, 0]), ("fsmount", [-1, 0, 0]), ("fspick", [-1, bad, 0]),
        ("mount_setattr", [-1, bad, 0, 0, 0]), ("unshare", [0x1000_0000]), ("setns", [-1, 0]),
        ("chroot", [bad]), ("io_uring_setup", [1, bad]), ("io_uring_enter", [-1, 0, 0, 0, 0, 0]),
        ("io_uring_register", [-1, 0, 0, 0]), ("userfaultfd", [0]), ("bpf", [0xffff, 0, 0]),
        ("perf_event_open", [bad, 0, -1, -1, 0]), ("keyctl", [0xffff, 0, 0, 0, 0]),
        ("add_key", [bad, bad, 0, 0, 0]), ("request_key", [bad, bad, 0, 0]),
        ("kexec_load", [0, 0, 0, 0xffff_0000]), ("kexec_file_load", [-1, -1, 0, 0, 0xffff]),
        ("init_module", [bad, bad, bad]), ("finit_module", [-1, bad, 0]), ("delete_module", [bad, 0]),
        ("swapon", [bad, 0]), ("swapoff", [bad]), ("acct", [bad]), ("clock_settime", [0, bad]),
        ("settimeofday", [bad, 0]), ("adjtimex", [bad]), ("clock_adjtime", [0, bad]), ("syslog", [10, 0, 0]),
        ("reboot", [0, 0, 0, 0]), ("open_by_handle_at", [-1, bad, 0]), ("ptrace", [0, 0, 0, 0]),
        ("process_vm_readv", [0, 0, 0, 0, 0, 0]), ("process_vm_writev", [0, 0, 0, 0, 0, 0]),
        ("pidfd_getfd", [-1, 0, 0]), ("sethostname", [bad, 1]), ("quotactl", [0, bad, 0, 0]),
    ]

    @Test func kernelSurfaceIsDeniedWithEPERM() throws {
        for (name, args) in Self.kernelSurface {
            #expect(try Probe.errno(program, name, args) == EPERM, "\(name)")
        }
    }

    @Test func theProbedCallsWouldFailDifferentlyWithoutTheFilter() throws {
        // Proves EPERM above came from the filter: as root, the kernel itself answers
        // these (harmless) calls with EFAULT or EBADF.
        #expect(try Probe.errno(nil, "mount", [Self.bad, Self.bad, Self.bad, 0, 0]) == EFAULT)
        #expect(try Probe.errno(nil, "setns", [-1, 0]) == EBADF)
        #expect(try Probe.errno(nil, "umount2", [Self.bad, 0]) == EFAULT)
        #expect(try Probe.errno(nil, "fsopen", [Self.bad, 0]) == EFAULT)
    }

    @Test func nestedUserNamespaceThroughCloneIsDenied() throws {
        for flag in [0x1000_0000, 0x4000_0000, 0x0002_0000, 0x2000_0000] {  // NEWUSER, NEWNET, NEWNS, NEWPID
            #expect(try Probe.errno(program, "clone", [flag | Int(SIGCHLD), 0, 0, 0, 0]) == EPERM)
        }
    }

    @Test func clone3FailsWithENOSYSSoLibcFallsBackToClone() throws {
        #expect(try Probe.errno(program, "clone3", [Self.bad, 88]) == ENOSYS)
    }

    @Test func forkLikeCloneStillWorks() throws {
        let result = try Probe.run(program, "clone", [Int(SIGCHLD), 0, 0, 0, 0])
        #expect(result.err == 0)
        #expect(result.value > 0)
    }

    @Test func riskySocketFamiliesAreDenied() throws {
        #expect(try Probe.errno(program, "socket", [17, 3, 0]) == EPERM)  // AF_PACKET, SOCK_RAW
        #expect(try Probe.errno(program, "socket", [38, 5, 0]) == EPERM)  // AF_ALG, SOCK_SEQPACKET
        #expect(try Probe.errno(program, "socket", [40, 1, 0]) == EPERM)  // AF_VSOCK, SOCK_STREAM
        #expect(try Probe.errno(program, "socket", [16, 3, 9]) == EPERM)  // AF_NETLINK, NETLINK_AUDIT
        // The kernel ignores the upper half of an int; the filter must too.
        #expect(try Probe.errno(program, "socket", [1 << 32 | 17, 3, 0]) == EPERM)
    }

    @Test func ordinarySocketsWork() throws {
        #expect(try Probe.errno(program, "socket", [2, 1, 0]) == 0)  // AF_INET, SOCK_STREAM
        #expect(try Probe.errno(program, "socket", [10, 2, 0]) == 0)  // AF_INET6, SOCK_DGRAM
        #expect(try Probe.errno(program, "socket", [1, 1, 0]) == 0)  // AF_UNIX
        #expect(try Probe.errno(program, "socket", [16, 3, 0]) == 0)  // AF_NETLINK, NETLINK_ROUTE
        var pair: [Int32] = [-1, -1]
        let address = pair.withUnsafeMutableBufferPointer { Int(bitPattern: $0.baseAddress) }
        #expect(try Probe.errno(program, "socketpair", [1, 1, 0, address]) == 0)
    }

    @Test func personalityIsLimitedToSafeValues() throws {
        #expect(try Probe.errno(program, "personality", [0x0004_0000]) == EPERM)  // ADDR_NO_RANDOMIZE
        #expect(try Probe.errno(program, "personality", [0x0040_0000]) == EPERM)  // READ_IMPLIES_EXEC
        #expect(try Probe.errno(program, "personality", [0xffff_ffff]) == 0)  // query
        #expect(try Probe.errno(program, "personality", [0]) == 0)  // PER_LINUX
    }

    @Test func deviceNodesAreDeniedButFIFOsWork() throws {
        let directory = try TemporaryDirectory()
        let path = strdup(directory.path + "/node")!
        defer { free(path) }
        let address = Int(bitPattern: path)
        #expect(try Probe.errno(program, "mknod", [address, Int(S_IFCHR | 0o600), 0x103]) == EPERM)
        #expect(try Probe.errno(program, "mknodat", [Int(AT_FDCWD), address, Int(S_IFBLK | 0o600), 0x800]) == EPERM)
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/node"))
        #expect(try Probe.errno(program, "mknod", [address, Int(S_IFIFO | 0o600), 0]) == 0)
        var info = stat()
        #expect(stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFIFO)
    }

    @Test func ordinaryCallsWork() throws {
        for name in ["getpid", "getppid", "gettid", "getuid", "sched_yield"] {
            #expect(try Probe.errno(program, name) == 0, "\(name)")
        }
    }

    @Test(.enabled(if: Probe.hasIA32, "this kernel has no ia32 emulation, so int 0x80 cannot be tried"))
    func i386SyscallsThroughInt0x80FailWithENOSYS() throws {
        let baseline = try Probe.run(nil, number: 20, abi: COR_PROBE_INT80)  // i386 getpid
        #expect(baseline.err == 0 && baseline.value > 0)
        let filtered = try Probe.run(program, number: 20, abi: COR_PROBE_INT80)
        #expect(filtered.signal == 0)
        #expect(filtered.err == ENOSYS)
    }

    @Test func x32SyscallsFailWithENOSYS() throws {
        // x32 calls carry bit 30 in the number; the kernel here may lack x32 entirely, so
        // the real call and the filter's own verdict are both checked.
        #expect(try Probe.errno(program, "getpid") == 0)
        let x32GetPid = 0x4000_0000 | 39
        let result = try Probe.run(program, number: x32GetPid)
        #expect(result.err == ENOSYS)
        let verdict = BPFMachine(program: program.instructions).run(nr: Int32(x32GetPid))
        #expect(verdict == BPFMachine.errno(ENOSYS))
    }
}
