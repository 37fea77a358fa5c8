import Foundation

// MARK: - Write-back

/// The answer to `POST /v1/projects/{id}/snapshot`: the write-back, or `snapshot: null` and
/// why there was nothing to write.
public struct SnapshotReply: Sendable, Codable, Equatable {
    public var project: String
    public var snapshot: SnapshotResult?
    public var message: String?

    public init(project: String, snapshot: SnapshotResult?) {
        self.project = project
        self.snapshot = snapshot
        message = snapshot == nil ? "nothing to write back: the workspace is not materialized" : nil
    }

    enum CodingKeys: String, CodingKey { case project, snapshot, message }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(project, forKey: .project)
        // `snapshot: null` is part of the answer, not a missing field.
        try container.encode(snapshot, forKey: .snapshot)
        try container.encodeIfPresent(message, forKey: .message)
    }
}

// MARK: - Warm progress

/// One `progress` event of a warm's event stream:
/// `{"stage": "downloading", "bytes", "total", "bytes_per_second"}`, `{"stage": "extracting"}`,
/// `{"stage": "ready"}`, then the setup's stages (``SetupProgress``).
extension CacheProgress: Codable {
    enum CodingKeys: String, CodingKey {
        case stage, bytes, total, commands, index, command, text, status
        case bytesPerSecond = "bytes_per_second"
        case exitCode = "exit_code"
        case durationMs = "duration_ms"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        switch try container.decode(String.self, forKey: .stage) {
        case "downloading":
            self = .downloading(
                TransferProgress(
                    bytes: try container.decode(Int64.self, forKey: .bytes),
                    total: try container.decodeIfPresent(Int64.self, forKey: .total),
                    bytesPerSecond: try container.decode(Double.self, forKey: .bytesPerSecond)))
        case "extracting": self = .extracting
        case "ready": self = .ready
        case "setup_started": self = .setup(.started(commands: try container.decode(Int.self, forKey: .commands)))
        case "setup_command":
            self = .setup(
                .command(
                    index: try container.decode(Int.self, forKey: .index),
                    command: try container.decode(String.self, forKey: .command)))
        case "setup_output": self = .setup(.output(try container.decode(String.self, forKey: .text)))
        case "setup_finished":
            self = .setup(
                .finished(
                    status: try container.decode(String.self, forKey: .status),
                    exitCode: try container.decodeIfPresent(Int32.self, forKey: .exitCode),
                    durationMs: try container.decode(Int.self, forKey: .durationMs)))
        case let stage:
            throw DecodingError.dataCorruptedError(
                forKey: .stage, in: container, debugDescription: "unknown stage \(stage)")
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        switch self {
        case .downloading(let transfer):
            try container.encode("downloading", forKey: .stage)
            try container.encode(transfer.bytes, forKey: .bytes)
            try container.encode(transfer.total, forKey: .total)
            // Whole bytes per second: the fraction is noise, and a whole number reads as one.
            try container.encode(transfer.bytesPerSecond.rounded(), forKey: .bytesPerSecond)
        case .extracting: try container.encode("extracting", forKey: .stage)
        case .ready: try container.encode("ready", forKey: .stage)
        case .setup(.started(let commands)):
            try container.encode("setup_started", forKey: .stage)
            try container.encode(commands, forKey: .commands)
        case .setup(.command(let index, let command)):
            try container.encode("setup_command", forKey: .stage)
            try container.encode(index, forKey: .index)
            try container.encode(command, forKey: .command)
        case .setup(.output(let text)):
            try container.encode("setup_output", forKey: .stage)
            try container.encode(text, forKey: .text)
        case .setup(.finished(let status, let exitCode, let durationMs)):
            try container.encode("setup_finished", forKey: .stage)
            try container.encode(status, forKey: .status)
            try container.encode(exitCode, forKey: .exitCode)
            try container.encode(durationMs, forKey: .durationMs)
        }
    }
}

// MARK: - Registration

/// The body of `PUT /v1/projects/{id}`.
public struct RegisterRequest: Sendable, Codable, Equatable {
    public var source: String
    public var sha256: String?
    public var policy: String?
    public var limits: RequestedLimits?
    /// The project's setup commands; nil keeps those it has (none for a new project).
    public var setup: [String]?

    public init(source: String, sha256: String?, policy: String?, limits: RequestedLimits, setup: [String]? = nil) {
        self.source = source
        self.sha256 = sha256
        self.policy = policy
        self.limits = limits == RequestedLimits() ? nil : limits
        self.setup = setup
    }
}

/// The body of `POST /v1/projects/{id}/fork`: the new project's id, the named snapshot to
/// fork instead of the current workspace, and the fork's own policy and limits (nil: the
/// source's).
public struct ForkRequest: Sendable, Codable, Equatable {
    public var id: String
    public var snapshot: String?
    public var policy: String?
    public var limits: RequestedLimits?

    public init(id: String, snapshot: String?, policy: String?, limits: RequestedLimits?) {
        self.id = id
        self.snapshot = snapshot
        self.policy = policy
        self.limits = limits
    }
}

// MARK: - Patches

/// The answer to `PATCH /v1/projects/{id}/archive`: what the patch changed in the workspace.
public struct PatchSummary: Sendable, Codable, Equatable {
    public var project: String
    /// Files and symlinks written (new or replaced), those inside new directories included.
    public var filesWritten: Int
    /// Directories the workspace did not have.
    public var directoriesCreated: Int
    /// Paths deleted by whiteouts (a directory counts once, whatever it held); a whiteout of
    /// a path the workspace does not have deletes nothing and is not counted.
    public var pathsDeleted: Int
    /// Bytes of file content written.
    public var bytesWritten: Int64

    public init(
        project: String, filesWritten: Int = 0, directoriesCreated: Int = 0, pathsDeleted: Int = 0,
        bytesWritten: Int64 = 0
    ) {
        self.project = project
        self.filesWritten = filesWritten
        self.directoriesCreated = directoriesCreated
        self.pathsDeleted = pathsDeleted
        self.bytesWritten = bytesWritten
    }

    enum CodingKeys: String, CodingKey {
        case project
        case filesWritten = "files_written"
        case directoriesCreated = "directories_created"
        case pathsDeleted = "paths_deleted"
        case bytesWritten = "bytes_written"
    }
}
