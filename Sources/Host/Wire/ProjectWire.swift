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

extension SnapshotResult: Codable {
    enum CodingKeys: String, CodingKey { case key, version, bytes, files, skipped }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            key: try container.decode(String.self, forKey: .key),
            version: try container.decode(String.self, forKey: .version),
            bytes: try container.decode(Int64.self, forKey: .bytes),
            files: try container.decode(Int.self, forKey: .files),
            skipped: try container.decode(Int.self, forKey: .skipped))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(key, forKey: .key)
        try container.encode(version, forKey: .version)
        try container.encode(bytes, forKey: .bytes)
        try container.encode(files, forKey: .files)
        try container.encode(skipped, forKey: .skipped)
    }
}

// MARK: - Warm progress

/// One `progress` event of a warm's event stream:
/// `{"stage": "downloading", "bytes", "total", "bytes_per_second"}`, `{"stage": "extracting"}`
/// or `{"stage": "ready"}`.
extension CacheProgress: Codable {
    enum CodingKeys: String, CodingKey {
        case stage, bytes, total
        case bytesPerSecond = "bytes_per_second"
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

    public init(source: String, sha256: String?, policy: String?, limits: RequestedLimits) {
        self.source = source
        self.sha256 = sha256
        self.policy = policy
        self.limits = limits == RequestedLimits() ? nil : limits
    }
}

extension RequestedLimits: Codable {
    /// The limits' names on the wire (a registration's `limits`, an upload's query); the
    /// API reads each by its key here.
    public enum CodingKeys: String, CodingKey, CaseIterable {
        case cpus, pids
        case memoryBytes = "memory_bytes"
        case tmpfsBytes = "tmpfs_bytes"
        case workspaceBytes = "workspace_bytes"
        case timeoutSeconds = "timeout_s"
        case stdoutBytes = "stdout_bytes"
        case stderrBytes = "stderr_bytes"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            cpus: try c.decodeIfPresent(Double.self, forKey: .cpus),
            memoryBytes: try c.decodeIfPresent(UInt64.self, forKey: .memoryBytes),
            pids: try c.decodeIfPresent(Int.self, forKey: .pids),
            tmpfsBytes: try c.decodeIfPresent(UInt64.self, forKey: .tmpfsBytes),
            workspaceBytes: try c.decodeIfPresent(UInt64.self, forKey: .workspaceBytes),
            timeoutSeconds: try c.decodeIfPresent(Int.self, forKey: .timeoutSeconds),
            stdoutBytes: try c.decodeIfPresent(UInt64.self, forKey: .stdoutBytes),
            stderrBytes: try c.decodeIfPresent(UInt64.self, forKey: .stderrBytes))
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(cpus, forKey: .cpus)
        try c.encodeIfPresent(memoryBytes, forKey: .memoryBytes)
        try c.encodeIfPresent(pids, forKey: .pids)
        try c.encodeIfPresent(tmpfsBytes, forKey: .tmpfsBytes)
        try c.encodeIfPresent(workspaceBytes, forKey: .workspaceBytes)
        try c.encodeIfPresent(timeoutSeconds, forKey: .timeoutSeconds)
        try c.encodeIfPresent(stdoutBytes, forKey: .stdoutBytes)
        try c.encodeIfPresent(stderrBytes, forKey: .stderrBytes)
    }
}
