/// Limits a project's request asks for. Each may lower its policy's value, never raise it;
/// nil means "the policy's value".
public struct RequestedLimits: Sendable, Hashable, Codable {
    public var cpus: Double?
    public var memoryBytes: UInt64?
    public var pids: Int?
    public var tmpfsBytes: UInt64?
    public var workspaceBytes: UInt64?
    /// May be anything up to the policy's `max_s`; nil means its `default_s`.
    public var timeoutSeconds: Int?
    public var stdoutBytes: UInt64?
    public var stderrBytes: UInt64?

    public init(
        cpus: Double? = nil, memoryBytes: UInt64? = nil, pids: Int? = nil, tmpfsBytes: UInt64? = nil,
        workspaceBytes: UInt64? = nil, timeoutSeconds: Int? = nil, stdoutBytes: UInt64? = nil,
        stderrBytes: UInt64? = nil
    ) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.pids = pids
        self.tmpfsBytes = tmpfsBytes
        self.workspaceBytes = workspaceBytes
        self.timeoutSeconds = timeoutSeconds
        self.stdoutBytes = stdoutBytes
        self.stderrBytes = stderrBytes
    }

    /// The limits' names on the wire (a registration's `limits`, an upload's query); the
    /// API reads each by its key here. Absent keys are nil.
    public enum CodingKeys: String, CodingKey, CaseIterable {
        case cpus, pids
        case memoryBytes = "memory_bytes"
        case tmpfsBytes = "tmpfs_bytes"
        case workspaceBytes = "workspace_bytes"
        case timeoutSeconds = "timeout_s"
        case stdoutBytes = "stdout_bytes"
        case stderrBytes = "stderr_bytes"
    }
}

/// The limits a sandbox or job actually gets: the request where it asked for less, the
/// policy everywhere else.
public struct EffectiveLimits: Sendable, Hashable {
    public let cpus: Double
    public let memoryBytes: UInt64
    public let pids: Int
    public let tmpfsBytes: UInt64
    public let workspaceBytes: UInt64
    public let timeoutSeconds: Int
    public let stdoutBytes: UInt64
    public let stderrBytes: UInt64
}

/// A request that asks for more than its policy allows, or for nothing at all.
public enum LimitError: Error, Sendable, Hashable, CustomStringConvertible {
    /// `limit` is the policy key (`memory`, `timeout_s`); values are as a user writes them.
    case aboveMaximum(limit: String, requested: String, maximum: String)
    /// Zero, negative or not a number.
    case notPositive(limit: String, requested: String)

    public var description: String {
        switch self {
        case .aboveMaximum(let limit, let requested, let maximum):
            "\(limit): requested \(requested) is above the policy's maximum of \(maximum)"
        case .notPositive(let limit, let requested):
            "\(limit): requested \(requested) must be greater than zero"
        }
    }
}

extension Policy {
    /// Checks a request against this policy and fills in what it leaves out.
    ///
    /// - Throws: ``LimitError/aboveMaximum(limit:requested:maximum:)`` for the first limit
    ///   the request raises; a project can never buy more than its policy by asking.
    public func effectiveLimits(for request: RequestedLimits) throws(LimitError) -> EffectiveLimits {
        func size(_ limit: String, _ requested: UInt64?, _ maximum: UInt64) throws(LimitError) -> UInt64 {
            guard let requested else { return maximum }
            guard requested > 0 else { throw .notPositive(limit: limit, requested: ByteSize.format(requested)) }
            guard requested <= maximum else {
                throw .aboveMaximum(
                    limit: limit, requested: ByteSize.format(requested), maximum: ByteSize.format(maximum))
            }
            return requested
        }
        func count(_ limit: String, _ requested: Int?, _ maximum: Int, default: Int) throws(LimitError) -> Int {
            guard let requested else { return `default` }
            guard requested > 0 else { throw .notPositive(limit: limit, requested: "\(requested)") }
            guard requested <= maximum else {
                throw .aboveMaximum(limit: limit, requested: "\(requested)", maximum: "\(maximum)")
            }
            return requested
        }
        var cpus = limits.cpus
        if let requested = request.cpus {
            guard requested > 0 else { throw .notPositive(limit: "cpus", requested: "\(requested)") }
            guard requested <= limits.cpus else {
                throw .aboveMaximum(limit: "cpus", requested: "\(requested)", maximum: "\(limits.cpus)")
            }
            cpus = requested
        }
        return EffectiveLimits(
            cpus: cpus,
            memoryBytes: try size("memory", request.memoryBytes, limits.memoryBytes),
            pids: try count("pids", request.pids, limits.pids, default: limits.pids),
            tmpfsBytes: try size("tmpfs", request.tmpfsBytes, limits.tmpfsBytes),
            workspaceBytes: try size("workspace", request.workspaceBytes, limits.workspaceBytes),
            timeoutSeconds: try count(
                "timeout_s", request.timeoutSeconds, timeouts.maxSeconds, default: timeouts.defaultSeconds),
            stdoutBytes: try size("stdout", request.stdoutBytes, output.stdoutBytes),
            stderrBytes: try size("stderr", request.stderrBytes, output.stderrBytes))
    }
}
