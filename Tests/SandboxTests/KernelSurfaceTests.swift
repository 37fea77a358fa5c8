import Foundation
import Sandbox
import TestSupport
import Testing

/// The kernel-surface attacks of THREATS.md, made from inside a sandbox through the exec
/// path with the default seccomp profile: a static probe binary in the workspace issues
/// each raw syscall and prints the errno it got.
@Suite struct KernelSurfaceTests {
    static let probeSource = """
        #define _GNU_SOURCE
        #include <errno.h>
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/syscall.h>
        #include <unistd.h>
        int main(int argc, char **argv) {
            long a[6] = {0};
            for (int i = 2; i < argc && i < 8; i++) a[i - 2] = strtol(argv[i], NULL, 0);
            long r = syscall(strtol(argv[1], NULL, 0), a[0], a[1], a[2], a[3], a[4], a[5]);
            if (r == 0 && (argv[1][0] == '5' && argv[1][1] == '6' && argv[1][2] == 0)) _exit(0);  /* clone child */
            printf("%d\\n", r < 0 ? errno : 0);
            return 0;
        }
        """

    /// Builds the probe into `workspace` with the host's C compiler, statically, so it runs
    /// on any image.
    static func buildProbe(into workspace: String) throws {
        let source = workspace + "/probe.c"
        try probeSource.write(toFile: source, atomically: false, encoding: .utf8)
        let cc = Process()
        cc.executableURL = URL(fileURLWithPath: "/usr/bin/cc")
        cc.arguments = ["-static", "-O1", "-o", workspace + "/probe", source]
        try cc.run()
        cc.waitUntilExit()
        guard cc.terminationStatus == 0 else { throw TestSupportError("cc failed to build the probe") }
    }

    static let defaultFilter = try! SeccompProfile.corralDefault.compile().instructions

    /// x86_64 syscall numbers, the attack, and the errno the default profile must return.
    static let attacks: [(name: String, args: [String], errno: Int32)] = [
        ("unshare(CLONE_NEWUSER)", ["272", "0x10000000"], EPERM),
        ("setns", ["308", "0", "0"], EPERM),
        ("mount", ["165", "0", "0", "0", "0", "0"], EPERM),
        ("umount2", ["166", "0", "0"], EPERM),
        ("pivot_root", ["155", "0", "0"], EPERM),
        ("open_tree", ["428", "0", "0", "0"], EPERM),
        ("move_mount", ["429", "0", "0", "0", "0", "0"], EPERM),
        ("fsopen", ["430", "0", "0"], EPERM),
        ("mount_setattr", ["442", "0", "0", "0", "0", "0"], EPERM),
        ("io_uring_setup", ["425", "1", "0"], EPERM),
        ("userfaultfd", ["323", "0"], EPERM),
        ("bpf", ["321", "0", "0", "0"], EPERM),
        ("perf_event_open", ["298", "0", "0", "0", "0", "0"], EPERM),
        ("keyctl", ["250", "0"], EPERM),
        ("add_key", ["248", "0", "0", "0", "0", "0"], EPERM),
        ("kexec_load", ["246", "0", "0", "0", "0"], EPERM),
        ("init_module", ["175", "0", "0", "0"], EPERM),
        ("finit_module", ["313", "0", "0", "0"], EPERM),
        ("swapon", ["167", "0", "0"], EPERM),
        ("acct", ["163", "0"], EPERM),
        ("clock_settime", ["227", "0", "0"], EPERM),
        ("syslog", ["103", "3", "0", "0"], EPERM),
        ("reboot", ["169", "0", "0", "0", "0"], EPERM),
        ("open_by_handle_at", ["304", "0", "0", "0"], EPERM),
        ("ptrace(ATTACH, 1)", ["101", "16", "1", "0", "0"], EPERM),
        ("process_vm_readv", ["310", "1", "0", "0", "0", "0", "0"], EPERM),
        ("clone(CLONE_NEWUSER)", ["56", "0x10000011", "0", "0", "0", "0"], EPERM),
        ("clone3", ["435", "0", "0"], ENOSYS),
    ]

    @Test func defaultProfileDeniesEveryKernelSurfaceCall() async throws {
        try await SandboxFixture.with { f in
            try Self.buildProbe(into: f.workspace.path)
            let script = Self.attacks.map { "./probe \($0.args.joined(separator: " "))" }.joined(separator: "; ")
            let r = try await f.sandbox.exec(JobSpec(["/bin/sh", "-c", script], seccomp: Self.defaultFilter))
            let got = r.stdout.split(separator: "\n").map { Int32($0) ?? -1 }
            #expect(got.count == Self.attacks.count, "\(r.stdout) \(r.stderr)")
            for (attack, errno) in zip(Self.attacks, got) {
                #expect(
                    errno == attack.errno, "\(attack.name): got \(Errno.name(errno)), want \(Errno.name(attack.errno))")
            }
            // The seccomp mode is filter (2) for every job.
            let mode = try await f.sandbox.exec(
                JobSpec(["/bin/sh", "-c", "grep ^Seccomp: /proc/self/status"], seccomp: Self.defaultFilter))
            #expect(mode.stdout == "Seccomp:\t2\n")
        }
    }

    @Test func cgroupEscapesAreDenied() async throws {
        // CVE-2022-0492 needs a cgroup v1 mount to set release_agent; the job sees no cgroup
        // filesystem, may not mount one, and its own cgroup path is namespaced.
        try await SandboxFixture.with { f in
            let r = try await f.sandbox.exec(
                JobSpec(
                    [
                        "/bin/sh", "-c",
                        """
                        ls /sys/fs/cgroup 2>&1 | head -1
                        mkdir -p /tmp/cg && mount -t cgroup -o memory cgroup /tmp/cg 2>&1; echo mount=$?
                        echo 0 > /sys/fs/cgroup/cgroup.procs 2>/dev/null; echo write=$?
                        grep memory /proc/self/cgroup
                        """,
                    ], seccomp: Self.defaultFilter))
            #expect(
                r.stdout
                    == "ls: /sys/fs/cgroup: No such file or directory\n"
                    + "mount: permission denied (are you root?)\nmount=1\nwrite=1\n4:memory:/jobs/job-1\n",
                "\(r.stdout)")
        }
    }

    @Test func kernelAddressesReadAsZero() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sandbox.exec(
                JobSpec(
                    ["/bin/sh", "-c", "head -3 /proc/kallsyms | cut -d' ' -f1 | sort -u"], seccomp: Self.defaultFilter))
            #expect(r.stdout == "0000000000000000\n")
        }
    }

    @Test func ordinaryWorkStillRunsUnderTheFilter() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sandbox.exec(
                JobSpec(
                    [
                        "/bin/sh", "-c",
                        "echo a > x && cat x | tr a b && (sleep 0.01 &) && wait && ls /proc/self/ >/dev/null && echo ok",
                    ],
                    seccomp: Self.defaultFilter))
            #expect(r.stdout == "b\nok\n")
            #expect(r.exitCode == 0)
        }
    }

    @Test func theFilterIsWhatDeniesNestedUserNamespaces() async throws {
        // Without a filter an unprivileged job may create a user namespace; with the
        // default profile it may not. The errno comes from the file's profile, not chance.
        try await SandboxFixture.with { f in
            try Self.buildProbe(into: f.workspace.path)
            let open = try await f.sandbox.exec(JobSpec(["./probe", "272", "0x10000000"]))
            #expect(open.stdout == "0\n")
            let filtered = try await f.sandbox.exec(
                JobSpec(["./probe", "272", "0x10000000"], seccomp: Self.defaultFilter))
            #expect(filtered.stdout == "\(EPERM)\n")
        }
    }
}
