import Glibc

/// A project's cgroup: carries the project's limits; the sandbox init and each job run in
/// leaves below it, so one job's OOM or kill never touches its siblings.
///
/// Lifecycle on a unified host, where a cgroup with enabled controllers may not hold
/// processes itself ("no internal processes"):
/// 1. ``attach(pid:)`` the sandbox init into the project (or straight into a leaf),
/// 2. ``createLeaf(_:)`` `init` and attach the init there,
/// 3. ``enableSubtreeControllers()``, after which jobs get leaves with their own accounting.
/// On v1 and hybrid hosts step 3 does nothing and the order does not matter.
public final class ProjectCgroup: Sendable {
    /// The project's name, which is also its directory name under the prefix.
    public let name: String
    /// The limits applied at creation (empty for a project reopened with ``CgroupDriver/openProject(_:)``).
    public let limits: CgroupLimits
    let node: CgroupNode

    init(name: String, limits: CgroupLimits, node: CgroupNode) {
        self.name = name
        self.limits = limits
        self.node = node
    }

    /// The project's directory in every hierarchy, in attach order (cgroup2 last).
    public var directories: [String] { node.directories }

    /// Moves `pid` into the project cgroup itself, in every hierarchy.
    ///
    /// On a unified host this fails with EBUSY once ``enableSubtreeControllers()`` has run; use
    /// a leaf then.
    public func attach(pid: pid_t) throws { try node.attach(pid: pid) }

    /// Creates `node` with `limits`, refusing before anything exists a limit this host cannot
    /// enforce; on any failure nothing is left behind.
    static func make(name: String, limits: CgroupLimits, node: CgroupNode) throws -> ProjectCgroup {
        try limits.validate()
        let missing = node.layout.enforcement.unenforceable(limits)
        if let first = limits.requested.first(where: { missing[$0] != nil }) {
            throw CgroupError.limitNotEnforceable(first, reason: missing[first]!)
        }
        try node.create()
        do {
            try CgroupLimitWriter(layout: node.layout).apply(limits, to: node)
        } catch {
            try? node.removeTree()
            throw error
        }
        return ProjectCgroup(name: name, limits: limits, node: node)
    }

    /// Creates a group below this one that carries `limits` and has leaves of its own.
    ///
    /// A sandbox puts its jobs in such a group and its init beside it, so an OOM in the
    /// jobs' group can only choose among job processes: the init, which holds the sandbox's
    /// namespaces, is never a candidate. On cgroup2, enable this cgroup's subtree controllers
    /// first (after its processes moved to leaves), or the limits cannot be written.
    public func createGroup(_ name: String, limits: CgroupLimits) throws -> ProjectCgroup {
        try validateCgroupName(name)
        return try Self.make(name: self.name + "/" + name, limits: limits, node: node.child(name))
    }

    /// Creates a leaf (e.g. `init`, `job-42`) in every hierarchy.
    ///
    /// Where memory accounting reaches the leaf (cgroup2 after enableSubtreeControllers()),
    /// sets `memory.oom.group=1`, so an OOM kills the whole job, not a random one of its processes.
    public func createLeaf(_ name: String) throws -> LeafCgroup {
        try validateCgroupName(name)
        let leaf = node.child(name)
        try leaf.create()
        do {
            try setOOMGroup(leaf)
        } catch {
            try? leaf.removeTree()
            throw error
        }
        return LeafCgroup(name: name, project: self.name, node: leaf)
    }

    /// Creates a leaf (e.g. `own-3`) that carries `limits` itself, beside the other groups
    /// and leaves: a job in it is held to these limits, not to those of a group it shares.
    /// Needs this cgroup's subtree controllers enabled on cgroup2, like ``createGroup(_:limits:)``.
    public func createLimitedLeaf(_ name: String, limits: CgroupLimits) throws -> LeafCgroup {
        try validateCgroupName(name)
        let group = try Self.make(name: self.name + "/" + name, limits: limits, node: node.child(name))
        do {
            try setOOMGroup(group.node)
        } catch {
            try? group.node.removeTree()
            throw error
        }
        return LeafCgroup(name: name, project: self.name, node: group.node)
    }

    /// Opens an existing leaf, e.g. to kill a job after a restart.
    public func leaf(_ name: String) throws -> LeafCgroup {
        try validateCgroupName(name)
        let leaf = node.child(name)
        guard leaf.exists else { throw CgroupError.notFound(leaf.directories.first ?? leaf.relative) }
        return LeafCgroup(name: name, project: self.name, node: leaf)
    }

    /// The names of the leaves that exist in any hierarchy.
    public func leafNames() throws -> [String] {
        var names = Set<String>()
        for directory in directories { names.formUnion(try CgroupFiles.subdirectories(directory)) }
        return names.sorted()
    }

    /// cgroup2: writes `+cpu +memory +pids` (those the driver enforces) to the project's
    /// `cgroup.subtree_control`, giving each leaf its own accounting and `memory.oom.group`.
    /// Call it after every process has left the project cgroup for a leaf. No-op on v1/hybrid,
    /// where every hierarchy accounts per cgroup already.
    public func enableSubtreeControllers() throws {
        guard node.layout.mode == .unified, let unified = node.layout.unified else { return }
        let directory = node.directory(in: unified)
        let enforced: [(String, CgroupHierarchy?)] = [
            ("cpu", node.layout.cpu), ("memory", node.layout.memory), ("pids", node.layout.pids),
        ]
        for (controller, hierarchy) in enforced where hierarchy != nil {
            try CgroupDriver.enableController(controller, in: directory)
        }
        for name in try leafNames() { try setOOMGroup(node.child(name)) }
    }

    private func setOOMGroup(_ leaf: CgroupNode) throws {
        guard let memory = node.layout.memory, memory.version == .v2 else { return }
        let file = leaf.directory(in: memory) + "/memory.oom.group"
        if CgroupFiles.exists(file) { try CgroupFiles.write(file, "1") }
    }

    /// Counters for the whole project (all leaves included).
    public func usage() throws -> CgroupUsage { try node.usage() }

    /// Every process in the project and its leaves.
    public func pids() throws -> [pid_t] { try node.pids(recursive: true) }

    /// Kills every process in the project and its leaves, waiting up to `timeout` until none is left.
    /// Blocks the calling thread.
    public func kill(timeout: Duration = .seconds(2)) throws { try node.killTree(timeout: timeout) }

    /// Kills anything left, then removes the leaves and the project in every hierarchy.
    /// Idempotent: destroying a destroyed project does nothing. Blocks up to `timeout`.
    public func destroy(timeout: Duration = .seconds(2)) throws { try node.destroy(timeout: timeout) }
}

/// A leaf cgroup below a project: one job, or the sandbox init.
public final class LeafCgroup: Sendable {
    /// The leaf's name, e.g. `job-42`.
    public let name: String
    /// The name of the project it belongs to.
    public let project: String
    let node: CgroupNode

    init(name: String, project: String, node: CgroupNode) {
        self.name = name
        self.project = project
        self.node = node
    }

    /// The leaf's directory in every hierarchy, in attach order (cgroup2 last).
    public var directories: [String] { node.directories }

    /// Moves `pid` (its whole thread group) into this leaf in every hierarchy.
    public func attach(pid: pid_t) throws { try node.attach(pid: pid) }

    /// Opens this leaf's `cgroup.procs` in every hierarchy, `O_WRONLY | O_CLOEXEC`.
    ///
    /// A post-fork child writes `0` to each descriptor to move itself in before its first
    /// instruction of the job, so no fork the job makes can escape the leaf. The parent keeps
    /// the descriptors alive until the child has done so.
    public func openProcsForChild() throws -> [FileDescriptor] { try node.openProcsForChild() }

    /// Kills the leaf's whole tree, setsid'd and double-forked daemons included, and waits up
    /// to `timeout` until `cgroup.procs` is empty everywhere. Blocks the calling thread.
    ///
    /// Uses `cgroup.kill` where the cgroup2 tree has it (also on hybrid hosts), else freezes,
    /// SIGKILLs every pid and thaws. Throws ``CgroupError/killTimedOut(path:remaining:)`` if
    /// processes remain at the deadline. A leaf that no longer exists has nothing to kill.
    public func kill(timeout: Duration = .seconds(2)) throws { try node.killTree(timeout: timeout) }

    /// The leaf's counters: CPU time, peak memory, OOM kills, current tasks.
    public func usage() throws -> CgroupUsage { try node.usage() }

    /// The processes in the leaf (and anything below it), in any hierarchy.
    public func pids() throws -> [pid_t] { try node.pids(recursive: true) }

    /// Kills anything left and removes the leaf in every hierarchy. Idempotent.
    public func destroy(timeout: Duration = .seconds(2)) throws { try node.destroy(timeout: timeout) }
}
