import Host

/// Where the projects of a cluster are registered, so that whichever worker host owns a
/// project can materialize it: its source, checksum, policy and requested limits, and the
/// ownership epoch. `corral serve` has none (its `projects.json` is the registry); a
/// `corral worker` uses Redis (``RedisProjectRegistry``) through ``ClusterHost``.
public protocol ProjectRegistry: Sendable {
    /// Records (or replaces) a project's registration; returns its current ownership epoch.
    func save(_ id: String, _ registration: ProjectRegistration) async throws -> Int
    /// The project's registration and ownership epoch, or nil when it is not registered.
    func load(_ id: String) async throws -> ProjectClaim?
    /// Every registered project ID.
    func list() async throws -> [String]
    /// Forgets a deleted project: its registration, and its lease whoever holds it.
    func remove(_ id: String) async throws
}

/// A project as it was registered: where its code comes from and the settings it asked
/// for. A worker host that takes the project over registers it locally from this.
public struct ProjectRegistration: Sendable, Codable, Equatable {
    /// The source URL (`blob:uploads/…` for an uploaded archive, in the shared primary store).
    public var source: String
    public var sha256: String?
    public var policy: String
    public var cpus: Double?
    public var memoryBytes: UInt64?
    public var pids: Int?
    public var timeoutSeconds: Int?
    public var workspaceBytes: UInt64?
    /// The project's setup commands; absent in registrations written before setup existed.
    public var setup: [String]?

    public init(source: String, sha256: String?, policy: String, limits: RequestedLimits, setup: [String]? = nil) {
        self.setup = setup
        self.source = source
        self.sha256 = sha256
        self.policy = policy
        cpus = limits.cpus
        memoryBytes = limits.memoryBytes
        pids = limits.pids
        timeoutSeconds = limits.timeoutSeconds
        workspaceBytes = limits.workspaceBytes
    }

    /// The limits the project asked for.
    public var limits: RequestedLimits {
        RequestedLimits(
            cpus: cpus, memoryBytes: memoryBytes, pids: pids, workspaceBytes: workspaceBytes,
            timeoutSeconds: timeoutSeconds)
    }
}

/// A registration with its ownership epoch: a counter the cluster raises each time the
/// project's lease passes to a different host. A host whose local copy of the project
/// carries an older epoch knows another host owned the project since, so its copy may be
/// stale and is dropped in favour of the latest write-back snapshot.
public struct ProjectClaim: Sendable, Equatable {
    public var registration: ProjectRegistration
    public var epoch: Int

    public init(registration: ProjectRegistration, epoch: Int) {
        self.registration = registration
        self.epoch = epoch
    }
}
