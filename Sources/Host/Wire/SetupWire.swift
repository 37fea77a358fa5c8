import Foundation

// MARK: - A project's setup (docs/ENVIRONMENTS.md, "Setup")

/// A project's setup as `GET /v1/projects/{id}` reports it (`setup`): its commands, and how
/// their last run for the current files went.
public struct SetupInfo: Sendable, Codable, Equatable {
    public enum Status: String, Sendable, Codable {
        /// The project has no setup commands.
        case none
        /// They have not run on the current files and commands: they run on the next
        /// materialization, job, session or warm-up.
        case pending
        case running
        case succeeded
        /// Jobs are refused (`409 setup_failed`) until the commands or the files change, or
        /// setup runs again.
        case failed
    }

    public var status: Status
    public var commands: [String]
    /// The ``SetupKey`` of the current files and commands; nil until the project has been
    /// materialized.
    public var key: String?
    public var startedAt: Date?
    public var durationMs: Int?
    public var exitCode: Int32?
    /// 1-based: the command that failed.
    public var failedCommand: Int?
    public var error: String?
    /// The end (4 KiB) of what the commands printed; while they run, so far.
    public var outputTail: String?

    public init(
        status: Status, commands: [String] = [], key: String? = nil, startedAt: Date? = nil, durationMs: Int? = nil,
        exitCode: Int32? = nil, failedCommand: Int? = nil, error: String? = nil, outputTail: String? = nil
    ) {
        self.status = status
        self.commands = commands
        self.key = key
        self.startedAt = startedAt
        self.durationMs = durationMs
        self.exitCode = exitCode
        self.failedCommand = failedCommand
        self.error = error
        self.outputTail = outputTail
    }

    /// A finished run's record, for `commands`.
    init(_ record: SetupRecord, commands: [String]) {
        self.init(
            status: record.status == .succeeded ? .succeeded : record.status == .failed ? .failed : .running,
            commands: commands, key: record.key, startedAt: record.startedAt, durationMs: record.durationMs,
            exitCode: record.exitCode, failedCommand: record.failedCommand, error: record.error,
            outputTail: record.outputTail)
    }

    enum CodingKeys: String, CodingKey {
        case status, commands, key, error
        case startedAt = "started_at"
        case durationMs = "duration_ms"
        case exitCode = "exit_code"
        case failedCommand = "failed_command"
        case outputTail = "output_tail"
    }
}

/// The body of `PUT /v1/projects/{id}/setup`.
public struct SetupRequest: Sendable, Codable, Equatable {
    public var commands: [String]

    public init(commands: [String]) { self.commands = commands }
}

/// What a project's setup is doing, in a warm-up's (or `POST …/setup/run`'s) event stream.
public enum SetupProgress: Sendable, Equatable {
    /// `{"stage": "setup_started", "commands"}`: a run begins.
    case started(commands: Int)
    /// `{"stage": "setup_command", "index", "command"}`: a command (1-based) starts.
    case command(index: Int, command: String)
    /// `{"stage": "setup_output", "text"}`: what the commands printed, as it came.
    case output(String)
    /// `{"stage": "setup_finished", "status", "exit_code", "duration_ms"}`.
    case finished(status: String, exitCode: Int32?, durationMs: Int)
}
