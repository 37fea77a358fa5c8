import Foundation
import Logging
import Sandbox

/// How many jobs run and wait, per lane and per project.
public struct JobLimits: Sendable {
    /// Jobs running at once, host-wide, per lane.
    public var slots: [JobLane: Int]
    /// Jobs running at once in one project, per lane.
    public var perProject: [JobLane: Int]
    /// Jobs waiting, host-wide and per project, before submits are refused.
    public var maxQueued: Int
    public var maxQueuedPerProject: Int
    /// Foreground commands with a timeout up to this go to the short lane.
    public var shortThresholdSeconds: Double

    public init(
        slots: [JobLane: Int]? = nil, perProject: [JobLane: Int] = [.short: 4, .long: 4], maxQueued: Int = 1000,
        maxQueuedPerProject: Int = 100, shortThresholdSeconds: Double = 300
    ) {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        // Jobs mostly wait on processes; CPU is bounded by each project's cgroup, so slots
        // can exceed cores. The short lane gets more: its jobs are quick.
        self.slots = slots ?? [.short: max(16, 8 * cores), .long: max(8, 4 * cores)]
        self.perProject = perProject
        self.maxQueued = maxQueued
        self.maxQueuedPerProject = maxQueuedPerProject
        self.shortThresholdSeconds = shortThresholdSeconds
    }
}

/// The queue, the workers and the results: commands become jobs, jobs run in lanes so long
/// builds never hold up short calls, and callers wait without polling.
public actor JobSystem: JobService {
    let runner: any JobRunner
    let limits: JobLimits
    let journal: JobJournal?
    let logger: Logger
    var entries: [String: Entry] = [:]
    var queues: [JobLane: [String: [String]]] = [.short: [:], .long: [:]]
    var rotation: [JobLane: [String]] = [.short: [], .long: []]
    var running: [JobLane: [String: Int]] = [.short: [:], .long: [:]]
    var accepting = true
    var sequence = 0
    /// When each project last had a job started, for fairness.
    var lastServed: [String: Int] = [:]
    var serveCounter = 0
    /// Jobs queued or running per submitter, for ``JobRequest/submitterCap``.
    var active: [String: Int] = [:]

    final class Entry {
        var record: JobRecord
        let channel = JobChannel()
        var execution: (any JobExecution)?
        /// A cancel that came while the job was starting, applied once it has started.
        var cancelSignal: JobSignal?
        init(_ record: JobRecord) { self.record = record }
    }

    /// `journalPath` nil keeps records in memory only (tests of the queue itself).
    public init(runner: any JobRunner, limits: JobLimits = JobLimits(), journalPath: String? = nil) throws {
        self.runner = runner
        self.limits = limits
        self.logger = Logger(label: "corral.jobs")
        if let journalPath {
            let journal = try JobJournal(path: journalPath)
            let interrupted = try journal.recover(now: Date())
            if interrupted > 0 { Logger(label: "corral.jobs").warning("marked \(interrupted) jobs interrupted") }
            self.journal = journal
        } else {
            self.journal = nil
        }
    }

    // MARK: - Submitting and waiting

    /// Queues a job and returns its record at once. A retried submit with the same
    /// idempotency key from the same submitter to the same project returns the first job.
    public func submit(_ request: JobRequest) throws -> JobRecord {
        guard accepting else { throw JobError.shuttingDown }
        try SubmitRules.validate(request)
        let existing = try request.idempotencyKey.flatMap {
            try findIdempotent(request.submitter, project: request.project, $0)
        }
        let activeJobs = active[request.submitter, default: 0]
        if let existing = try SubmitRules.admit(request, existing: existing, active: activeJobs) { return existing }
        let lane: JobLane =
            request.background || request.timeoutSeconds > limits.shortThresholdSeconds ? .long : .short
        let queuedTotal = queues.values.reduce(0) { $0 + $1.values.reduce(0) { $0 + $1.count } }
        guard queuedTotal < limits.maxQueued else { throw JobError.overloaded(retryAfterSeconds: 5, scope: "host") }
        let queuedHere = JobLane.allCases.reduce(0) { $0 + (queues[$1]?[request.project]?.count ?? 0) }
        guard queuedHere < limits.maxQueuedPerProject else {
            throw JobError.overloaded(retryAfterSeconds: 2, scope: "project \(request.project)")
        }
        sequence += 1
        let id =
            "j" + String(UInt64(Date().timeIntervalSince1970 * 1000), radix: 36) + "-" + String(sequence, radix: 36)
        let record = JobRecord(id: id, request: request, lane: lane, state: .queued, createdAt: Date())
        entries[id] = Entry(record)
        try journal?.save(record)
        active[request.submitter, default: 0] += 1
        queues[lane, default: [:]][request.project, default: []].append(id)
        if !(rotation[lane]?.contains(request.project) ?? false) { rotation[lane, default: []].append(request.project) }
        dispatch()
        return record
    }

    /// Submits and waits up to `budget` for the result: the synchronous face of the queue.
    /// If the budget runs out first, the snapshot says `running` (or `queued`) and the job
    /// goes on.
    public func run(_ request: JobRequest, budget: Duration) async throws -> JobSnapshot {
        let record = try submit(request)
        return try await wait(record.id, timeout: budget, since: 0, untilFinished: true)
    }

    /// Long-poll: returns when the job has new output after `since`, ends, or `timeout`
    /// passes. With `untilFinished`, only the end (or the timeout) returns.
    public func wait(_ id: String, timeout: Duration, since: Int = 0, untilFinished: Bool = false) async throws
        -> JobSnapshot
    {
        let deadline = ContinuousClock.now + timeout
        while true {
            let snap = try snapshot(id, since: since)
            let remaining = deadline - ContinuousClock.now
            let changed = !untilFinished && snap.cursor > since
            if snap.record.state.isFinal || changed || remaining <= .zero { return snap }
            guard let channel = entries[id]?.channel else { return snap }
            let seen = channel.version
            if try snapshot(id, since: since) != snap { continue }
            await channel.wait(after: seen, timeout: remaining)
        }
    }

    /// The job as it is now, with output since `since`.
    public func snapshot(_ id: String, since: Int = 0) throws -> JobSnapshot {
        if let entry = entries[id] {
            let (text, cursor, skipped) = entry.channel.read(since: since)
            return JobSnapshot(
                record: entry.record, queuePosition: position(of: entry.record), output: text, cursor: cursor,
                skippedBytes: skipped)
        }
        if let record = try journal?.load(id) {
            // Only the result's streams are left, one after the other: the last window of
            // them, as the channel would hold.
            let text = Array((record.result.map { $0.stdout + $0.stderr } ?? "").utf8)
            let from = min(max(since, text.count - OutputWindow.bytes, 0), text.count)
            return JobSnapshot(
                record: record, queuePosition: nil, output: String(decoding: text[from...], as: UTF8.self),
                cursor: text.count, skippedBytes: max(0, from - since))
        }
        throw JobError.notFound(id)
    }

    /// Stops a job: a queued one never starts, a running one gets `signal` on its whole tree
    /// and SIGKILL after the grace (at once for `.kill`). Returns once it has ended.
    public func cancel(_ id: String, signal: JobSignal = .term) async throws -> JobSnapshot {
        guard let entry = entries[id] else { throw JobError.notFound(id) }
        switch entry.record.state {
        case .queued:
            remove(from: entry.record)
            finish(entry, state: .cancelled, result: nil, error: "cancelled before it started")
        case .running:
            entry.cancelSignal = signal
            if let execution = entry.execution { await execution.cancel(signal: signal) }
        default:
            break
        }
        return try await wait(id, timeout: .seconds(30), untilFinished: true)
    }

    /// Recent and running jobs of a project, newest first.
    public func list(project: String, limit: Int = 50) throws -> [JobRecord] {
        var records = entries.values.map(\.record).filter { $0.request.project == project }
        if let journal {
            let known = Set(records.map(\.id))
            records += try journal.recent(project: project, limit: limit).filter { !known.contains($0.id) }
        }
        return Array(records.sorted { $0.createdAt > $1.createdAt }.prefix(limit))
    }

    /// Jobs waiting and running, per lane.
    public func depth() -> (queued: Int, running: Int) {
        (
            queues.values.reduce(0) { $0 + $1.values.reduce(0) { $0 + $1.count } },
            running.values.reduce(0) { $0 + $1.values.reduce(0, +) }
        )
    }

    // MARK: - Shutdown

    /// Stops accepting, lets running jobs finish for up to `grace`, then cancels what is
    /// left; queued jobs are recorded as interrupted, never run later.
    public func shutdown(grace: Duration) async {
        accepting = false
        for entry in entries.values where entry.record.state == .queued {
            remove(from: entry.record)
            finish(entry, state: .interrupted, result: nil, error: "the host shut down before this job started")
        }
        let deadline = ContinuousClock.now + grace
        for entry in entries.values where entry.record.state == .running {
            let remaining = deadline - ContinuousClock.now
            if remaining > .zero { await entry.channel.waitClosed(timeout: remaining) }
        }
        let left = entries.values.filter { $0.record.state == .running }
        for entry in left {
            entry.cancelSignal = .term
            if let execution = entry.execution { await execution.cancel() }
        }
        // The cancelled jobs' records become final on their own tasks; wait for that so the
        // journal says `cancelled` before the host exits.
        for entry in left { await entry.channel.waitClosed(timeout: .seconds(10)) }
    }
}
