import Glibc

/// What ``CgroupDriver/detect(root:prefix:)`` learned about the host: which hierarchy plays
/// which role. Immutable and shared by value by every cgroup object, so none of them needs a lock.
struct CgroupLayout: Sendable {
    let mode: CgroupMode
    /// The subtree Corral owns inside every hierarchy, e.g. `corral`.
    let prefix: String
    /// Every hierarchy a cgroup is created in and a process is attached to: v1 trees first, the
    /// cgroup2 tree last.
    let hierarchies: [CgroupHierarchy]
    /// The cgroup2 tree: the only one on unified hosts, a limit-less mirror on hybrid ones.
    let unified: CgroupHierarchy?
    /// Where `cpu.max` / `cpu.cfs_quota_us` is written; nil when CPU is not enforced.
    let cpu: CgroupHierarchy?
    /// Where CPU time is read: v1 `cpuacct.usage` or v2 `cpu.stat`.
    let cpuAccounting: CgroupHierarchy?
    let memory: CgroupHierarchy?
    /// `memory.swap.max` or `memory.memsw.limit_in_bytes`, when the kernel has it.
    let swapFile: String?
    let pids: CgroupHierarchy?
    /// v1 `freezer` or a cgroup2 tree with `cgroup.freeze`: the fallback when `cgroup.kill` is absent.
    let freezer: CgroupHierarchy?
    /// Whether `cgroup.kill` (Linux 5.14+) exists in the cgroup2 tree.
    let killFile: Bool
    let enforcement: CgroupEnforcement

    func directory(_ hierarchy: CgroupHierarchy, _ relative: String) -> String {
        hierarchy.mountpoint + "/" + relative
    }
}

/// One cgroup, present under the same relative path in every hierarchy of the layout.
///
/// ProjectCgroup and LeafCgroup are thin public faces over this; all the file work is here.
struct CgroupNode: Sendable {
    let layout: CgroupLayout
    /// Path below each mountpoint, e.g. `corral/p1/job-42`.
    let relative: String

    func directory(in hierarchy: CgroupHierarchy) -> String { layout.directory(hierarchy, relative) }

    /// The directories of this cgroup, one per hierarchy, in attach order.
    var directories: [String] { layout.hierarchies.map(directory(in:)) }

    /// Whether the cgroup exists in at least one hierarchy (a half-removed one still counts).
    var exists: Bool { directories.contains(where: CgroupFiles.exists) }

    func child(_ name: String) -> CgroupNode { CgroupNode(layout: layout, relative: relative + "/" + name) }

    // MARK: - Create, attach, list

    /// Creates the directory in every hierarchy. If any already exists, or a mkdir fails, the
    /// ones this call created are removed again so a failure changes nothing.
    func create() throws {
        var created: [String] = []
        do {
            for directory in directories {
                guard try CgroupFiles.makeDirectory(directory) else { throw CgroupError.alreadyExists(directory) }
                created.append(directory)
            }
        } catch {
            for directory in created.reversed() { try? CgroupFiles.removeDirectory(directory) }
            throw error
        }
    }

    /// Moves `pid` (its whole thread group) into this cgroup in every hierarchy.
    func attach(pid: pid_t) throws {
        guard pid > 0 else { throw CgroupError.system(SystemError("attach(\(pid))", errno: EINVAL)) }
        for directory in directories {
            let procs = directory + "/cgroup.procs"
            guard CgroupFiles.exists(directory) else { throw CgroupError.notFound(directory) }
            try CgroupFiles.write(procs, String(pid))
        }
    }

    /// Opens `cgroup.procs` in every hierarchy for a post-fork child that writes `0` to each.
    func openProcsForChild() throws -> [FileDescriptor] {
        var descriptors: [FileDescriptor] = []
        for directory in directories {
            let procs = directory + "/cgroup.procs"
            let fd: Int32
            do {
                fd = try CgroupFiles.call("open(\(procs))") { open(procs, O_WRONLY | O_CLOEXEC) }
            } catch CgroupError.system(let error) where error.errno == ENOENT {
                throw CgroupError.notFound(directory)
            }
            descriptors.append(FileDescriptor(fd))
        }
        return descriptors
    }

    /// The processes in this cgroup (and, if `recursive`, its descendants) in any hierarchy.
    ///
    /// The union over hierarchies, because a process attached to only some of them (a partial
    /// attach that failed half-way) must still be seen by kill().
    func pids(recursive: Bool) throws -> [pid_t] {
        var all = Set<pid_t>()
        for directory in directories {
            let cgroups = recursive ? try CgroupFiles.treeDeepestFirst(directory) : [directory]
            for cgroup in cgroups { all.formUnion(try CgroupFiles.pids(cgroup + "/cgroup.procs")) }
        }
        return all.sorted()
    }

    // MARK: - Remove

    /// Removes this cgroup and everything below it in every hierarchy, deepest first.
    /// Tries every directory even after a failure, then reports the first failure.
    func removeTree() throws {
        var firstError: (any Error)?
        for directory in directories {
            do {
                for path in try CgroupFiles.treeDeepestFirst(directory) { try CgroupFiles.removeDirectory(path) }
            } catch {
                firstError = firstError ?? error
            }
        }
        if let firstError { throw firstError }
    }

    /// Kills everything in the tree, then removes it; a missing cgroup is already destroyed.
    func destroy(timeout: Duration) throws {
        guard exists else { return }
        try killTree(timeout: timeout)
        try removeTree()
    }

    // MARK: - Usage

    /// The kernel's counters for this cgroup; see ``CgroupUsage`` for what a missing counter reads.
    func usage() throws -> CgroupUsage {
        guard exists else { throw CgroupError.notFound(directories.first ?? relative) }
        var usage = CgroupUsage()
        if let hierarchy = layout.cpuAccounting {
            let directory = directory(in: hierarchy)
            if hierarchy.version == .v1 {
                usage.cpuNanos = try CgroupFiles.number(directory + "/cpuacct.usage")
            } else if let usec = try keyed("usage_usec", directory + "/cpu.stat") {
                usage.cpuNanos = usec * 1_000
            }
        }
        if let hierarchy = layout.memory {
            let directory = directory(in: hierarchy)
            if hierarchy.version == .v1 {
                usage.peakMemoryBytes = try CgroupFiles.number(directory + "/memory.max_usage_in_bytes")
                usage.oomKills = Int(try keyed("oom_kill", directory + "/memory.oom_control") ?? 0)
                usage.currentMemoryBytes = try CgroupFiles.number(directory + "/memory.usage_in_bytes")
            } else {
                // memory.peak is Linux 5.19+; files are absent in a v2 leaf until the project's
                // enableSubtreeControllers() has run.
                let peak = directory + "/memory.peak"
                usage.peakMemoryBytes = CgroupFiles.exists(peak) ? try CgroupFiles.number(peak) : 0
                usage.oomKills = Int(try keyed("oom_kill", directory + "/memory.events") ?? 0)
                let current = directory + "/memory.current"
                usage.currentMemoryBytes = CgroupFiles.exists(current) ? try CgroupFiles.number(current) : 0
            }
        }
        let pidsCurrent = layout.pids.map { directory(in: $0) + "/pids.current" }
        if let pidsCurrent, CgroupFiles.exists(pidsCurrent) {
            usage.pidsCurrent = Int(try CgroupFiles.number(pidsCurrent))
        } else {
            usage.pidsCurrent = try pids(recursive: true).count
        }
        return usage
    }

    private func keyed(_ key: String, _ file: String) throws -> UInt64? {
        guard let text = try CgroupFiles.readIfPresent(file) else { return nil }
        return try CgroupFiles.keyedValue(key, in: text, file: file)
    }
}
