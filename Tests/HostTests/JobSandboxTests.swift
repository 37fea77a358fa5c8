import Foundation
import Host
import Sandbox
import TestSupport
import Testing

/// Sandboxes per project over temporary workspaces, created on first use.
actor TestSandboxes {
    var sandboxes: [String: Task<ProjectSandbox, any Error>] = [:]
    var workspaces: [TemporaryDirectory] = []

    static var rootfs: String { TestPaths.minimalRootfs }

    /// Single flight: concurrent first calls for a project share one creation.
    func sandbox(_ project: String) async throws -> ProjectSandbox {
        if let s = sandboxes[project] { return try await s.value }
        let ws = try TemporaryDirectory(prefix: "corral-jobs")
        workspaces.append(ws)
        let task = Task {
            try await ProjectSandbox.create(
                SandboxConfiguration(
                    projectID: project, workspace: ws.path, rootfs: Self.rootfs, cgroups: TestCgroups.driver))
        }
        sandboxes[project] = task
        return try await task.value
    }

    func destroyAll() async {
        for s in sandboxes.values { try? await s.value.destroy() }
        sandboxes = [:]
        workspaces.forEach { $0.remove() }
    }
}

@Suite struct JobSandboxTests {
    func system(_ boxes: TestSandboxes) throws -> JobSystem {
        try JobSystem(
            runner: SandboxJobRunner(sandbox: { try await boxes.sandbox($0) }, spec: SandboxJobRunner.defaultSpec))
    }

    @Test func synchronousExecReturnsTheResult() async throws {
        let boxes = TestSandboxes()
        let jobs = try system(boxes)
        let snap = try await jobs.run(JobRequest(project: "sync", command: "echo hi; exit 4"), budget: .seconds(10))
        #expect(snap.record.state == .completed)
        #expect(snap.record.result?.exitCode == 4)
        #expect(snap.record.result?.stdout == "hi\n")
        #expect(snap.output == "hi\n")
        await boxes.destroyAll()
    }

    @Test func aJobPastTheWaitBudgetKeepsRunningAndFinishes() async throws {
        let boxes = TestSandboxes()
        let jobs = try system(boxes)
        let snap = try await jobs.run(
            JobRequest(project: "budget", command: "echo begun; sleep 1; echo done"), budget: .milliseconds(300))
        #expect(snap.record.state == .running)
        #expect(snap.output == "begun\n")
        let end = try await jobs.wait(snap.record.id, timeout: .seconds(10), untilFinished: true)
        #expect(end.record.state == .completed)
        #expect(end.record.result?.stdout == "begun\ndone\n")
        await boxes.destroyAll()
    }

    @Test func cancelKillsTheTreeAndTellsTheWaiter() async throws {
        let boxes = TestSandboxes()
        let jobs = try system(boxes)
        let job = try await jobs.submit(
            JobRequest(project: "cancel", command: "sleep 60 & sleep 60 & echo started; wait", background: true))
        _ = try await jobs.wait(job.id, timeout: .seconds(5), since: 0)
        async let waiter = jobs.wait(job.id, timeout: .seconds(30), untilFinished: true)
        let cancelled = try await jobs.cancel(job.id)
        #expect(cancelled.record.state == .cancelled)
        #expect(try await waiter.record.state == .cancelled)
        // Both background sleeps went with the job's tree.
        let ps = try await jobs.run(
            JobRequest(project: "cancel", command: "ps -o comm | grep -c sleep"), budget: .seconds(10))
        #expect(ps.record.result?.stdout == "0\n")
        await boxes.destroyAll()
    }

    @Test func shortCommandsCompleteWhileFourCPUBoundBuildsRun() async throws {
        let boxes = TestSandboxes()
        let jobs = try system(boxes)
        var builds: [String] = []
        for _ in 0..<4 {
            builds.append(
                try await jobs.submit(
                    JobRequest(project: "busy", command: "while :; do :; done", timeoutSeconds: 60, background: true)
                ).id)
        }
        try await Task.sleep(for: .milliseconds(200))
        let latencies = try await withThrowingTaskGroup(of: (Double, JobSnapshot).self) { group in
            for i in 0..<100 {
                group.addTask {
                    let start = ContinuousClock.now
                    let snap = try await jobs.run(
                        JobRequest(project: i % 2 == 0 ? "busy" : "quiet", command: "echo \(i)"), budget: .seconds(60))
                    return (Double((ContinuousClock.now - start) / .microseconds(1)) / 1000, snap)
                }
            }
            return try await group.reduce(into: [Double]()) { all, item in
                #expect(item.1.record.state == .completed, "\(item.1.record.error ?? "")")
                all.append(item.0)
            }
        }
        #expect(latencies.count == 100)
        for id in builds { #expect(try await jobs.snapshot(id).record.state == .running) }
        let sorted = latencies.sorted()
        print("echo under 4 CPU-bound builds: p50 \(sorted[49]) ms, p99 \(sorted[98]) ms")
        for id in builds { _ = try await jobs.cancel(id) }
        await boxes.destroyAll()
    }
}
