import Foundation
import Host
import TestSupport
import Testing

@testable import Sandbox

/// A policy's limits on a host that cannot enforce one of them: refused by default, run and
/// flagged with `require_limits = false`, never silently unlimited. The host's pids
/// controller is hidden from the driver to provoke it (hybrid hosts, where each controller
/// is its own mount).
@Suite struct CorralHostLimitsTests {
    static let reason = "no cgroup v1 pids hierarchy is mounted"
    static var hybrid: Bool { !FileManager.default.fileExists(atPath: "/sys/fs/cgroup/cgroup.controllers") }

    /// A host whose cgroup driver does not see the pids hierarchy, with one policy file.
    static func host(_ data: TemporaryDirectory, policy: String) async throws -> (CorralHost, CgroupDriver) {
        let mountinfo = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasSuffix(",pids") }.joined(separator: "\n")
        let prefix = "corral-tests-\(getpid())-" + UUID().uuidString.prefix(8).lowercased()
        let driver = try CgroupDriver.detect(root: "/sys/fs/cgroup", prefix: prefix, mountinfo: mountinfo)
        let policies = data.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try ("rootfs = \"minimal\"\n" + policy).write(
            toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        let host = try await CorralHost.open(
            HostConfiguration(
                dataDirectory: data.path + "/var", rootfsDirectory: TestPaths.rootfsDirectory,
                policiesDirectory: policies, cgroups: driver))
        _ = try await host.upload("p", archive: try ArchiveFixture.tarGz(["a.txt": "a\n"]))
        return (host, driver)
    }

    @Test(.enabled(if: hybrid, "hiding a controller needs separate cgroup v1 hierarchies"))
    func aRequiredLimitTheHostCannotEnforceKeepsTheSandboxFromStarting() async throws {
        let data = try TemporaryDirectory()
        let (host, driver) = try await Self.host(data, policy: "")
        let r = try await host.jobService.run(JobRequest(project: "p", command: "echo ran"), budget: .seconds(20))
        #expect(r.record.state == .failedToStart)
        #expect(r.record.error == "pids limit cannot be enforced: \(Self.reason)")
        #expect(r.record.result == nil)
        let info = try await host.project("p")
        #expect(!info.sandbox)
        #expect(info.limits.enforcement["pids"] == "not enforced: \(Self.reason)")
        #expect(info.limits.requireLimits == true)
        await host.shutdown(grace: .seconds(1))
        #expect(try driver.projectNames() == [])
        for directory in driver.directories { rmdir(directory) }
        data.remove()
    }

    @Test(.enabled(if: hybrid, "hiding a controller needs separate cgroup v1 hierarchies"))
    func withRequireLimitsFalseTheSandboxRunsAndTheMissingLimitIsReported() async throws {
        let data = try TemporaryDirectory()
        let (host, driver) = try await Self.host(data, policy: "require_limits = false\n")
        let r = try await host.jobService.run(JobRequest(project: "p", command: "cat a.txt"), budget: .seconds(20))
        #expect(r.record.state == .completed, "\(r.record.error ?? "")")
        #expect(r.record.result?.stdout == "a\n")
        #expect(r.record.result?.unenforcedLimits == ["pids": Self.reason])
        let info = try await host.project("p")
        #expect(info.sandbox)
        #expect(info.limits.enforcement["pids"] == "not enforced: \(Self.reason)")
        #expect(info.limits.enforcement["memory"]?.hasPrefix("enforced by /sys/fs/cgroup/memory/") == true)
        #expect(info.limits.requireLimits == false)
        #expect(info.limits.pidsMax == 256)
        await host.shutdown(grace: .seconds(1))
        #expect(try driver.projectNames() == [])
        for directory in driver.directories { rmdir(directory) }
        data.remove()
    }
}
