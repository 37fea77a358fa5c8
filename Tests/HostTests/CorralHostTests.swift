import Foundation
import Host
import Sandbox
import TestSupport
import Testing

/// The host as the API uses it: an uploaded project, commands under its policy, and its
/// workspace surviving write-back and eviction.
@Suite struct CorralHostTests {
    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// A host over a temporary data directory with the shipped default policy; `configure`
    /// changes its configuration (by default the tests' shared cgroup driver) first.
    static func host(
        _ data: TemporaryDirectory, configure: (inout HostConfiguration) -> Void = { _ in }
    ) async throws -> CorralHost {
        let policies = data.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        // The shipped default, on the minimal image (the devtools image takes minutes to build).
        let shipped = try String(
            contentsOf: repository.appendingPathComponent("policies/default.toml"), encoding: .utf8)
        try shipped.replacingOccurrences(of: "rootfs = \"devtools\"", with: "rootfs = \"minimal\"")
            .write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        var configuration = HostConfiguration(
            dataDirectory: data.path + "/var", rootfsDirectory: rootfs, policiesDirectory: policies,
            cgroups: TestCgroups.driver)
        configure(&configuration)
        return try await CorralHost.open(configuration)
    }

    static var rootfs: String { TestPaths.rootfsDirectory }

    /// A tar.gz of `files`, made by bsdtar.
    static func archive(_ files: [String: String]) throws -> [UInt8] {
        try ArchiveFixture.tarGz(files)
    }

    @Test func uploadedProjectRunsCommandsUnderItsPolicy() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        _ = try await host.upload("demo", archive: try Self.archive(["hello.sh": "echo hello from $(hostname)\n"]))
        let r = try await host.jobService.run(
            JobRequest(project: "demo", command: "sh hello.sh; id -u"), budget: .seconds(20))
        #expect(r.record.state == .completed, "\(r.record.error ?? "")")
        #expect(r.record.result?.stdout == "hello from demo\n1000\n")
        let info = try await host.project("demo")
        #expect(info.state == "ready")
        #expect(info.sandbox)
        #expect(info.policy == "default")
        // The default policy's seccomp profile is loaded.
        let mode = try await host.jobService.run(
            JobRequest(project: "demo", command: "grep ^Seccomp: /proc/self/status"), budget: .seconds(20))
        #expect(mode.record.result?.stdout == "Seccomp:\t2\n")
        await host.shutdown(grace: .seconds(1))
    }

    /// `corral serve` and cluster workers stop through this path (HostCrashTests runs the
    /// real `corral serve`).
    @Test func aCleanStopRemovesTheHostsPrefixFromEveryHierarchy() async throws {
        let prefix = TestCgroups.ownPrefix + "-stop"
        defer { TestCgroups.remove(prefix: prefix) }
        #expect(TestCgroups.directories(named: prefix) == [])
        let driver = try CgroupDriver.detect(prefix: prefix)
        let expected = TestCgroups.expectedDirectories(named: prefix)
        #expect(expected.count == driver.directories.count)
        #expect(TestCgroups.directories(named: prefix) == expected)
        #expect(driver.directories.sorted() == expected)

        let data = try TemporaryDirectory()
        // The name leaves out "Cgroup" on purpose: the cgroup v2 VM lane has no loop devices
        // for the default policy's workspace cap; CgroupLifecycleTests covers the removal there.
        let host = try await Self.host(data) {
            $0.cgroups = driver
            $0.removesCgroupPrefixOnStop = true
        }
        _ = try await host.upload("demo", archive: try Self.archive(["a.txt": "a\n"]))
        let r = try await host.jobService.run(JobRequest(project: "demo", command: "cat a.txt"), budget: .seconds(20))
        #expect(r.record.result?.stdout == "a\n")
        // The project's sandbox lives on under the prefix until the stop.
        #expect(try driver.projectNames().map { $0.split(separator: ".")[0] } == ["demo"])
        await host.shutdown(grace: .seconds(1))
        #expect(TestCgroups.directories(named: prefix) == [])
        #expect(driver.directories.filter { FileManager.default.fileExists(atPath: $0) } == [])
    }

    @Test func editsSurviveWriteBackEvictionAndRematerialization() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        _ = try await host.upload("keep", archive: try Self.archive(["a.txt": "one\n"]))
        _ = try await host.jobService.run(
            JobRequest(project: "keep", command: "echo two >> a.txt; mkdir -p d; echo x > d/y"), budget: .seconds(20))
        try await host.evict("keep")
        #expect(try await host.project("keep").state == "cold")
        let r = try await host.jobService.run(
            JobRequest(project: "keep", command: "cat a.txt d/y"), budget: .seconds(20))
        #expect(r.record.result?.stdout == "one\ntwo\nx\n")
        await host.shutdown(grace: .seconds(1))
    }

    @Test func fileToolsAndJobsSeeTheSameWorkspaceAsTheSameUser() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        _ = try await host.upload("tools", archive: try Self.archive(["a.txt": "one\n"]))
        let written = try await host.fileTool(
            project: "tools", name: "write_file",
            arguments: ["path": .string("src/new.py"), "content": .string("print(1)\n")],
            caller: nil)
        #expect(!written.isError, "\(written.text)")
        let seen = try await host.jobService.run(
            JobRequest(project: "tools", command: "cat src/new.py; stat -c '%u %g' src/new.py src; echo made > b.txt"),
            budget: .seconds(20))
        #expect(seen.record.result?.stdout == "print(1)\n1000 1000\n1000 1000\n")
        let read = try await host.fileTool(
            project: "tools", name: "read_file", arguments: ["path": .string("b.txt")], caller: nil)
        #expect(read.text.contains("made"))
        let escape = try await host.fileTool(
            project: "tools", name: "read_file", arguments: ["path": .string("../../etc/passwd")], caller: nil)
        #expect(escape.isError)
        #expect(escape.errorCode == "path_outside_project")
        // After file tools touched it, the workspace still evicts (its volume unmounts).
        try await host.evict("tools", discard: true)
        #expect(try await host.project("tools").state == "cold")
        await host.shutdown(grace: .seconds(1))
    }

    @Test func readsAndEchoesCompleteWhileFourCPUBoundBuildsRun() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        for project in ["busy", "calm"] {
            _ = try await host.upload(
                project, archive: try Self.archive(["f.txt": String(repeating: "line\n", count: 200)]))
        }
        var builds: [String] = []
        for _ in 0..<4 {
            builds.append(
                try await host.jobService.submit(
                    JobRequest(project: "busy", command: "while :; do :; done", timeoutSeconds: 60, background: true)
                ).id)
        }
        try await Task.sleep(for: .milliseconds(300))
        func ms(_ since: ContinuousClock.Instant) -> Double {
            Double((ContinuousClock.now - since) / .microseconds(1)) / 1000
        }
        let reads = try await withThrowingTaskGroup(of: Double.self) { group in
            for i in 0..<1000 {
                group.addTask {
                    let start = ContinuousClock.now
                    let r = try await host.fileTool(
                        project: i % 2 == 0 ? "busy" : "calm", name: "read_file",
                        arguments: ["path": .string("f.txt"), "limit": .number(5)], caller: nil)
                    #expect(!r.isError && r.text.contains("line"))
                    return ms(start)
                }
            }
            return try await group.reduce(into: [Double]()) { $0.append($1) }.sorted()
        }
        let echoes = try await withThrowingTaskGroup(of: Double.self) { group in
            for i in 0..<100 {
                group.addTask {
                    let start = ContinuousClock.now
                    let r = try await host.jobService.run(
                        JobRequest(project: i % 2 == 0 ? "busy" : "calm", command: "echo \(i)"), budget: .seconds(60))
                    #expect(r.record.result?.stdout == "\(i)\n")
                    return ms(start)
                }
            }
            return try await group.reduce(into: [Double]()) { $0.append($1) }.sorted()
        }
        #expect(reads.count == 1000 && echoes.count == 100)
        for id in builds { #expect(try await host.jobs.snapshot(id).record.state == .running) }
        print(
            "under 4 CPU-bound builds: read_file p50 \(reads[499]) ms p99 \(reads[989]) ms; echo p50 \(echoes[49]) ms p99 \(echoes[98]) ms"
        )
        for id in builds { _ = try await host.jobs.cancel(id) }
        await host.shutdown(grace: .seconds(1))
    }

    /// docs/THREATS.md, "Starving the host or other projects": a disk fill is capped; the host disk does not fill.
    @Test func aJobFillingItsWorkspaceHitsThePolicysCap() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        let info = try await host.upload(
            "fill", archive: try Self.archive(["a.txt": "one\n"]), limits: RequestedLimits(workspaceBytes: 32 << 20))
        #expect(info.limits.workspaceBytes == 33_554_432)
        #expect(try await host.cache.status("fill").quotaBytes == 32 << 20)
        let r = try await host.jobService.run(
            JobRequest(
                project: "fill",
                command: "dd if=/dev/zero of=fill bs=1M count=200 2>&1 | grep -o 'No space left on device'"),
            budget: .seconds(60))
        #expect(r.record.result?.stdout == "No space left on device\n")
        // Flushed through the loop device, the image holds what dd wrote, and no more than the cap.
        sync()
        var st = stat()
        #expect(stat(data.path + "/var/cache/volumes/fill.img", &st) == 0)
        #expect(Int64(st.st_blocks) * 512 > 20 << 20)
        #expect(Int64(st.st_blocks) * 512 <= (32 << 20) + (1 << 20))
        // The policy's default cap applies to a project that asks for nothing.
        _ = try await host.upload("plain", archive: try Self.archive(["a.txt": "one\n"]))
        #expect(try await host.cache.status("plain").quotaBytes == 4 << 30)
        await host.shutdown(grace: .seconds(1))
    }

    @Test func requestsBeyondThePolicyAreRefused() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        _ = try await host.upload("p", archive: try Self.archive(["x": "x"]))
        await #expect(throws: HostError.policyLimits("timeout 1801.0 s is above the project's maximum of 1800 s")) {
            try await host.jobService.run(
                JobRequest(project: "p", command: "true", timeoutSeconds: 1801), budget: .seconds(5))
        }
        // Up to the policy's maximum is fine, above the default of 120 s included.
        let long = try await host.jobService.run(
            JobRequest(project: "p", command: "true", timeoutSeconds: 1800), budget: .seconds(20))
        #expect(long.record.state == .completed)
        await #expect(throws: HostError.unknownPolicy("nope")) {
            try await host.upload("q", archive: try Self.archive(["x": "x"]), policy: "nope")
        }
        await #expect(throws: HostError.projectNotFound("ghost")) {
            try await host.jobService.run(JobRequest(project: "ghost", command: "true"), budget: .seconds(5))
        }
        let status = await host.status()
        #expect(status.cgroupMode == "hybrid")
        #expect(status.policies.keys.sorted() == ["default"])
        #expect(status.policyErrors == [])
        #expect(await host.readiness().values.allSatisfy { $0 })
        await host.shutdown(grace: .seconds(1))
    }
}
