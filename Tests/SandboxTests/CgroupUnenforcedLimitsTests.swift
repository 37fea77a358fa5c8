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
        var configuration = SandboxConfiguration(
            projectID: "unenforced", workspace: ws.path, rootfs: SandboxFixture.minimalRootfs)
        limits(driver: driver, require: require)(&configuration)
        return configuration
    }

    /// The memory and pids limits, `driver` and `require` on a sandbox's configuration.
    static func limits(driver: CgroupDriver?, require: Bool) -> (inout SandboxConfiguration) -> Void {
        {
            $0.limits = CgroupLimits(memoryBytes: 64 << 20, pids: 64)
            $0.cgroups = driver
            $0.requireLimits = require
        }
    }

    @Test(.enabled(if: HostCgroups.hasV1, "hiding a controller needs separate cgroup v1 hierarchies"))
    func aRequiredLimitTheHostCannotEnforceRefusesTheSandboxBeforeAnythingExists() async throws {
        let driver = try Self.driverWithoutPids()
        defer { driver.removePrefix() }
        let ws = try TemporaryDirectory()
        defer { ws.remove() }
        await #expect(throws: CgroupError.limitNotEnforceable(.pids, reason: Self.pidsReason)) {
            try await ProjectSandbox.create(Self.configuration(ws, driver: driver, require: true))
        }
        #expect(try driver.projectNames() == [])
    }

    @Test(.enabled(if: HostCgroups.hasV1, "hiding a controller needs separate cgroup v1 hierarchies"))
    func anUnrequiredLimitIsSkippedReportedAndTheOthersStillHold() async throws {
        let driver = try Self.driverWithoutPids()
        defer { driver.removePrefix() }
        try await SandboxFixture.with(id: "unenforced", configure: Self.limits(driver: driver, require: false)) { f in
            #expect(f.sandbox.unenforcedLimits == [.pids: Self.pidsReason])
            let result = try await f.sandbox.exec(JobSpec(["/bin/sh", "-c", "echo ran"]))
            #expect(result.stdout == "ran\n")
            #expect(result.unenforcedLimits == ["pids": Self.pidsReason])
            // The memory limit the host can enforce is in place on the jobs' group.
            let memory = try #require(
                f.sandbox.jobsCgroup?.directories.first { $0.hasPrefix("/sys/fs/cgroup/memory/") })
            #expect(
                try String(contentsOfFile: memory + "/memory.limit_in_bytes", encoding: .utf8) == "\(64 << 20)\n")
        }
        #expect(try driver.projectNames() == [])
    }

    @Test func withoutAnyCgroupDriverLimitsAreRefusedOrAllReported() async throws {
        let ws = try TemporaryDirectory()
        defer { ws.remove() }
        let reason = "no cgroup hierarchy is usable on this host"
        await #expect(throws: CgroupError.limitNotEnforceable(.memory, reason: reason)) {
            try await ProjectSandbox.create(Self.configuration(ws, driver: nil, require: true))
        }
        try await SandboxFixture.with(id: "unenforced", configure: Self.limits(driver: nil, require: false)) { f in
            #expect(f.sandbox.unenforcedLimits == [.memory: reason, .pids: reason])
            let result = try await f.sandbox.exec(JobSpec(["/bin/sh", "-c", "echo ran"]))
            #expect(result.stdout == "ran\n")
            #expect(result.unenforcedLimits == ["memory": reason, "pids": reason])
        }
    }

    @Test func aSandboxWithEveryLimitEnforcedReportsNone() async throws {
        let limits = Self.limits(driver: TestCgroups.driver, require: false)
        try await SandboxFixture.with(id: "unenforced", configure: limits) { f in
            #expect(f.sandbox.unenforcedLimits == [:])
            let result = try await f.sandbox.exec(JobSpec(["/bin/true"]))
            #expect(result.unenforcedLimits == nil)
        }
    }
}
