import Sandbox

/// Jobs as the API sees them, wherever they run: ``JobSystem`` queues them on this host,
/// a cluster's job client queues them on the project's owner host. The HTTP
/// routes, the tool gateway and MCP use only this.
public protocol JobService: Sendable {
    /// Queues a job and returns its record at once. A retried submit with the same
    /// idempotency key from the same submitter to the same project returns the first job;
    /// see ``SubmitRules`` for what every service refuses.
    func submit(_ request: JobRequest) async throws -> JobRecord
    /// Submits and waits up to `budget`; if the budget runs out first the snapshot says
    /// `queued` or `running` and the job goes on.
    func run(_ request: JobRequest, budget: Duration) async throws -> JobSnapshot
    /// Long-poll: returns when the job has output after `since`, ends, or `timeout` passes.
    /// With `untilFinished`, only the end (or the timeout) returns.
    func wait(_ id: String, timeout: Duration, since: Int, untilFinished: Bool) async throws -> JobSnapshot
    /// The job as it is now, with output since `since`.
    func snapshot(_ id: String, since: Int) async throws -> JobSnapshot
    /// Stops a job: a queued one never starts, a running one gets `signal` on its whole
    /// tree and SIGKILL after the grace. Returns once it has ended.
    func cancel(_ id: String, signal: JobSignal) async throws -> JobSnapshot
    /// Recent and running jobs of a project, newest first.
    func list(project: String, limit: Int) async throws -> [JobRecord]
    /// Jobs waiting and running.
    func depth() async throws -> (queued: Int, running: Int)
}

extension JobService {
    /// The job with all its output held.
    public func snapshot(_ id: String) async throws -> JobSnapshot { try await snapshot(id, since: 0) }

    /// Cancels with TERM, then KILL after the grace.
    public func cancel(_ id: String) async throws -> JobSnapshot { try await cancel(id, signal: .term) }
}

/// What every ``JobService`` refuses or folds on submit, in one place; each service applies
/// these where its queue's state is (the job system's actor, the cluster's submit script).
public enum SubmitRules {
    /// Refuses a request no queue would run: an empty command, a timeout that is not positive.
    public static func validate(_ request: JobRequest) throws(JobError) {
        guard !request.command.isEmpty else { throw .invalidRequest("command is empty") }
        guard request.timeoutSeconds > 0 else { throw .invalidRequest("timeout must be positive") }
    }

    /// Admission once the queue has looked up what it holds for the submitter: a retry of an
    /// idempotency key returns the job it first made (even at the cap, so a retried submit
    /// never fails for the job it made itself); otherwise a submitter with `active` jobs at
    /// its ``JobRequest/submitterCap`` is refused. Nil: queue a new job.
    public static func admit(_ request: JobRequest, existing: JobRecord?, active: Int) throws(JobError) -> JobRecord? {
        if let existing { return existing }
        if let cap = request.submitterCap, active >= cap { throw busy(request) }
        return nil
    }

    /// The refusal of a submitter at its cap.
    public static func busy(_ request: JobRequest) -> JobError {
        .submitterBusy(submitter: request.submitter, limit: request.submitterCap ?? 0)
    }
}

/// A job service that first refuses what `check` refuses (a timeout above the project
/// policy's maximum; a project the cluster does not know) and hands everything to `base`
/// as it is.
public struct CheckedJobService: JobService {
    public let base: any JobService
    let check: @Sendable (JobRequest) async throws -> Void

    /// `check` runs before every submit (and so every run); it throws to refuse.
    public init(_ base: any JobService, check: @escaping @Sendable (JobRequest) async throws -> Void) {
        self.base = base
        self.check = check
    }

    public func submit(_ request: JobRequest) async throws -> JobRecord {
        try await check(request)
        return try await base.submit(request)
    }

    public func run(_ request: JobRequest, budget: Duration) async throws -> JobSnapshot {
        try await check(request)
        return try await base.run(request, budget: budget)
    }

    public func wait(_ id: String, timeout: Duration, since: Int, untilFinished: Bool) async throws -> JobSnapshot {
        try await base.wait(id, timeout: timeout, since: since, untilFinished: untilFinished)
    }

    public func snapshot(_ id: String, since: Int) async throws -> JobSnapshot {
        try await base.snapshot(id, since: since)
    }

    public func cancel(_ id: String, signal: JobSignal) async throws -> JobSnapshot {
        try await base.cancel(id, signal: signal)
    }

    public func list(project: String, limit: Int) async throws -> [JobRecord] {
        try await base.list(project: project, limit: limit)
    }

    public func depth() async throws -> (queued: Int, running: Int) { try await base.depth() }
}
