import Glibc

/// Decides which hierarchy enforces what, from the interface files that exist in the prefix
/// directories detect() just prepared. Only a file the kernel actually created counts.
struct CgroupRoles {
    let mode: CgroupMode
    let used: [CgroupHierarchy]
    let unified: CgroupHierarchy?
    let prefix: String
    /// Controllers that could not be enabled on a unified host, and why.
    let enableFailures: [String: String]
    let useKillFile: Bool

    private func directory(_ hierarchy: CgroupHierarchy) -> String { hierarchy.mountpoint + "/" + prefix }

    /// On v1 the controller's own hierarchy; on a unified host the cgroup2 tree, if the controller
    /// is enabled in the prefix's `cgroup.subtree_control` (so project cgroups get its files).
    private func hierarchy(for controller: String) -> CgroupHierarchy? {
        if mode == .unified {
            guard let unified else { return nil }
            let file = directory(unified) + "/cgroup.subtree_control"
            let enabled = (try? CgroupFiles.read(file)).map { CgroupFiles.trim($0).split(separator: " ") } ?? []
            return enabled.contains(Substring(controller)) ? unified : nil
        }
        return used.first { $0.version == .v1 && $0.controllers.contains(controller) }
    }

    /// `.enforced` when `hierarchy` exists and `files` exist in its prefix directory.
    private func status(_ controller: String, _ hierarchy: CgroupHierarchy?, _ files: [String])
        -> CgroupEnforcementStatus
    {
        guard let hierarchy else {
            if let failure = enableFailures[controller] { return .unavailable(reason: failure) }
            return .unavailable(
                reason: mode == .unified
                    ? "\(controller) is not enabled in \(unified.map(directory) ?? prefix)/cgroup.subtree_control"
                    : "no cgroup v1 \(controller) hierarchy is mounted")
        }
        let base = directory(hierarchy)
        for file in files where !CgroupFiles.exists(base + "/" + file) {
            return .unavailable(reason: "\(base)/\(file) does not exist")
        }
        return .enforced(directory: base, files: files)
    }

    func layout() -> CgroupLayout {
        let v2 = mode == .unified
        let cpuHierarchy = hierarchy(for: "cpu")
        let cpu = status("cpu", cpuHierarchy, v2 ? ["cpu.max"] : ["cpu.cfs_quota_us", "cpu.cfs_period_us"])
        let memoryHierarchy = hierarchy(for: "memory")
        let memory = status("memory", memoryHierarchy, [v2 ? "memory.max" : "memory.limit_in_bytes"])
        let swapName = v2 ? "memory.swap.max" : "memory.memsw.limit_in_bytes"
        var swap = status("memory", memoryHierarchy, [swapName])
        if case .unavailable(let reason) = swap, memory.isEnforced {
            // Without the swap file the memory limit covers RAM only; say whether that matters.
            swap = .unavailable(reason: reason + (Self.swapIsActive ? "; swap is active" : "; no swap is active"))
        }
        let pidsHierarchy = hierarchy(for: "pids")
        let pids = status("pids", pidsHierarchy, ["pids.max"])

        let killFile = useKillFile && unified.map { CgroupFiles.exists(directory($0) + "/cgroup.kill") } == true
        let freezer = freezerHierarchy()
        let kill: CgroupEnforcementStatus
        if let unified, killFile {
            kill = .enforced(directory: directory(unified), files: ["cgroup.kill"])
        } else if let freezer {
            kill = .enforced(
                directory: directory(freezer), files: [freezer.version == .v1 ? "freezer.state" : "cgroup.freeze"])
        } else {
            kill = .unavailable(
                reason: "no cgroup.kill and no freezer: kill() SIGKILLs each listed pid until none is left")
        }

        return CgroupLayout(
            mode: mode, prefix: prefix, hierarchies: used, unified: unified,
            cpu: cpu.isEnforced ? cpuHierarchy : nil, cpuAccounting: cpuAccounting(),
            memory: memory.isEnforced ? memoryHierarchy : nil, swapFile: swap.isEnforced ? swapName : nil,
            pids: pids.isEnforced ? pidsHierarchy : nil, freezer: freezer, killFile: killFile,
            enforcement: CgroupEnforcement(cpu: cpu, memory: memory, swap: swap, pids: pids, kill: kill))
    }

    /// v1 `freezer`, else a cgroup2 tree with `cgroup.freeze` (Linux 5.2+).
    private func freezerHierarchy() -> CgroupHierarchy? {
        if let v1 = used.first(where: { $0.version == .v1 && $0.controllers.contains("freezer") }),
            CgroupFiles.exists(directory(v1) + "/freezer.state")
        {
            return v1
        }
        if let unified, CgroupFiles.exists(directory(unified) + "/cgroup.freeze") { return unified }
        return nil
    }

    /// v1 `cpuacct.usage`, else cgroup2 `cpu.stat`, whose `usage_usec` every cgroup2 cgroup has
    /// even without the cpu controller.
    private func cpuAccounting() -> CgroupHierarchy? {
        if let v1 = used.first(where: { $0.version == .v1 && $0.controllers.contains("cpuacct") }),
            CgroupFiles.exists(directory(v1) + "/cpuacct.usage")
        {
            return v1
        }
        if let unified, CgroupFiles.exists(directory(unified) + "/cpu.stat") { return unified }
        return nil
    }

    /// Whether any swap device is in use (`/proc/swaps` lists more than its header).
    static var swapIsActive: Bool {
        ((try? CgroupFiles.read("/proc/swaps")) ?? "").split(whereSeparator: \.isNewline).count > 1
    }
}

/// Writes a project's limits in the dialect of the hierarchy that enforces each one.
struct CgroupLimitWriter {
    let layout: CgroupLayout

    func apply(_ limits: CgroupLimits, to node: CgroupNode) throws {
        if let quota = try limits.cpuQuotaMicros(), let hierarchy = layout.cpu {
            let directory = node.directory(in: hierarchy)
            let period = CgroupLimits.cpuPeriodMicros
            if hierarchy.version == .v2 {
                try CgroupFiles.write(directory + "/cpu.max", "\(quota) \(period)")
            } else {
                try CgroupFiles.write(directory + "/cpu.cfs_period_us", String(period))
                try CgroupFiles.write(directory + "/cpu.cfs_quota_us", String(quota))
            }
        }
        if let bytes = limits.memoryBytes, let hierarchy = layout.memory {
            let directory = node.directory(in: hierarchy)
            if hierarchy.version == .v2 {
                try CgroupFiles.write(directory + "/memory.max", String(bytes))
                if let swap = layout.swapFile { try CgroupFiles.write(directory + "/" + swap, "0") }
            } else {
                // v1 insists memsw ≥ limit at every step: on a fresh cgroup both are unlimited, so
                // the memory limit goes first, then memsw equal to it (which means zero swap).
                try CgroupFiles.write(directory + "/memory.limit_in_bytes", String(bytes))
                if let swap = layout.swapFile { try CgroupFiles.write(directory + "/" + swap, String(bytes)) }
            }
        }
        if let pids = limits.pids, let hierarchy = layout.pids {
            try CgroupFiles.write(node.directory(in: hierarchy) + "/pids.max", String(pids))
        }
    }
}
