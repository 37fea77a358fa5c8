import Foundation
import TestSupport
import Testing

/// The real thing for "nothing is silently lost": `corral serve` is killed with SIGKILL
/// while a job runs; the restarted host reports the job as interrupted (never re-runs it),
/// reclaims the dead run's sandbox, and the project works.
@Suite struct HostCrashTests {
    /// The hosts' own cgroup prefix, beside the test process's.
    static var cgroupPrefix: String { TestCgroups.ownPrefix + "-serve" }

    static var corral: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("corral").path
    }

    /// A `corral serve` process on a free loopback port over `data`.
    final class Server: @unchecked Sendable {
        let process = Process()
        let port: Int

        init(data: String, policies: String, port: Int) throws {
            self.port = port
            process.executableURL = URL(fileURLWithPath: HostCrashTests.corral)
            process.arguments = [
                "serve", "--bind", "127.0.0.1:\(port)", "--data-dir", data, "--policies-dir", policies,
                "--rootfs-dir", TestPaths.rootfsDirectory, "--cgroup-prefix", HostCrashTests.cgroupPrefix,
                "--log-format", "text",
            ]
            // Beside the data directory, appended to by a restarted host: a host that
            // fails to start says why there.
            let log = URL(fileURLWithPath: data).deletingLastPathComponent().appendingPathComponent("serve.log").path
            try ProcessLog.run(process, loggingTo: log)
            for _ in 0..<300 {
                if (try? curl(["http://127.0.0.1:\(port)/health"]))?.contains("ok") == true { return }
                if !process.isRunning { break }
                usleep(50_000)
            }
            let error = ProcessLog.failure("corral serve", port: port, process: process, log: log)
            if process.isRunning { kill(SIGKILL) }
            throw error
        }

        func curl(_ args: [String]) throws -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            p.arguments = ["-s", "--max-time", "30"] + args
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }

        func json(_ method: String, _ path: String, _ body: String? = nil) throws -> [String: Any] {
            var args = ["-X", method, "http://127.0.0.1:\(port)\(path)"]
            if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
            let text = try curl(args)
            return (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? ["raw": text]
        }

        func kill(_ signal: Int32) {
            Glibc.kill(process.processIdentifier, signal)
            process.waitUntilExit()
        }

        /// SIGKILL unless it has already exited (and been reaped: its pid may be reused).
        func stop() {
            if process.isRunning { kill(SIGKILL) }
        }
    }

    /// Live host processes named `name` whose cgroup path contains `fragment`. Zombies do not
    /// count: the killed host's job processes were its children and wait for the machine's
    /// init to reap them, but they are dead.
    static func processes(inCgroupsContaining fragment: String, named name: String) -> Int {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.filter { entry in
            guard Int32(entry) != nil,
                let comm = try? String(contentsOfFile: "/proc/\(entry)/comm", encoding: .utf8),
                comm.trimmingCharacters(in: .whitespacesAndNewlines) == name,
                let status = try? String(contentsOfFile: "/proc/\(entry)/status", encoding: .utf8),
                !status.contains("State:\tZ"),
                let cgroup = try? String(contentsOfFile: "/proc/\(entry)/cgroup", encoding: .utf8)
            else { return false }
            return cgroup.contains(fragment)
        }.count
    }

    /// A data directory and a policies directory (the minimal image) under `dir`.
    static func layout(in dir: TemporaryDirectory) throws -> (data: String, policies: String) {
        let policies = dir.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try "rootfs = \"minimal\"\n".write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        return (dir.path + "/var", policies)
    }

    @Test func aKilledHostRestartsWithTheJobInterruptedAndTheProjectUsable() async throws {
        let dir = try TemporaryDirectory()
        let (data, policies) = try Self.layout(in: dir)
        let port = try LoopbackPort.free()
        #expect(TestCgroups.directories(named: Self.cgroupPrefix) == [])
        var servers: [Server] = []
        defer {
            // A failure part-way: no host outlives the test, nor its cgroups.
            for server in servers { server.stop() }
            TestCgroups.remove(prefix: Self.cgroupPrefix)
        }
        let first = try Server(data: data, policies: policies, port: port)
        servers.append(first)
        let archive = try LiveArchive.make(["a.txt": "kept\n"])
        defer { unlink(archive) }
        _ = try first.curl([
            "-X", "PUT", "--data-binary", "@\(archive)", "http://127.0.0.1:\(port)/v1/projects/p/archive",
        ])
        let submitted = try first.json("POST", "/v1/projects/p/jobs", #"{"command": "echo started; sleep 60"}"#)
        let id = try #require(submitted["job_id"] as? String)
        let running = try first.json("GET", "/v1/projects/p/jobs/\(id)?wait=10&since=0")
        #expect(running["status"] as? String == "running")
        first.kill(SIGKILL)

        let second = try Server(data: data, policies: policies, port: port)
        servers.append(second)
        let after = try second.json("GET", "/v1/projects/p/jobs/\(id)")
        #expect(after["status"] as? String == "interrupted", "\(after)")
        let exec = try second.json("POST", "/v1/projects/p/exec", #"{"command": "cat a.txt"}"#)
        #expect(exec["status"] as? String == "completed")
        #expect(exec["stdout"] as? String == "kept\n", "\(exec)")
        // The dead run's sandbox (its init and `sleep 60`) was swept by the restart.
        #expect(Self.processes(inCgroupsContaining: Self.cgroupPrefix, named: "sleep") == 0)
        let live = TestCgroups.directories(named: Self.cgroupPrefix)
        #expect(live == TestCgroups.expectedDirectories(named: Self.cgroupPrefix))
        #expect(!live.isEmpty)
        // A clean stop destroys the sandbox and removes the host's prefix in every hierarchy.
        second.kill(SIGTERM)
        #expect(second.process.terminationStatus == 0)
        #expect(TestCgroups.directories(named: Self.cgroupPrefix) == [])
    }
}

/// A tar.gz on disk for curl to upload.
enum LiveArchive {
    static func make(_ files: [String: String]) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "corral-crash-\(UUID().uuidString).tar.gz")
        try Data(try ArchiveFixture.tarGz(files)).write(to: path)
        return path.path
    }
}
