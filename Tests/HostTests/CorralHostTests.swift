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

    /// A host over a temporary data directory with the shipped default policy.
    static func host(_ data: TemporaryDirectory) async throws -> CorralHost {
        let policies = data.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        // The shipped default, on the minimal image (the devtools image takes minutes to build).
        let shipped = try String(
            contentsOf: repository.appendingPathComponent("policies/default.toml"), encoding: .utf8)
        try shipped.replacingOccurrences(of: "rootfs = \"devtools\"", with: "rootfs = \"minimal\"")
            .write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        return try await CorralHost.open(
            HostConfiguration(
                dataDirectory: data.path + "/var", rootfsDirectory: rootfs, policiesDirectory: policies,
                cgroups: TestCgroups.driver))
    }

    static var rootfs: String {
        ProcessInfo.processInfo.environment["CORRAL_ROOTFS_DIR"] ?? repository.appendingPathComponent("rootfs/out").path
    }

    /// A tar.gz of `files`, made by bsdtar.
    static func archive(_ files: [String: String]) throws -> [UInt8] {
        let dir = try TemporaryDirectory()
        for (path, text) in files {
            let url = dir.url.appendingPathComponent(path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: false, encoding: .utf8)
        }
        let out = dir.path + ".tar.gz"
        let tar = Process()
        tar.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
        tar.arguments = ["-czf", out, "-C", dir.path, "."]
        try tar.run()
        tar.waitUntilExit()
        defer { unlink(out) }
        return Array(try Data(contentsOf: URL(fileURLWithPath: out)))
    }

    @Test func uploadedProjectRunsCommandsUnderItsPolicy() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        _ = try await host.upload("demo", archive: try Self.archive(["hello.sh": "echo hello from $(hostname)\n"]))
        let r = try await host.exec(JobRequest(project: "demo", command: "sh hello.sh; id -u"), budget: .seconds(20))
        #expect(r.record.state == .completed, "\(r.record.error ?? "")")
        #expect(r.record.result?.stdout == "hello from demo\n1000\n")
        let info = try await host.project("demo")
        #expect(info.state == "ready")
        #expect(info.sandbox)
        #expect(info.policy == "default")
        // The default policy's seccomp profile is loaded.
        let mode = try await host.exec(
            JobRequest(project: "demo", command: "grep ^Seccomp: /proc/self/status"), budget: .seconds(20))
        #expect(mode.record.result?.stdout == "Seccomp:\t2\n")
        await host.shutdown(grace: .seconds(1))
    }

    @Test func editsSurviveWriteBackEvictionAndRematerialization() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        _ = try await host.upload("keep", archive: try Self.archive(["a.txt": "one\n"]))
        _ = try await host.exec(
            JobRequest(project: "keep", command: "echo two >> a.txt; mkdir -p d; echo x > d/y"), budget: .seconds(20))
        try await host.evict("keep")
        #expect(try await host.project("keep").state == "cold")
        let r = try await host.exec(JobRequest(project: "keep", command: "cat a.txt d/y"), budget: .seconds(20))
        #expect(r.record.result?.stdout == "one\ntwo\nx\n")
        await host.shutdown(grace: .seconds(1))
    }

    @Test func requestsBeyondThePolicyAreRefused() async throws {
        let data = try TemporaryDirectory()
        let host = try await Self.host(data)
        _ = try await host.upload("p", archive: try Self.archive(["x": "x"]))
        await #expect(throws: HostError.self) {
            try await host.exec(
                JobRequest(project: "p", command: "true", timeoutSeconds: 1_000_000), budget: .seconds(5))
        }
        await #expect(throws: HostError.unknownPolicy("nope")) {
            try await host.upload("q", archive: try Self.archive(["x": "x"]), policy: "nope")
        }
        await #expect(throws: HostError.projectNotFound("ghost")) {
            try await host.exec(JobRequest(project: "ghost", command: "true"), budget: .seconds(5))
        }
        let status = await host.status()
        #expect(status.cgroupMode == "hybrid")
        #expect(status.policies.keys.sorted() == ["default"])
        #expect(status.policyErrors == [])
        #expect(await host.readiness().values.allSatisfy { $0 })
        await host.shutdown(grace: .seconds(1))
    }
}
