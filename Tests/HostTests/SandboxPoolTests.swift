import Foundation
import Logging
import Sandbox
import TestSupport
import Testing

@testable import Host

/// The pool's side of a sandbox's death: reported when it happens (a warning and a count),
/// not when the project's next call finds the init gone, and the next call gets a fresh one.
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for sandboxes"))
struct SandboxPoolTests {
    @Test func aSandboxWhoseInitIsKilledIsReportedAtOnceAndReplacedOnTheNextCall() async throws {
        let (logger, logs) = CapturingLogHandler.logger()
        let pool = SandboxPool(logger: logger)
        let directory = try TemporaryDirectory(prefix: "corral-pool")
        let workspace = Workspace(project: "p", path: directory.path, sourceVersion: "v1", materializedAt: Date())
        let configure: @Sendable (Workspace) -> SandboxConfiguration = {
            SandboxConfiguration(
                projectID: "pool-death", workspace: $0.path, rootfs: TestPaths.minimalRootfs,
                cgroups: TestCgroups.driver)
        }
        let first = try await pool.sandbox("p", workspace: workspace, policyDigest: "d", configure: configure)
        kill(first.initPID, SIGKILL)
        _ = await first.waitForInitExit()
        // The pool counts the death on a task of its own, right after the init is reaped.
        let deadline = ContinuousClock.now + .seconds(5)
        while await pool.deaths == 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        #expect(await pool.deaths == 1)
        let warnings = logs.all.filter { $0.level == .warning }
        #expect(warnings.count == 1)
        #expect(
            warnings.first?.message
                == "the sandbox of p died: its init process was killed, and every job and session in it with it; the next call starts a fresh sandbox"
        )
        #expect(warnings.first?.metadata == ["project": "p", "init_pid": "\(first.initPID)"])

        let second = try await pool.sandbox("p", workspace: workspace, policyDigest: "d", configure: configure)
        #expect(second !== first)
        #expect(second.isAlive)
        #expect(try await second.exec(JobSpec(["/bin/sh", "-c", "echo fresh"])).stdout == "fresh\n")
        let replaced = logs.all.filter { $0.message == "replacing the sandbox of p" }
        #expect(replaced.map(\.metadata) == [["project": "p", "reason": "dead"]])
        // A sandbox the host destroys is no death.
        await pool.destroyAll()
        #expect(await second.waitForInitExit() == false)
        try await Task.sleep(for: .milliseconds(100))
        #expect(await pool.deaths == 1)
        #expect(logs.all.filter { $0.level == .warning }.count == 1)
        directory.remove()
    }
}
