import Foundation
import Sandbox

/// A command an agent asked to run in a project.
public struct JobRequest: Sendable, Codable, Equatable {
    /// The project whose sandbox runs the command.
    public var project: String
    /// The shell command, run as `SHELL -c COMMAND` (``shell``).
    public var command: String
    /// Which shell runs ``command``; `.sh` for a record from before shells could be chosen.
    public var shell: JobShell
    /// Working directory inside the sandbox (absolute: callers resolve a relative one with
    /// ``JobRequest/workingDirectory(_:)``).
    public var cwd: String
    public var environment: [String: String]
    /// Bytes for stdin (UTF-8 text), or nil for /dev/null.
    public var stdin: String?
    /// Wall-clock limit in seconds; the job's policy caps it.
    public var timeoutSeconds: Double
    /// A background job is not expected to finish soon: it runs in the long lane and the
    /// caller does not wait for it.
    public var background: Bool
    /// A retried submit with the same key from the same submitter to the same project
    /// attaches to the same job.
    public var idempotencyKey: String?
    /// Who asked (a token's name), for idempotency, fairness and the audit log.
    public var submitter: String
    /// The most jobs `submitter` may have queued or running at once, across every project
    /// (host-wide, or cluster-wide in a cluster); nil: no cap. Set by the API from the
    /// caller's token, so one token cannot fill the queue every tenant shares.
    public var submitterCap: Int?
    /// Whether output past ``OutputWindow/bytes`` is also written to the job's log in the
    /// workspace (``JobLog``). False for commands that only read for the API (the
    /// compatibility routes' file read and search): a read must not write to the workspace.
    public var writesLog: Bool

    public init(
        project: String, command: String, shell: JobShell = .sh, cwd: String = "/workspace",
        environment: [String: String] = [:], stdin: String? = nil, timeoutSeconds: Double = 120,
        background: Bool = false, idempotencyKey: String? = nil, submitter: String = "local", submitterCap: Int? = nil,
        writesLog: Bool = true
    ) {
        self.submitterCap = submitterCap
        self.writesLog = writesLog
        self.project = project
        self.command = command
        self.shell = shell
        self.cwd = cwd
        self.environment = environment
        self.stdin = stdin
        self.timeoutSeconds = timeoutSeconds
        self.background = background
        self.idempotencyKey = idempotencyKey
        self.submitter = submitter
    }

    /// Journals and cluster queues hold records written before ``shell`` existed: they ran
    /// with `/bin/sh`, and still do.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        project = try container.decode(String.self, forKey: .project)
        command = try container.decode(String.self, forKey: .command)
        shell = try container.decodeIfPresent(JobShell.self, forKey: .shell) ?? .sh
        cwd = try container.decode(String.self, forKey: .cwd)
        environment = try container.decode([String: String].self, forKey: .environment)
        stdin = try container.decodeIfPresent(String.self, forKey: .stdin)
        timeoutSeconds = try container.decode(Double.self, forKey: .timeoutSeconds)
        background = try container.decode(Bool.self, forKey: .background)
        idempotencyKey = try container.decodeIfPresent(String.self, forKey: .idempotencyKey)
        submitter = try container.decode(String.self, forKey: .submitter)
        submitterCap = try container.decodeIfPresent(Int.self, forKey: .submitterCap)
        writesLog = try container.decodeIfPresent(Bool.self, forKey: .writesLog) ?? true
    }

    /// The working directory a caller's `cwd` names: an absolute path as given, a relative
    /// one under `/workspace` (`sub` is `/workspace/sub`, `""` and `.` the workspace). A
    /// `..` is kept, not folded: whether the directory is inside the workspace is for the
    /// spawn to check, on the path as the kernel resolves it (symlinks included), and its
    /// refusal then names the path as given, `/workspace/../..`.
    public static func workingDirectory(_ cwd: String) -> String {
        guard !cwd.hasPrefix("/") else { return cwd }
        let parts = cwd.split(separator: "/").filter { $0 != "." }
        return (["/workspace"] + parts.map(String.init)).joined(separator: "/")
    }
}

/// The shell a job's command runs in.
public enum JobShell: String, Sendable, Codable, Equatable, CaseIterable {
    /// `/bin/sh -c`: dash on `devtools`, busybox ash on `minimal`. The exec and jobs routes'
    /// default.
    case sh
    /// `bash -c` where the project's image has bash, else `/bin/sh -c` (the `minimal`
    /// image is busybox only). The bash tool's: models write bashisms (`[[ ]]`,
    /// `set -o pipefail`).
    case bash
}

/// Where a job is in its life.
public enum JobState: String, Sendable, Codable, Equatable {
    case queued, running, completed
    case timedOut = "timed_out"
    case cancelled
    case failedToStart = "failed_to_start"
    /// The host stopped while the job was queued or running, or the project's sandbox died
    /// under it (``JobRecord/errorCode`` `sandbox_died`); it was not re-run.
    case interrupted

    /// Whether the job can still change.
    public var isFinal: Bool { self != .queued && self != .running }
}

/// Which queue a job waits in. Short work never waits behind long work.
public enum JobLane: String, Sendable, Codable, CaseIterable {
    /// Foreground commands with a timeout up to the short threshold.
    case short
    /// Background jobs and commands with longer timeouts: builds, test suites, servers.
    case long
}

/// What the host knows about a job: its request, its state, and its result once it ends.
public struct JobRecord: Sendable, Codable, Equatable {
    public var id: String
    public var request: JobRequest
    public var lane: JobLane
    public var state: JobState
    public var createdAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// The sandbox result, once the job ended.
    public var result: JobResult?
    /// Why the job could not start or was interrupted, for the model.
    public var error: String?
    /// What ended the job, for programs, when ``error`` says why: `sandbox_died` (the
    /// project's sandbox died while the job ran). Nil otherwise.
    public var errorCode: String?

    /// A record as a queue outside this module keeps it (the cluster's).
    package init(
        id: String, request: JobRequest, lane: JobLane, state: JobState, createdAt: Date, startedAt: Date? = nil,
        finishedAt: Date? = nil, result: JobResult? = nil, error: String? = nil, errorCode: String? = nil
    ) {
        self.errorCode = errorCode
        self.id = id
        self.request = request
        self.lane = lane
        self.state = state
        self.createdAt = createdAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.result = result
        self.error = error
    }
}

/// A view of a job for callers: its record, its place in the queue, and output since a
/// cursor.
public struct JobSnapshot: Sendable, Equatable {
    public var record: JobRecord
    /// 1-based position among queued jobs of its project and lane; nil unless queued.
    public var queuePosition: Int?
    /// Output (stdout and stderr interleaved as produced) since the requested cursor.
    public var output: String
    /// Pass this back as `since` to get only what comes after.
    public var cursor: Int
    /// Output after `since` that this snapshot leaves out, no longer held: before
    /// ``output`` (a host keeps a job's last ``OutputWindow/bytes``), or after it when
    /// ``skippedBytesFollow`` (a cluster keeps a job's first).
    public var skippedBytes: Int
    /// Whether the skipped bytes come after ``output`` rather than before it.
    public var skippedBytesFollow: Bool

    /// A view as a queue outside this module builds it (the cluster's).
    package init(
        record: JobRecord, queuePosition: Int?, output: String, cursor: Int, skippedBytes: Int,
        skippedBytesFollow: Bool = false
    ) {
        self.skippedBytesFollow = skippedBytesFollow
        self.record = record
        self.queuePosition = queuePosition
        self.output = output
        self.cursor = cursor
        self.skippedBytes = skippedBytes
    }

    /// The cursors a caller may pass back (`since`, `Last-Event-ID`): far above any output a
    /// job can write, and far enough below `Int.max` that no sum or difference with a real
    /// offset can overflow.
    public static let cursors: ClosedRange<Int> = 0...(Int.max / 4)
}

/// Why the job system refused a request.
public enum JobError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The queue is full; try again after the hint.
    case overloaded(retryAfterSeconds: Int, scope: String)
    case notFound(String)
    /// The host is shutting down and accepts nothing new.
    case shuttingDown
    case invalidRequest(String)
    /// The submitter already has `limit` jobs queued or running (``JobRequest/submitterCap``).
    case submitterBusy(submitter: String, limit: Int)

    public var description: String {
        switch self {
        case .overloaded(let after, let scope): "\(scope) queue is full; retry after \(after) s"
        case .submitterBusy(let submitter, let limit):
            "token \"\(submitter)\" already has \(limit) jobs queued or running, its most at once; wait for one to end or cancel one"
        case .notFound(let id): "no such job: \(id)"
        case .shuttingDown: "the host is shutting down"
        case .invalidRequest(let why): why
        }
    }
}
