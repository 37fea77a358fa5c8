import Foundation
import Glibc
import Testing

@testable import Sandbox

// MARK: - Fixture shared by the cgroup suites

/// A driver on the real host under a prefix no other test (or run) uses, removed afterwards.
///
/// Tests never touch Corral's real `corral` prefix or the machine's own cgroups, so they can
/// run beside a live host and never collide with each other.
struct CgroupTestHost {
    let prefix = "corral-test-" + UUID().uuidString.prefix(8).lowercased()
    let driver: CgroupDriver

    init(useKillFile: Bool = true) throws {
        let mountinfo = try KernelFile.read("/proc/self/mountinfo")
        driver = try CgroupDriver.detect(
            root: "/sys/fs/cgroup", prefix: prefix, mountinfo: mountinfo, useKillFile: useKillFile)
    }

    /// Kills and removes everything under the prefix, then the prefix itself.
    func cleanUp() {
        _ = try? driver.sweepOrphans(keeping: [])
        for directory in driver.directories { rmdir(directory) }
    }

    /// Runs `body` with a fresh host and always cleans up.
    static func with(useKillFile: Bool = true, _ body: (CgroupTestHost) throws -> Void) throws {
        let host = try CgroupTestHost(useKillFile: useKillFile)
        defer { host.cleanUp() }
        try body(host)
    }

    /// Every directory at or below the prefix in every hierarchy, the prefix dirs included.
    func directoryCount() -> Int {
        driver.directories.reduce(0) { $0 + Self.countDirectories($1) }
    }

    static func countDirectories(_ path: String) -> Int {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: path) else { return 0 }
        return 1
            + names.reduce(0) { count, name in
                var isDirectory: ObjCBool = false
                let child = path + "/" + name
                guard FileManager.default.fileExists(atPath: child, isDirectory: &isDirectory), isDirectory.boolValue
                else { return count }
                return count + countDirectories(child)
            }
    }
}

/// The mode the host really has, found independently of the driver's mountinfo parsing.
enum HostCgroups {
    static let root = "/sys/fs/cgroup"

    /// Only the root of a cgroup2 mount has `cgroup.controllers`; v1 roots and tmpfs do not.
    static func isCgroup2(_ path: String) -> Bool {
        FileManager.default.fileExists(atPath: path + "/cgroup.controllers")
    }

    static var expectedMode: CgroupMode {
        if isCgroup2(root) { return .unified }
        return isCgroup2(root + "/unified") ? .hybrid : .legacy
    }

    static var hasV1: Bool { expectedMode != .unified }
}

func readCgroupFile(_ path: String) throws -> String {
    try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
}

// MARK: - Detection

@Suite(.serialized) struct CgroupDetectTests {
    @Test func detectReportsTheHostModeAndHierarchies() throws {
        try CgroupTestHost.with { host in
            let driver = host.driver
            let p = host.prefix
            #expect(driver.mode == HostCgroups.expectedMode)
            switch HostCgroups.expectedMode {
            case .hybrid:
                #expect(
                    Set(driver.directories)
                        == Set(
                            ["cpu", "cpuacct", "memory", "freezer", "pids", "unified"].map {
                                "/sys/fs/cgroup/\($0)/\(p)"
                            }))
                #expect(driver.directories.last == "/sys/fs/cgroup/unified/\(p)")
                let e = driver.enforcement()
                #expect(
                    e.cpu
                        == .enforced(
                            directory: "/sys/fs/cgroup/cpu/\(p)", files: ["cpu.cfs_quota_us", "cpu.cfs_period_us"]))
                #expect(
                    e.memory == .enforced(directory: "/sys/fs/cgroup/memory/\(p)", files: ["memory.limit_in_bytes"]))
                #expect(
                    e.swap == .enforced(directory: "/sys/fs/cgroup/memory/\(p)", files: ["memory.memsw.limit_in_bytes"])
                )
                #expect(e.pids == .enforced(directory: "/sys/fs/cgroup/pids/\(p)", files: ["pids.max"]))
                // The cgroup2 tree of a hybrid host has no limiting controller but can kill a tree.
                #expect(e.kill == .enforced(directory: "/sys/fs/cgroup/unified/\(p)", files: ["cgroup.kill"]))
            case .unified:
                #expect(driver.directories == ["/sys/fs/cgroup/\(p)"])
                let e = driver.enforcement()
                let d = "/sys/fs/cgroup/\(p)"
                #expect(e.cpu == .enforced(directory: d, files: ["cpu.max"]))
                #expect(e.memory == .enforced(directory: d, files: ["memory.max"]))
                #expect(e.pids == .enforced(directory: d, files: ["pids.max"]))
                #expect(e.kill == .enforced(directory: d, files: ["cgroup.kill"]))
                let delegated = try readCgroupFile(d + "/cgroup.subtree_control")
                #expect(delegated.split(separator: " ").sorted() == ["cpu", "memory", "pids"])
            case .legacy:
                #expect(!driver.directories.isEmpty)
            }
            for directory in driver.directories { #expect(CgroupFiles.exists(directory)) }
            #expect(driver.enforcement().dictionary.keys.sorted() == ["cpu", "kill", "memory", "pids", "swap"])
        }
    }

    @Test func mountinfoOfAHybridHost() {
        let mountinfo = """
            31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
            32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
            33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
            34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
            35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
            39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
            40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
            41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
            """
        let mounts = CgroupMounts.parse(mountinfo: mountinfo, under: "/sys/fs/cgroup")
        #expect(
            mounts.map(\.mountpoint)
                == ["cpu", "cpuacct", "cpuset", "memory", "pids", "unified"].map { "/sys/fs/cgroup/" + $0 })
        let selected = try? CgroupMounts.select(from: mounts, root: "/sys/fs/cgroup")
        #expect(selected?.mode == .hybrid)
        // cpuset is mounted but not used: a v1 cpuset child needs cpus/mems set before any attach.
        #expect(
            selected?.used.map(\.mountpoint)
                == ["cpu", "cpuacct", "memory", "pids", "unified"].map { "/sys/fs/cgroup/" + $0 })
    }

    @Test func mountinfoOfALegacyHostWithCoMountedCpuAndAnEscapedPath() throws {
        let mountinfo = """
            25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
            26 24 0:23 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
            27 24 0:24 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
            28 24 0:25 / /sys/fs/cgroup/my\\040pids rw shared:11 - cgroup cgroup rw,pids
            29 24 0:26 / /mnt/elsewhere rw - cgroup cgroup rw,freezer
            """
        let mounts = CgroupMounts.parse(mountinfo: mountinfo, under: "/sys/fs/cgroup")
        #expect(
            mounts.map(\.mountpoint) == [
                "/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/my pids",
            ])
        #expect(mounts.first?.controllers == ["cpu", "cpuacct"])
        #expect(try CgroupMounts.select(from: mounts, root: "/sys/fs/cgroup").mode == .legacy)
    }

    @Test func mountinfoOfAUnifiedHost() throws {
        let mountinfo = "24 30 0:21 / /sys/fs/cgroup rw,nosuid,nodev shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
        let mounts = CgroupMounts.parse(mountinfo: mountinfo, under: "/sys/fs/cgroup")
        let selected = try CgroupMounts.select(from: mounts, root: "/sys/fs/cgroup")
        #expect(selected.mode == .unified)
        #expect(selected.used.map(\.mountpoint) == ["/sys/fs/cgroup"])
        #expect(throws: CgroupError.noCgroupFilesystem("/sys/fs/cgroup")) {
            try CgroupMounts.select(from: [], root: "/sys/fs/cgroup")
        }
    }

    @Test(arguments: [
        "", ".", "..", "a/b", "../escape", ".hidden", "-flag", "cgroup.procs", "x y", "ümlaut",
        String(repeating: "a", count: 129),
    ])
    func pathTraversalAndOddNamesAreRefusedAndCreateNothing(name: String) throws {
        try CgroupTestHost.with { host in
            #expect(throws: CgroupError.invalidName(name)) {
                try host.driver.createProject(name, limits: CgroupLimits())
            }
            #expect(host.directoryCount() == host.driver.directories.count)
        }
    }

    @Test func invalidLimitsAreRefusedBeforeAnythingIsCreated() throws {
        try CgroupTestHost.with { host in
            let bad: [(CgroupLimits, CgroupResource)] = [
                (CgroupLimits(cpus: 0), .cpu), (CgroupLimits(cpus: -1), .cpu), (CgroupLimits(cpus: .nan), .cpu),
                (CgroupLimits(cpus: 0.005), .cpu), (CgroupLimits(memoryBytes: 0), .memory),
                (CgroupLimits(pids: 0), .pids),
            ]
            for (limits, resource) in bad {
                do {
                    _ = try host.driver.createProject("p", limits: limits)
                    Issue.record("\(limits) was accepted")
                } catch CgroupError.invalidLimit(let got, _) {
                    #expect(got == resource)
                }
            }
            #expect(host.directoryCount() == host.driver.directories.count)
        }
    }

    @Test(.enabled(if: HostCgroups.hasV1, "hiding a controller needs separate cgroup v1 hierarchies"))
    func aLimitTheHostCannotEnforceIsATypedErrorNotASilentPass() throws {
        let mountinfo = try KernelFile.read("/proc/self/mountinfo")
            .split(separator: "\n").filter { !$0.hasSuffix(",pids") }.joined(separator: "\n")
        let prefix = "corral-test-" + UUID().uuidString.prefix(8).lowercased()
        let driver = try CgroupDriver.detect(root: "/sys/fs/cgroup", prefix: prefix, mountinfo: mountinfo)
        defer { for directory in driver.directories { rmdir(directory) } }
        #expect(driver.enforcement().pids == .unavailable(reason: "no cgroup v1 pids hierarchy is mounted"))
        #expect(throws: CgroupError.limitNotEnforceable(.pids, reason: "no cgroup v1 pids hierarchy is mounted")) {
            try driver.createProject("p", limits: CgroupLimits(cpus: 1, pids: 10))
        }
        #expect(try driver.projectNames().isEmpty)
        #expect(!driver.directories.contains { $0.hasPrefix("/sys/fs/cgroup/pids/") })
    }

    @Test func creatingAProjectTwiceFailsAndLeavesTheFirstIntact() throws {
        try CgroupTestHost.with { host in
            let project = try host.driver.createProject("p", limits: CgroupLimits(pids: 7))
            #expect(throws: CgroupError.alreadyExists(project.directories[0])) {
                try host.driver.createProject("p", limits: CgroupLimits())
            }
            let pidsDirectory =
                project.directories.first { $0.hasPrefix("/sys/fs/cgroup/pids/") } ?? project.directories[0]
            #expect(try readCgroupFile(pidsDirectory + "/pids.max") == "7")
            try project.destroy()
        }
    }
}
