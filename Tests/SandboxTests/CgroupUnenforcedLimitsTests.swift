import Foundation
import Glibc
import TestSupport
import Testing

@testable import Sandbox

/// "Never silently unlimited": a sandbox whose limits the host cannot all enforce is refused,
/// or, when its configuration allows it, started with what can be enforced and the rest
/// reported. The host's pids controller is hidden from a driver to provoke it (hybrid hosts
/// only: on a unified host the controllers are not separate mounts).
@Suite struct CgroupUnenforcedLimitsTests {
    static let pidsReason = "no cgroup v1 pids hierarchy is mounted"

    /// A driver under a fresh prefix that does not see the pids hierarchy.
    static func driverWithoutPids() throws -> CgroupDriver {
        let mountinfo = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
            .split(separator: "\n").filter { !$0.hasSuffix(",pids") }.joined(separator: "\n")
        let prefix = "corral-tests-\(getpid())-" + UUID().uuidString.prefix(8).lowercased()
        return try CgroupDriver.detect(root: "/sys/fs/cgroup", prefix: prefix, mountinfo: mountinfo)
    }

    static func configuration(_ ws: TemporaryDirectory, driver: CgroupDriver?, require: Bool) -> SandboxConfiguration {
        SandboxConfiguration(
            projectID: "unenforced", workspace: ws.path, rootfs: SandboxFixture.minimalRootfs,
            limits: CgroupLimits(memoryBytes: 64 << 20, pids: 64), cgroups: driver, requireLimits: require)
    }

    @Test(.enabled(if: HostCgroups.hasV1, "hiding a controller needs separate cgroup v1 hierarchies"))
    func aRequiredLimitTheHostCannotEnforceRefusesTheSandboxBeforeAnythingExists() async throws {
        let driver = try Self.driverWithoutPids()
        defer { for directory in driver.directories { rmdir(directory) } }
        let ws = try TemporaryDirectory()
        await #expect(throws: CgroupError.limitNotEnforceable(.pids, reason: Self.pidsReason)) {
            try await ProjectSandbox.create(Self.configuration(ws, driver: driver, require: true))
        }
        #expect(try driver.projectNames() == [])
        ws.remove()
    }

    @Test(.enabled(if: HostCgroups.hasV1, "hiding a controller needs separate cgroup v1 hierarchies"))
    func anUnrequiredLimitIsSkippedReportedAndTheOthersStillHold() async throws {
        let driver = try Self.driverWithoutPids()
        defer { for directory in driver.directories { rmdir(directory) } }
        let ws = try TemporaryDirectory()
        let sandbox = try await ProjectSandbox.create(Self.configuration(ws, driver: driver, require: false))
        #expect(sandbox.unenforcedLimits == [.pids: Self.pidsReason])
        let result = try await sandbox.exec(JobSpec(["/bin/sh", "-c", "echo ran"]))
        #expect(result.stdout == "ran\n")
        #expect(result.unenforcedLimits == ["pids": Self.pidsReason])
        // The memory limit the host can enforce is in place on the jobs' group.
        let memory = try #require(sandbox.jobsCgroup?.directories.first { $0.hasPrefix("/sys/fs/cgroup/memory/") })
        #expect(try String(contentsOfFile: memory + "/memory.limit_in_bytes", encoding: .utf8) == "\(64 << 20)\n")
        await sandbox.destroy()
        #expect(try driver.projectNames() == [])
        ws.remove()
    }

    @Test func withoutAnyCgroupDriverLimitsAreRefusedOrAllReported() async throws {
        let ws = try TemporaryDirectory()
        let reason = "no cgroup hierarchy is usable on this host"
        await #expect(throws: CgroupError.limitNotEnforceable(.memory, reason: reason)) {
            try await ProjectSandbox.create(Self.configuration(ws, driver: nil, require: true))
        }
        let sandbox = try await ProjectSandbox.create(Self.configuration(ws, driver: nil, require: false))
        #expect(sandbox.unenforcedLimits == [.memory: reason, .pids: reason])
        let result = try await sandbox.exec(JobSpec(["/bin/sh", "-c", "echo ran"]))
        #expect(result.stdout == "ran\n")
        #expect(result.unenforcedLimits == ["memory": reason, "pids": reason])
        await sandbox.destroy()
        ws.remove()
    }

    @Test func aSandboxWithEveryLimitEnforcedReportsNone() async throws {
        let ws = try TemporaryDirectory()
        let sandbox = try await ProjectSandbox.create(
            Self.configuration(ws, driver: TestCgroups.driver, require: false))
        #expect(sandbox.unenforcedLimits == [:])
        #expect(try await sandbox.exec(JobSpec(["/bin/true"])).unenforcedLimits == nil)
        await sandbox.destroy()
        ws.remove()
    }
}
