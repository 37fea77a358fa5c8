import Glibc

/// Creates, finds and sweeps Corral's project cgroups on this host.
///
/// One driver per host process, made once at start-up by ``detect(root:prefix:)``. Every
/// project gets `<prefix>/<project>` in each hierarchy the driver uses, carrying the project's
/// limits; jobs and the sandbox init live in leaves below it. The driver and the cgroups it
/// hands out hold only immutable state, so any task may use them concurrently.
public final class CgroupDriver: Sendable {
    let layout: CgroupLayout
    /// The parents of a multi-level prefix (`corral` of `corral/host-a`) that ``detect(root:prefix:)``
    /// created, as full paths, top down: the only parents ``removePrefix()`` may take with
    /// it. A parent that was already there was set up by someone else (a delegated cgroup,
    /// another host's) and stays.
    let createdParents: [String]

    /// How this host mounts cgroups.
    public var mode: CgroupMode { layout.mode }

    /// The prefix directory in every hierarchy used, in attach order (cgroup2 last).
    public var directories: [String] { layout.hierarchies.map { layout.directory($0, layout.prefix) } }

    init(layout: CgroupLayout, createdParents: [String] = []) {
        self.layout = layout
        self.createdParents = createdParents
    }

    /// Which limits are enforced and by which hierarchy; never more than the kernel exposes.
    public func enforcement() -> CgroupEnforcement { layout.enforcement }

    // MARK: - Detection

    /// Finds the cgroup hierarchies mounted under `root` and prepares `prefix` in each.
    ///
    /// Creates `<hierarchy>/<prefix>` where missing. On a unified host it also enables the cpu,
    /// memory and pids controllers in `cgroup.subtree_control` from the root down to the
    /// prefix, so project cgroups get their interface files; a controller that cannot be
    /// enabled is reported by ``enforcement()`` rather than failing detection.
    ///
    /// - Parameters:
    ///   - root: where cgroup filesystems are mounted.
    ///   - prefix: Corral's subtree, one or more `/`-separated names, e.g. `corral`.
    public static func detect(root: String = "/sys/fs/cgroup", prefix: String = "corral") throws -> CgroupDriver {
        try detect(root: root, prefix: prefix, mountinfo: try CgroupFiles.read("/proc/self/mountinfo"))
    }

    /// `useKillFile: false` makes the driver ignore `cgroup.kill`, so tests can drive the
    /// freezer path on a host that has both.
    static func detect(root: String, prefix: String, mountinfo: String, useKillFile: Bool = true) throws -> CgroupDriver
    {
        let components = prefix.split(separator: "/").map(String.init)
        guard !components.isEmpty else { throw CgroupError.invalidName(prefix) }
        for component in components { try validateCgroupName(component) }
        let prefix = components.joined(separator: "/")

        let mounts = CgroupMounts.parse(mountinfo: mountinfo, under: root)
        let (mode, used, unified) = try CgroupMounts.select(from: mounts, root: root)
        var createdParents: [String] = []
        for hierarchy in used {
            let created = try CgroupFiles.makeDirectories(base: hierarchy.mountpoint, relative: prefix)
            createdParents += created.filter { $0 != hierarchy.mountpoint + "/" + prefix }
        }
        var enableFailures: [String: String] = [:]
        if mode == .unified, let unified {
            enableFailures = enableControllers(["cpu", "memory", "pids"], from: unified.mountpoint, down: components)
        }
        let roles = CgroupRoles(
            mode: mode, used: used, unified: unified, prefix: prefix, enableFailures: enableFailures,
            useKillFile: useKillFile)
        return CgroupDriver(layout: roles.layout(), createdParents: createdParents)
    }

    /// Enables controllers level by level from `root` to `root/components…`; returns the
    /// failures (controller → why). The root cgroup may hold processes and still delegate;
    /// levels below must be empty, which Corral's own prefix directories are.
    private static func enableControllers(
        _ controllers: [String], from root: String, down components: [String]
    ) -> [String: String] {
        var failures: [String: String] = [:]
        // The root and every prefix level, the prefix itself included: project cgroups are its
        // children, so its own subtree_control is what gives them cpu.max and the rest.
        var levels = [root]
        for component in components { levels.append(levels[levels.count - 1] + "/" + component) }
        for level in levels {
            for controller in controllers where failures[controller] == nil {
                do {
                    try enableController(controller, in: level)
                } catch {
                    failures[controller] = "\(error)"
                }
            }
        }
        return failures
    }

    /// Writes `+controller` to `directory/cgroup.subtree_control`, one controller per write so one
    /// refusal does not cancel the others.
    ///
    /// Right after the last task left a cgroup the kernel may still answer EBUSY for a moment
    /// (crun saw the same), so EBUSY is retried every 1 ms for up to 1 s.
    static func enableController(_ controller: String, in directory: String) throws {
        let offers = directory + "/cgroup.controllers"
        let offered = CgroupFiles.trim(try CgroupFiles.read(offers)).split(separator: " ")
        guard offered.contains(Substring(controller)) else {
            throw CgroupError.controllerNotOffered(controller: controller, file: offers)
        }
        let file = directory + "/cgroup.subtree_control"
        if CgroupFiles.trim(try CgroupFiles.read(file)).split(separator: " ").contains(Substring(controller)) {
            return
        }
        var attempts = 0
        while true {
            do {
                return try CgroupFiles.write(file, "+" + controller)
            } catch CgroupError.system(let error) where error.errno == EBUSY && attempts < 1_000 {
                attempts += 1
                usleep(1_000)
            }
        }
    }

    // MARK: - Projects

    /// Creates the project cgroup `<prefix>/<name>` in every hierarchy and applies `limits`.
    ///
    /// Throws ``CgroupError/limitNotEnforceable(_:reason:)`` before creating anything when a
    /// requested limit cannot be enforced here, ``CgroupError/alreadyExists(_:)`` when the
    /// cgroup exists (sweep leftovers first). On any failure nothing is left behind.
    public func createProject(_ name: String, limits: CgroupLimits) throws -> ProjectCgroup {
        try validateCgroupName(name)
        return try ProjectCgroup.make(
            name: name, limits: limits, node: CgroupNode(layout: layout, relative: layout.prefix + "/" + name))
    }

    /// Opens an existing project cgroup (after a restart, to keep a live sandbox's cgroup).
    /// Its limits read as unknown (`CgroupLimits()`): the files are the truth.
    public func openProject(_ name: String) throws -> ProjectCgroup {
        try validateCgroupName(name)
        let node = CgroupNode(layout: layout, relative: layout.prefix + "/" + name)
        guard node.exists else { throw CgroupError.notFound(node.directories.first ?? node.relative) }
        return ProjectCgroup(name: name, limits: CgroupLimits(), node: node)
    }

    /// The project cgroups that exist under the prefix in any hierarchy.
    public func projectNames() throws -> [String] {
        var names = Set<String>()
        for directory in directories { names.formUnion(try CgroupFiles.subdirectories(directory)) }
        return names.sorted()
    }

    /// Start-up sweep: kills and removes every project cgroup under the prefix whose name is
    /// not in `keeping` (left by a previous run that crashed), and returns their names.
    ///
    /// Tries every leftover; if some cannot be removed, throws
    /// ``CgroupError/sweepIncomplete(removed:failures:)`` naming both lists.
    @discardableResult
    public func sweepOrphans(keeping: Set<String>) throws -> [String] {
        var removed: [String] = []
        var failures: [String: String] = [:]
        for name in try projectNames() where !keeping.contains(name) {
            do {
                try CgroupNode(layout: layout, relative: layout.prefix + "/" + name).destroy(timeout: .seconds(2))
                removed.append(name)
            } catch {
                failures[name] = "\(error)"
            }
        }
        if !failures.isEmpty { throw CgroupError.sweepIncomplete(removed: removed, failures: failures) }
        return removed
    }
}

// MARK: - Clean stop

extension CgroupDriver {
    /// Removes the prefix's directories in every hierarchy, deepest first, and the parents of
    /// the prefix that ``detect(root:prefix:)`` created: what a host that stops cleanly
    /// leaves behind once its sandboxes are destroyed.
    ///
    /// Nothing is killed. A directory that still holds a process, or a child that stayed,
    /// stays (its rmdir would be EBUSY) for the next start's ``sweepOrphans(keeping:)``; one
    /// already gone counts as removed. A parent another prefix still uses stays too.
    ///
    /// Only for a driver no other host in the process shares: a host creating a project
    /// under a prefix removed meanwhile would fail.
    ///
    /// - Returns: the directories that stayed, deepest first; empty when everything went.
    @discardableResult
    public func removePrefix() -> [String] {
        var stayed: [String] = []
        for directory in directories {
            let tree = (try? CgroupFiles.treeDeepestFirst(directory)) ?? [directory]
            for path in tree where !Self.removeAtStop(path) { stayed.append(path) }
        }
        for parent in createdParents.reversed() where !Self.removeAtStop(parent) { stayed.append(parent) }
        return stayed
    }

    /// Removes one directory of the prefix at a clean stop; whether it is gone.
    ///
    /// One that still has a child or a process is not even tried (rmdir would answer EBUSY,
    /// and a retry could not change that); an empty one gets
    /// ``CgroupFiles/removeDirectory(_:)``'s retries, for a cgroup whose last task the
    /// kernel is still tearing down.
    private static func removeAtStop(_ path: String) -> Bool {
        if !((try? CgroupFiles.subdirectories(path)) ?? []).isEmpty { return false }
        if !((try? CgroupFiles.pids(path + "/cgroup.procs")) ?? []).isEmpty { return false }
        do {
            try CgroupFiles.removeDirectory(path)
            return true
        } catch {
            return false
        }
    }
}
