import Foundation
import Sandbox
import TestSupport
import Testing

/// The "Escaping the sandbox" attacks of THREATS.md, each run through the exec path.
@Suite struct EscapeTests {
    /// A file that exists on the host only; no path from inside may reach it.
    static func hostMarker() throws -> (path: String, name: String) {
        let name = "corral-marker-\(UUID().uuidString)"
        let path = "/tmp/" + name
        try "host secret".write(toFile: path, atomically: false, encoding: .utf8)
        return (path, name)
    }

    @Test func hostFilesystemIsUnreachableThroughProcRootAndDotDot() async throws {
        let marker = try Self.hostMarker()
        defer { unlink(marker.path) }
        try await SandboxFixture.with { f in
            for path in [
                "/tmp/\(marker.name)", "/proc/1/root/tmp/\(marker.name)", "/proc/self/root/../tmp/\(marker.name)",
                "/workspace/../../../tmp/\(marker.name)", "/proc/1/cwd/../tmp/\(marker.name)",
            ] {
                let r = try await f.sh("cat \(path) 2>&1; echo rc=$?")
                #expect(r.stdout.hasSuffix("rc=1\n"), "\(path): \(r.stdout)")
                #expect(!r.stdout.contains("host secret"))
            }
            // What is visible at / is the image, nothing else.
            let root = try await f.sh("ls /")
            #expect(root.stdout == "bin\ndev\netc\nhome\nproc\nroot\nrun\nsbin\nsys\ntmp\nusr\nvar\nworkspace\n")
        }
    }

    @Test func noHostDescriptorLeaksIntoTheJob() async throws {
        try await SandboxFixture.with { f in
            // The shell's own descriptors, listed without opening a directory of our own.
            let r = try await f.sh("cd /proc/self/fd && echo *")
            #expect(r.stdout == "0 1 2 3\n")  // 3 is the directory `echo *` globbed
            let ls = try await f.sandbox.exec(JobSpec(["ls", "/proc/self/fd"]))
            #expect(ls.stdout == "0\n1\n2\n3\n")
        }
    }

    @Test func everyCapabilityIsZeroAndNoNewPrivsIsSet() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sh("grep -E '^(Cap|NoNewPrivs)' /proc/self/status")
            #expect(
                r.stdout
                    == "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n"
                    + "CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n")
        }
    }

    @Test func cwdOutsideTheWorkspaceIsRefused() async throws {
        try await SandboxFixture.with { f in
            try FileManager.default.createSymbolicLink(
                atPath: f.workspace.path + "/to-root", withDestinationPath: "/")
            for cwd in ["/workspace/../../..", "/workspace/to-root", "/proc/self/fd/0", "/", "/etc", "/workspacex"] {
                await #expect(throws: SandboxError.self, "\(cwd)") {
                    try await f.sandbox.exec(JobSpec(["true"], cwd: cwd))
                }
            }
            await #expect(throws: SandboxError.cwdOutsideWorkspace("/workspace/to-root")) {
                try await f.sandbox.exec(JobSpec(["true"], cwd: "/workspace/to-root"))
            }
            let inside = try await f.sandbox.exec(JobSpec(["pwd"], cwd: "/workspace/."))
            #expect(inside.stdout == "/workspace\n")
        }
    }

    @Test func rootfsIsReadOnlyAndStaysReadOnly() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sh(
                "touch /bin/evil 2>&1; echo rc=$?; mount -o remount,rw / 2>&1; echo rc=$?; touch /etc/x 2>&1; echo rc=$?"
            )
            // Each step on its own line: the remount is refused (no CAP_SYS_ADMIN), and so the
            // rootfs is still read-only for the write after it.
            #expect(
                r.stdout
                    == "touch: /bin/evil: Read-only file system\nrc=1\n"
                    + "mount: permission denied (are you root?)\nrc=1\n"
                    + "touch: /etc/x: Read-only file system\nrc=1\n")
            #expect(!FileManager.default.fileExists(atPath: SandboxFixture.minimalRootfs + "/bin/evil"))
            #expect(!FileManager.default.fileExists(atPath: SandboxFixture.minimalRootfs + "/etc/x"))
            // The workspace and /tmp are writable.
            let w = try await f.sh("echo hi > /workspace/out && echo t > /tmp/t && cat /workspace/out /tmp/t")
            #expect(w.stdout == "hi\nt\n")
        }
    }

    @Test func mountFamilyFailsWithoutCapabilities() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sh("mount -t tmpfs x /tmp 2>&1; echo rc=$?; umount /proc 2>&1; echo rc=$?")
            #expect(r.stdout.contains("rc=1\n"))
            #expect(!r.stdout.contains("rc=0"))
        }
    }

    @Test func procIsMaskedAndKernelKnobsAreReadOnly() async throws {
        try await SandboxFixture.with { f in
            // Masked files read as empty; only those this kernel has are checked.
            let masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug"].filter {
                FileManager.default.fileExists(atPath: $0)
            }
            #expect(!masked.isEmpty)
            let sizes = try await f.sh(masked.map { "wc -c < \($0)" }.joined(separator: "; "))
            #expect(sizes.stdout == String(repeating: "0\n", count: masked.count))
            let r = try await f.sh(
                """
                echo 1 > /proc/sysrq-trigger 2>/dev/null; echo sysrq=$?
                echo x > /proc/sys/kernel/hostname 2>/dev/null; echo sys=$?
                ls /sys | wc -l
                """)
            #expect(r.stdout == "sysrq=1\nsys=1\n0\n")
        }
    }

    @Test func devicesAreMinimalAndMknodFails() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sh("ls /dev; mknod /tmp/mem c 1 1 2>&1; echo rc=$?; cat /dev/mem 2>&1; echo rc=$?")
            #expect(
                r.stdout.hasPrefix(
                    "fd\nfull\nnull\nptmx\npts\nrandom\nshm\nstderr\nstdin\nstdout\ntty\nurandom\nzero\n"))
            #expect(r.stdout.contains("mknod: /tmp/mem: Operation not permitted\nrc=1\n"))
            #expect(r.stdout.hasSuffix("cat: can't open '/dev/mem': No such file or directory\nrc=1\n"))
        }
    }

    @Test func hostBinaryIsNotWritableWhileJobsSpawn() async throws {
        let exe = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let before = try Data(contentsOf: URL(fileURLWithPath: exe))
        try await SandboxFixture.with { f in
            // Race job spawns against writes through every /proc/<pid>/exe the job can see.
            async let spawns: [JobResult] = withThrowingTaskGroup(of: JobResult.self) { group in
                for _ in 0..<20 { group.addTask { try await f.sh("true") } }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let attack = try await f.sh(
                "n=0; for i in $(seq 200); do for p in /proc/[0-9]*/exe; do echo x > $p 2>/dev/null && n=$((n+1)); done; done; echo $n"
            )
            _ = try await spawns
            #expect(attack.stdout == "0\n")
            #expect(try Data(contentsOf: URL(fileURLWithPath: exe)) == before)
        }
    }

    @Test func initEnvironmentAndMemoryAreNotReadable() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sh("cat /proc/1/environ 2>&1; echo rc=$?; head -c1 /proc/1/mem 2>&1; echo rc=$?")
            #expect(
                r.stdout
                    == "cat: can't open '/proc/1/environ': Permission denied\nrc=1\nhead: /proc/1/mem: Permission denied\nrc=1\n"
            )
        }
    }

    @Test func onlyLoopbackExistsAndHostLoopbackIsUnreachable() async throws {
        let dir = try TemporaryDirectory()
        let server = try LoopbackHTTPServer(serving: dir.url)
        defer { server.stop() }
        try await SandboxFixture.with { f in
            let r = try await f.sh(
                "cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '; echo | nc -w 2 127.0.0.1 \(server.port) 2>&1; echo rc=$?"
            )
            #expect(r.stdout == "lo\nnc: can't connect to remote host (127.0.0.1): Connection refused\nrc=1\n")
        }
    }

    @Test func killAllInsideKillsOnlyTheSandbox() async throws {
        try await SandboxFixture.with { a in
            try await SandboxFixture.with { b in
                let bystander = try await b.sandbox.start(JobSpec(["sleep", "30"]))
                let neighbour = try await a.sandbox.start(JobSpec(["sleep", "30"]))
                // kill(-1) reaches every process the caller may signal except itself and init.
                let r = try await a.sh("kill -9 -1; echo survived")
                #expect(r.stdout == "survived\n")
                #expect(await neighbour.wait().signal == SIGKILL)
                #expect(a.sandbox.isAlive)
                #expect(try await a.sh("echo still usable").stdout == "still usable\n")
                #expect(!bystander.isFinished)
                await bystander.cancel()
            }
        }
    }
}
