import Foundation

/// A project as the HTTP API reports it.
public struct ProjectInfo: Sendable, Codable, Equatable {
    public var id: String
    public var source: String
    /// cold, fetching or ready.
    public var state: String
    public var sourceVersion: String?
    public var dirty: Bool?
    public var diskBytes: Int64
    public var runningJobs: Int
    public var queuedJobs: Int
    public var expiresAt: Date
    public var policy: String
    /// Set while the policy's file is invalid: what is wrong with it, and whether its last
    /// good version is in force or the project's jobs cannot start.
    public var policyWarning: String?
    public var sandbox: Bool
    /// The limits in force for the project's jobs, and which of them the kernel enforces.
    public var limits: ProjectLimits
    /// The TCP ports processes in its sandbox listen on, each with the URL that reaches it
    /// through the API: a model that started a dev server finds it here.
    public var ports: [PortInfo]
    /// Archive bytes of the project's named snapshots in the primary store.
    public var snapshotBytes: Int64
    /// Its setup commands and how their last run for the current files went.
    public var setup: SetupInfo

    public init(
        id: String, source: String, state: String, sourceVersion: String?, dirty: Bool?, diskBytes: Int64,
        runningJobs: Int, queuedJobs: Int, expiresAt: Date, policy: String, policyWarning: String? = nil,
        sandbox: Bool, limits: ProjectLimits, ports: [PortInfo] = [], snapshotBytes: Int64 = 0,
        setup: SetupInfo = SetupInfo(status: .none)
    ) {
        self.setup = setup
        self.id = id
        self.source = source
        self.state = state
        self.sourceVersion = sourceVersion
        self.dirty = dirty
        self.diskBytes = diskBytes
        self.runningJobs = runningJobs
        self.queuedJobs = queuedJobs
        self.expiresAt = expiresAt
        self.policy = policy
        self.policyWarning = policyWarning
        self.sandbox = sandbox
        self.limits = limits
        self.ports = ports
        self.snapshotBytes = snapshotBytes
    }

    enum CodingKeys: String, CodingKey {
        case id, source, state, dirty, policy, sandbox, limits, ports, setup
        case sourceVersion = "source_version"
        case diskBytes = "disk_bytes"
        case runningJobs = "running_jobs"
        case queuedJobs = "queued_jobs"
        case expiresAt = "expires_at"
        case policyWarning = "policy_warning"
        case snapshotBytes = "snapshot_bytes"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try c.decode(String.self, forKey: .id), source: try c.decode(String.self, forKey: .source),
            state: try c.decode(String.self, forKey: .state),
            sourceVersion: try c.decodeIfPresent(String.self, forKey: .sourceVersion),
            dirty: try c.decodeIfPresent(Bool.self, forKey: .dirty),
            diskBytes: try c.decode(Int64.self, forKey: .diskBytes),
            runningJobs: try c.decode(Int.self, forKey: .runningJobs),
            queuedJobs: try c.decode(Int.self, forKey: .queuedJobs),
            expiresAt: try c.decode(Date.self, forKey: .expiresAt), policy: try c.decode(String.self, forKey: .policy),
            policyWarning: try c.decodeIfPresent(String.self, forKey: .policyWarning),
            sandbox: try c.decode(Bool.self, forKey: .sandbox),
            limits: try c.decode(ProjectLimits.self, forKey: .limits),
            ports: try c.decodeIfPresent([PortInfo].self, forKey: .ports) ?? [],
            // A worker of an older version sends none.
            snapshotBytes: try c.decodeIfPresent(Int64.self, forKey: .snapshotBytes) ?? 0,
            setup: try c.decodeIfPresent(SetupInfo.self, forKey: .setup) ?? SetupInfo(status: .none))
    }
}

/// A project's limits: the values its jobs get (its policy's, lowered where the project
/// asked) and, per resource, whether the kernel enforces it.
///
/// On the wire it stays one flat object of strings (`"pids_max": "256"`,
/// `"pids": "enforced by …"`), as docs/openapi.json has always described it; in Swift
/// the values are numbers, so no caller parses them back.
public struct ProjectLimits: Sendable, Equatable {
    /// Per resource (`cpu`, `memory`, `swap`, `pids`, `kill`): `enforced by <directory>
    /// (<files>)` or `not enforced: <why>`.
    public var enforcement: [String: String]
    /// Whether the policy refuses to start a sandbox without every limit; nil when the
    /// project's policy cannot be resolved (then no values below are known either).
    public var requireLimits: Bool?
    public var cpus: Double?
    public var memoryBytes: UInt64?
    public var pidsMax: Int?
    public var workspaceBytes: UInt64?
    /// The timeout a job that names none gets.
    public var timeoutSeconds: Int?
    /// The most a job may ask for.
    public var maxTimeoutSeconds: Int?

    public init(
        enforcement: [String: String] = [:], requireLimits: Bool? = nil, cpus: Double? = nil,
        memoryBytes: UInt64? = nil, pidsMax: Int? = nil, workspaceBytes: UInt64? = nil, timeoutSeconds: Int? = nil,
        maxTimeoutSeconds: Int? = nil
    ) {
        self.enforcement = enforcement
        self.requireLimits = requireLimits
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.pidsMax = pidsMax
        self.workspaceBytes = workspaceBytes
        self.timeoutSeconds = timeoutSeconds
        self.maxTimeoutSeconds = maxTimeoutSeconds
    }
}

extension ProjectLimits: Codable {
    /// The value keys; every other key of the object is a resource's enforcement.
    enum Key: String, CaseIterable {
        case requireLimits = "require_limits"
        case cpus
        case memoryBytes = "memory_bytes"
        case pidsMax = "pids_max"
        case workspaceBytes = "workspace_bytes"
        case timeoutSeconds = "timeout_s"
        case maxTimeoutSeconds = "max_timeout_s"
    }

    /// The flat wire object: enforcement first, the values over it (as the host always
    /// wrote them: `String(value)`); also the text `project_info` shows.
    public var wireFields: [String: String] {
        var fields = enforcement
        func put(_ key: Key, _ value: (some LosslessStringConvertible)?) {
            if let value { fields[key.rawValue] = String(value) }
        }
        put(.requireLimits, requireLimits)
        put(.cpus, cpus)
        put(.memoryBytes, memoryBytes)
        put(.pidsMax, pidsMax)
        put(.workspaceBytes, workspaceBytes)
        put(.timeoutSeconds, timeoutSeconds)
        put(.maxTimeoutSeconds, maxTimeoutSeconds)
        return fields
    }

    public init(from decoder: any Decoder) throws {
        var fields = try decoder.singleValueContainer().decode([String: String].self)
        func take<T: LosslessStringConvertible>(_ key: Key, as type: T.Type) -> T? {
            fields.removeValue(forKey: key.rawValue).flatMap(T.init)
        }
        self.init(
            requireLimits: take(.requireLimits, as: Bool.self), cpus: take(.cpus, as: Double.self),
            memoryBytes: take(.memoryBytes, as: UInt64.self), pidsMax: take(.pidsMax, as: Int.self),
            workspaceBytes: take(.workspaceBytes, as: UInt64.self), timeoutSeconds: take(.timeoutSeconds, as: Int.self),
            maxTimeoutSeconds: take(.maxTimeoutSeconds, as: Int.self))
        enforcement = fields
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(wireFields)
    }
}
