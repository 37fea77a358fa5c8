import Glibc

// MARK: - Mode, limits, usage

/// How the host mounts cgroups, found by ``CgroupDriver/detect(root:prefix:)``.
public enum CgroupMode: String, Sendable {
    /// Pure cgroup v2: one hierarchy at the root carries every controller (the production target).
    case unified
    /// Controllers on cgroup v1 hierarchies plus a cgroup2 tree at `<root>/unified`, which has
    /// no limiting controllers but does have `cgroup.kill` and `cgroup.events`.
    case hybrid
    /// Only cgroup v1 hierarchies.
    case legacy
}

/// The resources a project cgroup can limit; names a limit in errors and status.
public enum CgroupResource: String, Sendable, Hashable, CaseIterable {
    case cpu, memory, swap, pids
}

/// The limits of one project. `nil` means no limit for that resource.
public struct CgroupLimits: Sendable, Hashable {
    /// CPU bandwidth in CPUs, e.g. 0.5 for half of one CPU; becomes quota = cpus × period.
    public var cpus: Double?
    /// Memory limit in bytes; swap is held at zero next to it wherever the kernel allows.
    public var memoryBytes: UInt64?
    /// Maximum number of tasks (processes and threads) in the project.
    public var pids: Int?

    /// Limits with every resource not given left unlimited.
    public init(cpus: Double? = nil, memoryBytes: UInt64? = nil, pids: Int? = nil) {
        self.cpus = cpus
        self.memoryBytes = memoryBytes
        self.pids = pids
    }

    /// The CFS period every quota is expressed in: the kernel's default, 100 ms.
    public static let cpuPeriodMicros: UInt64 = 100_000
    /// The smallest quota the kernel accepts (1 ms per period).
    static let minimumQuotaMicros: UInt64 = 1_000

    /// The quota for `cpus`, validated; rounding to whole microseconds is the kernel's unit.
    func cpuQuotaMicros() throws(CgroupError) -> UInt64? {
        guard let cpus else { return nil }
        guard cpus.isFinite, cpus > 0 else { throw .invalidLimit(.cpu, "cpus must be a positive number, got \(cpus)") }
        let quota = (cpus * Double(Self.cpuPeriodMicros)).rounded()
        guard quota >= Double(Self.minimumQuotaMicros), quota < Double(UInt64(1) << 40) else {
            throw .invalidLimit(
                .cpu, "cpus=\(cpus) gives a quota of \(quota) µs per 100 ms; the kernel needs ≥ 1000 µs")
        }
        return UInt64(quota)
    }

    /// The resources these limits ask for, in the order errors name them.
    public var requested: [CgroupResource] {
        [(CgroupResource.cpu, cpus != nil), (.memory, memoryBytes != nil), (.pids, pids != nil)].compactMap {
            $0.1 ? $0.0 : nil
        }
    }

    /// These limits with `resources` left unlimited.
    public func removing(_ resources: some Sequence<CgroupResource>) -> CgroupLimits {
        var limits = self
        for resource in resources {
            switch resource {
            case .cpu: limits.cpus = nil
            case .memory: limits.memoryBytes = nil
            case .pids: limits.pids = nil
            case .swap: break
            }
        }
        return limits
    }

    func validate() throws(CgroupError) {
        _ = try cpuQuotaMicros()
        if let memoryBytes, memoryBytes == 0 { throw .invalidLimit(.memory, "memoryBytes must be positive") }
        if let pids, pids <= 0 { throw .invalidLimit(.pids, "pids must be positive, got \(pids)") }
    }
}

/// What a cgroup has consumed, read from the kernel's own counters.
///
/// A counter the host's hierarchy does not provide reads 0; ``CgroupEnforcement`` says which
/// counters are real, so a status page never presents a missing counter as a measurement.
public struct CgroupUsage: Sendable, Equatable {
    /// CPU time of every task that ever ran in the cgroup and its descendants, in nanoseconds.
    public var cpuNanos: UInt64
    /// The highest memory charge seen (v2 `memory.peak`, v1 `memory.max_usage_in_bytes`).
    public var peakMemoryBytes: UInt64
    /// Processes the kernel's OOM killer killed in this cgroup.
    public var oomKills: Int
    /// Tasks (processes and threads) in the cgroup now.
    public var pidsCurrent: Int
    /// The memory charged to the cgroup now (v2 `memory.current`, v1
    /// `memory.usage_in_bytes`); 0 without a memory controller.
    public var currentMemoryBytes: UInt64 = 0

    /// Counters with the given values; zero for the rest.
    public init(cpuNanos: UInt64 = 0, peakMemoryBytes: UInt64 = 0, oomKills: Int = 0, pidsCurrent: Int = 0) {
        self.cpuNanos = cpuNanos
        self.peakMemoryBytes = peakMemoryBytes
        self.oomKills = oomKills
        self.pidsCurrent = pidsCurrent
    }
}

// MARK: - Enforcement report

/// Whether one resource is enforced, and where.
public enum CgroupEnforcementStatus: Sendable, Equatable, CustomStringConvertible {
    /// Enforced by `files` in cgroups under `directory` (the prefix's directory in that hierarchy).
    case enforced(directory: String, files: [String])
    /// Not enforced on this host, and why.
    case unavailable(reason: String)

    /// Whether the resource is enforced.
    public var isEnforced: Bool {
        if case .enforced = self { return true }
        return false
    }

    public var description: String {
        switch self {
        case .enforced(let directory, let files): "\(directory) (\(files.joined(separator: ", ")))"
        case .unavailable(let reason): "not enforced: \(reason)"
        }
    }
}

/// Which limits this host really enforces and by which hierarchy, for the host's status.
///
/// Built once by ``CgroupDriver/detect(root:prefix:)`` from what the kernel exposes, never from
/// what was asked for: a limit listed as enforced has its interface file in place.
public struct CgroupEnforcement: Sendable, Equatable {
    /// CPU bandwidth (`cpu.max` or `cpu.cfs_quota_us`).
    public var cpu: CgroupEnforcementStatus
    /// Memory limit (`memory.max` or `memory.limit_in_bytes`).
    public var memory: CgroupEnforcementStatus
    /// Swap held at zero (`memory.swap.max` or `memory.memsw.limit_in_bytes`).
    public var swap: CgroupEnforcementStatus
    /// Task count limit (`pids.max`).
    public var pids: CgroupEnforcementStatus
    /// Killing a whole tree atomically (`cgroup.kill`, or a freezer around per-pid SIGKILL).
    /// When unavailable, kill() still SIGKILLs every listed pid until the cgroup is empty.
    public var kill: CgroupEnforcementStatus

    /// The same as strings keyed `cpu`, `memory`, `swap`, `pids`, `kill`, for status output.
    public var dictionary: [String: String] {
        [
            "cpu": cpu.description, "memory": memory.description, "swap": swap.description,
            "pids": pids.description, "kill": kill.description,
        ]
    }

    /// The limits of `limits` this host cannot enforce, each with the reason.
    public func unenforceable(_ limits: CgroupLimits) -> [CgroupResource: String] {
        var missing: [CgroupResource: String] = [:]
        for resource in limits.requested {
            if case .unavailable(let reason) = status(of: resource) { missing[resource] = reason }
        }
        return missing
    }

    func status(of resource: CgroupResource) -> CgroupEnforcementStatus {
        switch resource {
        case .cpu: cpu
        case .memory: memory
        case .swap: swap
        case .pids: pids
        }
    }
}

// MARK: - Errors

/// A cgroup operation that failed; every message names the file or directory involved.
public enum CgroupError: Error, Sendable, Equatable, CustomStringConvertible {
    /// No cgroup filesystem is mounted under the root given to detect().
    case noCgroupFilesystem(String)
    /// A project or leaf name that is not a single safe path component.
    case invalidName(String)
    /// A limit value that can never be applied (zero, negative, below the kernel's minimum).
    case invalidLimit(CgroupResource, String)
    /// A limit was requested that this host cannot enforce; nothing was created.
    case limitNotEnforceable(CgroupResource, reason: String)
    /// The cgroup directory does not exist.
    case notFound(String)
    /// A cgroup2 controller is not offered by the parent (absent from `file`, a `cgroup.controllers`).
    case controllerNotOffered(controller: String, file: String)
    /// The cgroup directory exists already (a project of the same name, or an unswept leftover).
    case alreadyExists(String)
    /// Processes were still in the cgroup when the kill deadline passed.
    case killTimedOut(path: String, remaining: [pid_t])
    /// An interface file did not hold what the kernel documents.
    case malformed(file: String, content: String)
    /// Some leftover project cgroups could not be removed (name → error); the others were.
    case sweepIncomplete(removed: [String], failures: [String: String])
    /// A system call failed; its `call` names the file.
    case system(SystemError)

    public var description: String {
        switch self {
        case .noCgroupFilesystem(let root): "no cgroup filesystem mounted under \(root)"
        case .invalidName(let name): "invalid cgroup name \"\(name)\": use letters, digits, '.', '_', '-'"
        case .invalidLimit(let resource, let why): "invalid \(resource.rawValue) limit: \(why)"
        case .limitNotEnforceable(let resource, let why): "\(resource.rawValue) limit cannot be enforced: \(why)"
        case .notFound(let path): "\(path): no such cgroup"
        case .controllerNotOffered(let controller, let file): "\(file) does not offer the \(controller) controller"
        case .alreadyExists(let path): "\(path): cgroup already exists"
        case .killTimedOut(let path, let pids): "\(path): processes \(pids) survived SIGKILL past the deadline"
        case .malformed(let file, let content): "\(file): unexpected content \"\(content.prefix(80))\""
        case .sweepIncomplete(let removed, let failures):
            "sweep removed \(removed) but failed for \(failures.sorted { $0.key < $1.key })"
        case .system(let error): error.description
        }
    }
}

/// Names become directory names under the prefix, so only one plain path component is allowed:
/// no `/`, no `..`, no leading dot, nothing a shell or the kernel would read specially.
func validateCgroupName(_ name: String) throws(CgroupError) {
    func allowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }
    let bytes = Array(name.utf8)
    guard (1...128).contains(bytes.count), bytes.allSatisfy(allowed),
        bytes[0] != UInt8(ascii: "."), bytes[0] != UInt8(ascii: "-"), !name.hasPrefix("cgroup.")
    else { throw .invalidName(name) }
}
