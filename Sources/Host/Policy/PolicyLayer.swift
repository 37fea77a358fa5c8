import Sandbox

/// What one policy file says, before `extends` is resolved: every setting is optional and
/// remembers where it was written.
struct PolicyLayer: Sendable {
    var name: String
    var file: String
    var extends: Setting<String>?
    var description: Setting<String>?
    var rootfs: Setting<String>?
    var requireLimits: Setting<Bool>?
    var uid: Setting<Int64>?
    var gid: Setting<Int64>?
    var cpus: Setting<Double>?
    var memory: Setting<UInt64>?
    var pids: Setting<Int64>?
    var tmpfs: Setting<UInt64>?
    var workspace: Setting<UInt64>?
    var defaultTimeout: Setting<Int64>?
    var maxTimeout: Setting<Int64>?
    var stdout: Setting<UInt64>?
    var stderr: Setting<UInt64>?
    var idleTimeout: Setting<Int64>?
    var maxIdleTimeout: Setting<Int64>?
    var maxSessions: Setting<Int64>?
    var network = NetworkLayer()
    /// `[setup]`: its timeout, `[setup.network]` (each key the merged `[network]`'s unless
    /// set) and `[setup.limits]` (each the project's unless set).
    var setupTimeout: Setting<Int64>?
    var setupNetwork = NetworkLayer()
    var setupCpus: Setting<Double>?
    var setupMemory: Setting<UInt64>?
    var setupPids: Setting<Int64>?
    var capabilities: Setting<CapabilitySet>?
    var mounts: Setting<[Policy.BindMount]>?
    /// Merged per variable across files, unlike arrays, which a child replaces whole.
    var envSet: [String: Setting<String>] = [:]
    var envPass: Setting<[Setting<String>]>?
    var seccomp = SeccompLayer()

    init(name: String, file: String) {
        self.name = name
        self.file = file
    }
}

/// One file's `[network]` or `[setup.network]` section.
struct NetworkLayer: Sendable {
    var mode: Setting<Policy.Network.Mode>?
    var egress: Setting<[EgressHost]>?
    var allowPrivate: Setting<[AddressRange]>?
    var maxConnections: Setting<Int64>?
    var maxBytesPerHour: Setting<UInt64>?

    /// A later (more specific) layer's settings win, key by key.
    mutating func overlay(_ layer: NetworkLayer) {
        mode = layer.mode ?? mode
        egress = layer.egress ?? egress
        allowPrivate = layer.allowPrivate ?? allowPrivate
        maxConnections = layer.maxConnections ?? maxConnections
        maxBytesPerHour = layer.maxBytesPerHour ?? maxBytesPerHour
    }
}

/// One file's `[seccomp]` section: edits applied, per system call, to what it inherits.
struct SeccompLayer: Sendable {
    /// `corral-default` or `none`: start over from a built-in profile.
    var base: Setting<String>?
    var defaultErrno: Setting<Int32>?
    var architectures: Setting<[String]>?
    /// Allowed unconditionally; replaces inherited rules for these calls.
    var allow: [Setting<String>] = []
    /// Removed: these calls get the default errno.
    var deny: [Setting<String>] = []
    /// Replace inherited rules for the calls they name.
    var rules: [Setting<SeccompProfile.Rule>] = []
}

/// Bounds on every setting: wide enough for any real project, narrow enough that a typo
/// (a memory limit in bytes where MiB was meant) is caught.
enum PolicyBounds {
    static let id: ClosedRange<Int64> = 0...65534
    static let cpus: ClosedRange<Double> = 0.01...1024
    static let memory: ClosedRange<UInt64> = (16 << 20)...(1 << 40)
    static let pids: ClosedRange<Int64> = 8...4_194_304
    static let tmpfs: ClosedRange<UInt64> = (1 << 20)...(64 << 30)
    static let workspace: ClosedRange<UInt64> = (16 << 20)...(16 << 40)
    static let timeout: ClosedRange<Int64> = 1...604_800
    static let output: ClosedRange<UInt64> = (1 << 10)...(1 << 30)
    /// A session's idle timeout, and the most a creator may ask for: a second to a week.
    static let idleTimeout: ClosedRange<Int64> = 1...604_800
    /// Sessions one project may hold at once; 0 turns sessions off for the policy.
    static let sessions: ClosedRange<Int64> = 0...256
    static let connections: ClosedRange<Int64> = 1...10_000
    static let egressBytes: ClosedRange<UInt64> = (1 << 20)...(1 << 50)
    /// All of a project's setup commands together: a second to a week, like a job.
    static let setupTimeout: ClosedRange<Int64> = 1...604_800
}

/// What a policy gets for a setting no file in its chain mentions.
enum PolicyDefaults {
    static let rootfs = "minimal"
    static let requireLimits = true
    static let uid: UInt32 = 1000
    static let gid: UInt32 = 1000
    static let cpus = 1.0
    static let memory: UInt64 = 1 << 30
    static let pids = 256
    static let tmpfs: UInt64 = 256 << 20
    static let workspace: UInt64 = 4 << 30
    static let defaultTimeout = 120
    static let maxTimeout = 1800
    static let stdout: UInt64 = 8 << 20
    static let stderr: UInt64 = 8 << 20
    static let idleTimeout = 1800
    static let maxIdleTimeout = 86_400
    static let maxSessions = 8
    /// Installing a project's dependencies takes longer than a command: 15 minutes.
    static let setupTimeout = 900
}
