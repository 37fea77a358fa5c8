import Foundation
import Host
import Sandbox
import Synchronization
import TestSupport
import Testing

/// A runner whose jobs end when the test says so, recording the order they started in.
final class FakeRunner: JobRunner, @unchecked Sendable {
    let started = Mutex<[String]>([])
    let executions = Mutex<[String: FakeExecution]>([:])
    var failCommands: Set<String> = []

    func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution {
        if failCommands.contains(request.command) { throw SandboxError.childFailed(stage: "execve", errno: ENOENT) }
        let execution = FakeExecution(onOutput: onOutput)
        started.withLock { $0.append(request.command) }
        executions.withLock { $0[request.command] = execution }
        return execution
    }

    func finish(_ command: String, exitCode: Int32 = 0) {
        executions.withLock { $0[command] }?.end(exitCode: exitCode, status: .completed)
    }

    func startedCommands() -> [String] { started.withLock { $0 } }

    /// Waits until `count` jobs have started.
    func waitStarted(_ count: Int) async throws {
        for _ in 0..<500 where startedCommands().count < count { try await Task.sleep(for: .milliseconds(5)) }
    }
}

@Suite struct JobQueueTests {
    func request(_ project: String, _ command: String, background: Bool = false, key: String? = nil) -> JobRequest {
        JobRequest(project: project, command: command, background: background, idempotencyKey: key)
    }

    @Test func perProjectCapFIFOAndQueuePositions() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(runner: runner, limits: JobLimits(perProject: [.short: 2, .long: 1]))
        var ids: [String] = []
        for i in 0..<5 { ids.append(try await jobs.submit(request("p", "c\(i)")).id) }
        try await runner.waitStarted(2)
        #expect(runner.startedCommands() == ["c0", "c1"])
        #expect(try await jobs.snapshot(ids[2]).queuePosition == 1)
        #expect(try await jobs.snapshot(ids[4]).queuePosition == 3)
        #expect(try await jobs.snapshot(ids[4]).record.state == .queued)
        runner.finish("c1")
        try await runner.waitStarted(3)
        #expect(runner.startedCommands() == ["c0", "c1", "c2"])
        #expect(try await jobs.snapshot(ids[4]).queuePosition == 2)
        for c in ["c0", "c2", "c3", "c4"] {
            runner.finish(c)
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(runner.startedCommands() == ["c0", "c1", "c2", "c3", "c4"])
    }

    @Test func longBuildsNeverBlockShortCommandsOfTheSameProject() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(runner: runner, limits: JobLimits(perProject: [.short: 2, .long: 2]))
        for i in 0..<4 { _ = try await jobs.submit(request("p", "build\(i)", background: true)) }
        try await runner.waitStarted(2)
        let echo = try await jobs.submit(request("p", "echo"))
        try await runner.waitStarted(3)
        #expect(runner.startedCommands().contains("echo"))
        #expect(try await jobs.snapshot(echo.id).record.state == .running)
        #expect(try await jobs.snapshot(echo.id).record.lane == .short)
    }

    @Test func projectsTakeTurns() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(
            runner: runner, limits: JobLimits(slots: [.short: 1, .long: 1], perProject: [.short: 1, .long: 1]))
        for i in 0..<3 { _ = try await jobs.submit(request("a", "a\(i)")) }
        for i in 0..<3 { _ = try await jobs.submit(request("b", "b\(i)")) }
        for expected in 1...6 {
            try await runner.waitStarted(expected)
            runner.finish(runner.startedCommands().last!)
        }
        #expect(runner.startedCommands() == ["a0", "b0", "a1", "b1", "a2", "b2"])
    }

    @Test func fullQueuesRefuseWithARetryHint() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(
            runner: runner,
            limits: JobLimits(slots: [.short: 1, .long: 1], maxQueued: 3, maxQueuedPerProject: 2))
        _ = try await jobs.submit(request("p", "running"))
        try await runner.waitStarted(1)
        _ = try await jobs.submit(request("p", "q1"))
        _ = try await jobs.submit(request("p", "q2"))
        await #expect(throws: JobError.overloaded(retryAfterSeconds: 2, scope: "project p")) {
            try await jobs.submit(request("p", "q3"))
        }
        _ = try await jobs.submit(request("other", "o1"))
        await #expect(throws: JobError.overloaded(retryAfterSeconds: 5, scope: "host")) {
            try await jobs.submit(request("third", "t1"))
        }
        #expect(await jobs.depth().queued == 3)
    }

    @Test func idempotentResubmitAttachesToTheSameJob() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(runner: runner)
        let first = try await jobs.submit(request("p", "make", key: "k1"))
        let again = try await jobs.submit(request("p", "make", key: "k1"))
        let other = try await jobs.submit(request("p", "make", key: "k2"))
        #expect(first.id == again.id)
        #expect(first.id != other.id)
        try await runner.waitStarted(2)
        #expect(runner.startedCommands() == ["make", "make"])
    }

    @Test func cancelOfAQueuedJobMeansItNeverRuns() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(runner: runner, limits: JobLimits(perProject: [.short: 1, .long: 1]))
        _ = try await jobs.submit(request("p", "first"))
        let second = try await jobs.submit(request("p", "second"))
        let snap = try await jobs.cancel(second.id)
        #expect(snap.record.state == .cancelled)
        runner.finish("first")
        try await Task.sleep(for: .milliseconds(50))
        #expect(runner.startedCommands() == ["first"])
    }

    @Test func aJobThatCannotStartIsFailedToStart() async throws {
        let runner = FakeRunner()
        runner.failCommands = ["nope"]
        let jobs = try JobSystem(runner: runner)
        let snap = try await jobs.run(request("p", "nope"), budget: .seconds(5))
        #expect(snap.record.state == .failedToStart)
        #expect(snap.record.error == "execve: ENOENT")
    }

    @Test func restartMarksUnfinishedJobsInterruptedAndKeepsFinishedOnes() async throws {
        let dir = try TemporaryDirectory()
        let path = dir.path + "/jobs.sqlite"
        let runner = FakeRunner()
        var ids: [String] = []
        do {
            let jobs = try JobSystem(
                runner: runner, limits: JobLimits(perProject: [.short: 1, .long: 1]), journalPath: path)
            ids.append(try await jobs.submit(request("p", "done")).id)
            try await runner.waitStarted(1)
            runner.finish("done", exitCode: 3)
            _ = try await jobs.wait(ids[0], timeout: .seconds(5), untilFinished: true)
            ids.append(try await jobs.submit(request("p", "running")).id)
            ids.append(try await jobs.submit(request("p", "queued")).id)
            try await runner.waitStarted(2)
            // The host "dies" here: no shutdown, the system is simply dropped.
        }
        let restarted = try JobSystem(runner: FakeRunner(), journalPath: path)
        let done = try await restarted.snapshot(ids[0]).record
        #expect(done.state == .completed)
        #expect(done.result?.exitCode == 3)
        for id in ids.dropFirst() {
            let record = try await restarted.snapshot(id).record
            #expect(record.state == .interrupted)
            #expect(record.error?.hasSuffix("it was not re-run") == true)
        }
        #expect(try await restarted.list(project: "p").count == 3)
    }

    @Test func shutdownLetsRunningJobsFinishThenCancelsAndInterruptsTheRest() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(runner: runner, limits: JobLimits(perProject: [.short: 2, .long: 1]))
        let quick = try await jobs.submit(request("p", "quick"))
        let slow = try await jobs.submit(request("p", "slow"))
        let waiting = try await jobs.submit(request("p", "waiting"))
        try await runner.waitStarted(2)
        Task {
            try await Task.sleep(for: .milliseconds(50))
            runner.finish("quick")
        }
        let start = ContinuousClock.now
        await jobs.shutdown(grace: .milliseconds(300))
        #expect(ContinuousClock.now - start < .seconds(2))
        #expect(try await jobs.snapshot(quick.id).record.state == .completed)
        #expect(try await jobs.snapshot(slow.id).record.state == .cancelled)
        #expect(try await jobs.snapshot(waiting.id).record.state == .interrupted)
        await #expect(throws: JobError.shuttingDown) { try await jobs.submit(request("p", "late")) }
    }

    @Test func longPollReturnsOnNewOutputWithACursor() async throws {
        let runner = FakeRunner()
        let jobs = try JobSystem(runner: runner)
        let job = try await jobs.submit(request("p", "chatty", background: true))
        try await runner.waitStarted(1)
        let execution = runner.executions.withLock { $0["chatty"] }!
        Task {
            try await Task.sleep(for: .milliseconds(50))
            execution.onOutput(.stdout, Array("one\n".utf8))
        }
        let first = try await jobs.wait(job.id, timeout: .seconds(5), since: 0)
        #expect(first.output == "one\n")
        #expect(first.cursor == 4)
        execution.onOutput(.stdout, Array("two\n".utf8))
        let second = try await jobs.wait(job.id, timeout: .seconds(5), since: first.cursor)
        #expect(second.output == "two\n")
        let idle = try await jobs.wait(job.id, timeout: .milliseconds(100), since: second.cursor)
        #expect(idle.output == "")
        #expect(idle.record.state == .running)
    }
}

/// The submit rules every job service shares, and the pre-check a host or a cluster puts in
/// front of its queue.
@Suite struct SubmitRulesTests {
    @Test func aRetriedKeyReturnsItsJobEvenAtTheCapAndANewJobAtTheCapIsRefused() throws {
        let capped = JobRequest(project: "p", command: "true", submitter: "agent", submitterCap: 2)
        let first = JobRecord(id: "j1", request: capped, lane: .short, state: .running, createdAt: Date())
        #expect(try SubmitRules.admit(capped, existing: first, active: 2) == first)
        #expect(try SubmitRules.admit(capped, existing: nil, active: 1) == nil)
        #expect(throws: JobError.submitterBusy(submitter: "agent", limit: 2)) {
            try SubmitRules.admit(capped, existing: nil, active: 2)
        }
        #expect(throws: JobError.invalidRequest("command is empty")) {
            try SubmitRules.validate(JobRequest(project: "p", command: ""))
        }
        #expect(throws: JobError.invalidRequest("timeout must be positive")) {
            try SubmitRules.validate(JobRequest(project: "p", command: "true", timeoutSeconds: 0))
        }
    }

    @Test func aCheckedServiceRefusesBeforeTheQueueSeesTheJob() async throws {
        let jobs = try JobSystem(runner: FakeRunner())
        let checked = CheckedJobService(jobs) { request in
            if request.project == "unknown" { throw HostError.projectNotFound(request.project) }
        }
        await #expect(throws: HostError.projectNotFound("unknown")) {
            try await checked.submit(JobRequest(project: "unknown", command: "true"))
        }
        await #expect(throws: HostError.projectNotFound("unknown")) {
            try await checked.run(JobRequest(project: "unknown", command: "true"), budget: .seconds(1))
        }
        #expect(try await jobs.list(project: "unknown").isEmpty)
        let record = try await checked.submit(JobRequest(project: "p", command: "true"))
        #expect(try await checked.snapshot(record.id).record.id == record.id)
    }
}
