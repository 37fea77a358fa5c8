/// One mounted cgroup hierarchy: a cgroup2 tree, or a cgroup v1 tree with its controllers.
struct CgroupHierarchy: Sendable, Hashable, CustomStringConvertible {
    enum Version: Sendable, Hashable { case v1, v2 }

    let version: Version
    /// Where it is mounted, e.g. `/sys/fs/cgroup/memory` or `/sys/fs/cgroup/unified`.
    let mountpoint: String
    /// v1: the controllers bound to it (`cpu`, `cpuacct` when co-mounted). v2: empty; what a v2
    /// cgroup can use is read from `cgroup.controllers` instead.
    let controllers: [String]

    var description: String {
        version == .v2 ? "cgroup2 at \(mountpoint)" : "cgroup v1 \(controllers.joined(separator: ",")) at \(mountpoint)"
    }
}

/// Reads cgroup mounts from `/proc/self/mountinfo`.
///
/// Like systemd and crun, the mode follows from what is mounted rather than from a kernel
/// version: cgroup2 at the root is unified; v1 trees plus cgroup2 elsewhere under the root is
/// hybrid; v1 trees alone are legacy. mountinfo (not directory names) is the source because a
/// co-mounted `cpu,cpuacct` appears under three names (two of them symlinks) but is one hierarchy.
enum CgroupMounts {
    /// The v1 controllers Corral uses: limits (cpu, memory, pids), accounting (cpuacct) and
    /// freezing for kill (freezer). cpuset, devices, blkio and the rest are left alone.
    static let usedV1Controllers: Set<String> = ["cpu", "cpuacct", "memory", "pids", "freezer"]

    static let knownV1Controllers: Set<String> = usedV1Controllers.union([
        "cpuset", "devices", "blkio", "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc",
    ])

    /// Every cgroup mount at or below `root`, first mount per hierarchy only.
    static func parse(mountinfo: String, under root: String) -> [CgroupHierarchy] {
        var result: [CgroupHierarchy] = []
        for line in mountinfo.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            // id parent dev root mountpoint options [optional…] - fstype source superoptions
            guard let dash = fields.firstIndex(of: "-"), dash >= 6, dash + 3 < fields.count else { continue }
            let mountpoint = unescape(fields[4])
            guard mountpoint == root || mountpoint.hasPrefix(root + "/") else { continue }
            let hierarchy: CgroupHierarchy
            switch fields[dash + 1] {
            case "cgroup2":
                hierarchy = CgroupHierarchy(version: .v2, mountpoint: mountpoint, controllers: [])
            case "cgroup":
                let options = fields[dash + 3].split(separator: ",").map(String.init)
                let controllers = options.filter(knownV1Controllers.contains).sorted()
                hierarchy = CgroupHierarchy(version: .v1, mountpoint: mountpoint, controllers: controllers)
            default:
                continue
            }
            // Named v1 hierarchies (name=systemd) carry no controller; bind mounts repeat a tree.
            if hierarchy.version == .v1 && hierarchy.controllers.isEmpty { continue }
            let duplicate = result.contains {
                hierarchy.version == .v1
                    ? $0.controllers == hierarchy.controllers : $0.mountpoint == hierarchy.mountpoint
            }
            if !duplicate { result.append(hierarchy) }
        }
        return result
    }

    /// The mode, the hierarchies Corral will use (v1 first, cgroup2 last) and the cgroup2 one.
    static func select(
        from mounts: [CgroupHierarchy], root: String
    ) throws -> (mode: CgroupMode, used: [CgroupHierarchy], unified: CgroupHierarchy?) {
        if let v2 = mounts.first(where: { $0.version == .v2 && $0.mountpoint == root }) {
            return (.unified, [v2], v2)
        }
        let v2 = mounts.first { $0.version == .v2 }
        let v1 = mounts.filter { $0.version == .v1 && !usedV1Controllers.isDisjoint(with: $0.controllers) }
        if v1.isEmpty {
            // cgroup2 somewhere below the root but no controller trees: treat it as the only tree.
            if let v2 { return (.unified, [v2], v2) }
            throw CgroupError.noCgroupFilesystem(root)
        }
        if let v2 { return (.hybrid, v1 + [v2], v2) }
        return (.legacy, v1, nil)
    }

    /// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
    static func unescape(_ field: Substring) -> String {
        var bytes: [UInt8] = []
        let raw = Array(field.utf8)
        var index = 0
        while index < raw.count {
            if raw[index] == UInt8(ascii: "\\"), index + 3 < raw.count,
                let value = UInt8(String(decoding: raw[(index + 1)...(index + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                index += 4
            } else {
                bytes.append(raw[index])
                index += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
