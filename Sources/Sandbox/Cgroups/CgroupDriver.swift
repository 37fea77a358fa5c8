import Glibc

/// Creates, finds and sweeps Corral's project cgroups on this host.
///
/// One driver per host process, made once at start-up by ``detect(root:prefix:)``. Every
/// project gets `<prefix>/<project>` in each hierarchy the driver uses, carrying the project's
/// limits; jobs and the sandbox init live in leaves below it. The driver and the cgroups it
/// hands out hold only immutable state, so any task may use them concurrently.
public final class CgroupDriver: Sendable {
    let layout: CgroupLayout

    /// How this host mounts cgroups.
    public var mode: CgroupMode { layout.mode }

    /// The prefix directory in every hierarchy used, in attach order (cgroup2 last).
    public var directories: [String] { layout.hierarchies.map { layout.directory($0, layout.prefix) } }

    init(layout: CgroupLayout) { self.layout = layout }

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
        for hierarchy in used { try CgroupFiles.makeDirectories(base: hierarchy.mountpoint, relative: prefix) }
        var enableFailures: [String: String] = [:]
        if mode == .unified, let unified {
            enableFailures = enableControllers(["cpu", "memory", "pids"], from: unified.mountpoint, down: components)
        }
        let roles = CgroupRoles(
            mode: mode, used: used, unified: unified, prefix: prefix, enableFailures: enableFailures,
            useKillFile: useKillFile)
        return CgroupDriver(layout: roles.layout())
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
