import Sandbox

/// A started job: wait for its result or stop it.
public protocol JobExecution: Sendable {
    func wait() async -> JobResult
    /// Stops the job's whole tree: TERM, then KILL after the grace.
    @discardableResult func cancel() async -> JobResult
    /// Stops the job's whole tree with `signal` first, then KILL after the grace (at once
    /// for `.kill`).
    @discardableResult func cancel(signal: JobSignal) async -> JobResult
}

extension JobExecution {
    /// For executions that can only stop a job one way (test fakes, remote ones): the
    /// signal is not theirs to choose.
    @discardableResult public func cancel(signal: JobSignal) async -> JobResult { await cancel() }
}

extension RunningJob: JobExecution {}

/// Starts jobs. The real one enters the project's sandbox; tests of the queue use fakes.
public protocol JobRunner: Sendable {
    /// Starts `request`; `onOutput` receives output as it is produced. Throws when the job
    /// cannot start (the project's sandbox cannot be had, the command cannot be exec'd).
    func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution
}

/// Runs jobs in project sandboxes.
public struct SandboxJobRunner: JobRunner {
    /// The project's running sandbox (materialized and created on demand).
    public let sandbox: @Sendable (String) async throws -> ProjectSandbox
    /// The sandbox job for a request: the policy's seccomp, identity, caps and output cap.
    public let spec: @Sendable (JobRequest) throws -> JobSpec

    public init(
        sandbox: @escaping @Sendable (String) async throws -> ProjectSandbox,
        spec: @escaping @Sendable (JobRequest) throws -> JobSpec
    ) {
        self.sandbox = sandbox
        self.spec = spec
    }

    public func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution {
        var job = try spec(request)
        job.onOutput = onOutput
        if request.writesLog { job.logPath = job.logPath ?? JobLog.path(jobID) }
        job.logThreshold = min(job.logThreshold, OutputWindow.bytes)
        return try await sandbox(request.project).start(job)
    }

    /// The job a request becomes under the default policy: `/bin/sh -c`, the default
    /// seccomp profile, uid 1000, no capabilities.
    public static func defaultSpec(_ request: JobRequest) throws -> JobSpec {
        JobSpec(
            ["/bin/sh", "-c", request.command],
            environment: request.environment,
            cwd: request.cwd,
            stdin: request.stdin.map { Array($0.utf8) },
            timeout: .milliseconds(Int(request.timeoutSeconds * 1000)),
            seccomp: try SeccompProfile.corralDefault.compile().instructions
        )
    }
}
