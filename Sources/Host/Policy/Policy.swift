import Sandbox

/// A resolved policy: every setting a project's sandbox and jobs run under, after
/// `extends` and defaults, validated.
///
/// Immutable on purpose: a job captures its policy when it starts, so an admin's edit
/// changes the next job and never a running one.
public struct Policy: Sendable, Hashable {
    /// The policy's name: its file name without `.toml`.
    public let name: String
    /// The files it was resolved from, the named one first, then what it extends.
    public let files: [String]
    /// Free text for admins; not part of the digest.
    public let description: String
    /// The rootfs image name, looked up in the host's rootfs directory.
    public let rootfs: String
    /// Whether a sandbox whose limits this host cannot all enforce is refused (true, the
    /// default) or started with the limits it can enforce, the others reported as not
    /// enforced (`require_limits = false`). Never silently unlimited either way.
    public let requireLimits: Bool
    /// The ids jobs run as inside the sandbox's user namespace.
    public let user: User
    public let limits: Limits
    public let timeouts: Timeouts
    public let output: OutputCaps
    /// Persistent shell and Python sessions: how many a project may hold and how long an
    /// idle one lives.
    public let sessions: Sessions
    public let network: Network
    /// A project's setup commands: how long they may run, what they may reach and their
    /// limits (docs/ENVIRONMENTS.md, "Setup").
    public let setup: Setup
    /// The seccomp allowlist; ``seccompProgram()`` compiles it (once per distinct profile).
    public let seccomp: SeccompProfile
    /// Capabilities jobs keep; none unless the policy names some.
    public let capabilities: CapabilitySet
    /// Extra host directories bind-mounted read-only into the sandbox.
    public let mounts: [BindMount]
    public let environment: Environment
    /// `sha256:<hex>` of the canonical rendering of every setting that changes behavior.
    public let digest: String

    /// The ids a job runs as inside the sandbox (the sandbox maps them to an unprivileged
    /// range on the host).
    public struct User: Sendable, Hashable {
        public let uid: UInt32
        public let gid: UInt32
    }

    /// Per-sandbox resource limits.
    public struct Limits: Sendable, Hashable {
        /// CPUs' worth of time per period (cpu.max), e.g. 1.5.
        public let cpus: Double
        /// memory.max in bytes; swap is always off.
        public let memoryBytes: UInt64
        /// pids.max.
        public let pids: Int
        /// Size of each of `/tmp` and `/dev/shm`.
        public let tmpfsBytes: UInt64
        /// The most the project's workspace may hold.
        public let workspaceBytes: UInt64
    }

    /// How long a job may run.
    public struct Timeouts: Sendable, Hashable {
        /// Used when a request names no timeout.
        public let defaultSeconds: Int
        /// The most a request may ask for.
        public let maxSeconds: Int
    }

    /// How much of a job's output the host keeps; the rest is dropped and reported.
    public struct OutputCaps: Sendable, Hashable {
        public let stdoutBytes: UInt64
        public let stderrBytes: UInt64
    }

    /// Persistent shell and Python sessions in the project's sandbox: its `[sessions]`
    /// section. A session's creator may name an idle timeout up to the maximum; one that
    /// names none gets the default.
    public struct Sessions: Sendable, Hashable {
        /// How long a session may sit idle before the host ends it, when its creator names
        /// no idle timeout.
        public let idleTimeoutSeconds: Int
        /// The longest idle timeout a creator may ask for.
        public let maxIdleTimeoutSeconds: Int
        /// The most sessions one project may have at once; 0 allows none.
        public let maxSessions: Int
    }

    /// Network access from inside the sandbox: its `[network]` section. The sandbox's own
    /// namespace always has loopback only; what it may reach beyond goes through the host's
    /// egress proxy, under these rules (docs/NETWORK.md).
    public struct Network: Sendable, Hashable {
        public let mode: Mode
        /// Hosts reachable in `allowlist` mode.
        public let egress: [EgressHost]
        /// Non-public ranges reachable anyway.
        public let allowPrivate: [AddressRange]
        public let maxConnections: Int
        public let maxBytesPerHour: UInt64

        public typealias Mode = EgressRules.Mode

        public init(
            mode: Mode, egress: [EgressHost] = [], allowPrivate: [AddressRange] = [],
            maxConnections: Int = EgressRules.defaultMaxConnections,
            maxBytesPerHour: UInt64 = EgressRules.defaultMaxBytesPerHour
        ) {
            self.mode = mode
            self.egress = egress
            self.allowPrivate = allowPrivate
            self.maxConnections = maxConnections
            self.maxBytesPerHour = maxBytesPerHour
        }
    }

    /// The `[setup]` section: a project's setup commands run once per file set, before its
    /// other jobs, under these instead of the project's own network and limits.
    public struct Setup: Sendable, Hashable {
        /// How long all the commands together may run.
        public let timeoutSeconds: Int
        /// What setup may reach through the egress proxy while it runs: `[setup.network]`,
        /// each key the policy's `[network]` value unless the section sets it.
        public let network: Network
        /// `[setup.limits]`; nil: the project's own limit (its policy's, lowered where the
        /// project asked).
        public let cpus: Double?
        public let memoryBytes: UInt64?
        public let pids: Int?

        public init(
            timeoutSeconds: Int = 900, network: Network, cpus: Double? = nil, memoryBytes: UInt64? = nil,
            pids: Int? = nil
        ) {
            self.timeoutSeconds = timeoutSeconds
            self.network = network
            self.cpus = cpus
            self.memoryBytes = memoryBytes
            self.pids = pids
        }
    }

    /// A host directory visible read-only inside the sandbox.
    public struct BindMount: Sendable, Hashable {
        /// Absolute host path.
        public let source: String
        /// Absolute path inside the sandbox.
        public let target: String
        /// Always true: a policy cannot grant write access to the host.
        public var readOnly: Bool { true }
    }

    /// The environment a job starts with.
    public struct Environment: Sendable, Hashable {
        /// Variables set to fixed values, sorted by name.
        public let set: [Variable]
        /// Names copied from the host's environment when present there.
        public let pass: [String]

        public struct Variable: Sendable, Hashable {
            public let name: String
            public let value: String
        }

        /// `NAME=value` strings for execve: passed-through host values first, then `set`.
        /// The job's own request environment is the caller's to add.
        public func resolve(host: [String: String]) -> [String] {
            let passed = pass.compactMap { name in host[name].map { "\(name)=\($0)" } }
            return passed + set.map { "\($0.name)=\($0.value)" }
        }
    }
}

extension Policy {
    /// The rules the egress proxy applies to this policy's sandboxes.
    public var egressRules: EgressRules {
        EgressRules(
            policy: name, file: files.first ?? name, mode: network.mode, egress: network.egress,
            allowPrivate: network.allowPrivate, maxConnections: network.maxConnections,
            maxBytesPerHour: network.maxBytesPerHour)
    }

    /// The rules the egress proxy applies to a project of this policy while its setup runs:
    /// `[setup.network]`, named so in the proxy's refusals.
    public var setupEgressRules: EgressRules {
        let network = setup.network
        return EgressRules(
            policy: name, file: files.first ?? name, mode: network.mode, egress: network.egress,
            allowPrivate: network.allowPrivate, maxConnections: network.maxConnections,
            maxBytesPerHour: network.maxBytesPerHour, section: "setup.network")
    }

    /// The compiled seccomp filter, from the process-wide cache when this profile has been
    /// compiled before.
    public func seccompProgram() throws -> SeccompProgram { try seccomp.compile() }
}

extension Policy.Environment {
    /// ``resolve(host:)`` as a dictionary: what a job's environment starts from.
    public func resolvedDictionary(host: [String: String]) -> [String: String] {
        var out: [String: String] = [:]
        for pair in resolve(host: host) {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { out[parts[0]] = parts[1] }
        }
        return out
    }
}
