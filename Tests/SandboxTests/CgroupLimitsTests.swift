import Foundation
import Glibc
import Sandbox
import TestSupport
import Testing

/// Starving the host or other projects (THREATS.md): each test runs the attack for real inside a
/// project cgroup and asserts the kernel's own counters.
@Suite(.serialized) struct CgroupLimitsTests {
    /// The directory of `project` (or a leaf) in the hierarchy whose path starts with `mount`,
    /// or the only directory on a unified host.
    static func directory(_ directories: [String], _ controller: String) -> String {
        directories.first { $0.hasPrefix("/sys/fs/cgroup/\(controller)/") } ?? directories[0]
    }

    /// Creates the project, an `init`-style leaf layout, and enables subtree controllers the way
    /// the sandbox core does, so the same test is valid on v1, hybrid and unified hosts.
    static func project(
        _ host: CgroupTestHost, _ limits: CgroupLimits, leaves: [String]
    ) throws -> (ProjectCgroup, [LeafCgroup]) {
        let project = try host.driver.createProject("p", limits: limits)
        let created = try leaves.map { try project.createLeaf($0) }
        try project.enableSubtreeControllers()
        return (project, created)
    }

    @Test func limitsAreWrittenAndReadBackExactly() throws {
        try CgroupTestHost.with { host in
            let limits = CgroupLimits(cpus: 0.5, memoryBytes: 64 << 20, pids: 32)
            let project = try host.driver.createProject("p", limits: limits)
            defer { try? project.destroy() }
            let dirs = project.directories
            if host.driver.mode == .unified {
                let d = dirs[0]
                #expect(try readCgroupFile(d + "/cpu.max") == "50000 100000")
                #expect(try readCgroupFile(d + "/memory.max") == "67108864")
                #expect(try readCgroupFile(d + "/memory.swap.max") == "0")
                #expect(try readCgroupFile(d + "/pids.max") == "32")
            } else {
                #expect(try readCgroupFile(Self.directory(dirs, "cpu") + "/cpu.cfs_quota_us") == "50000")
                #expect(try readCgroupFile(Self.directory(dirs, "cpu") + "/cpu.cfs_period_us") == "100000")
                #expect(try readCgroupFile(Self.directory(dirs, "memory") + "/memory.limit_in_bytes") == "67108864")
                #expect(
                    try readCgroupFile(Self.directory(dirs, "memory") + "/memory.memsw.limit_in_bytes") == "67108864")
                #expect(try readCgroupFile(Self.directory(dirs, "pids") + "/pids.max") == "32")
            }
            #expect(project.limits == limits)
        }
    }

    @Test func forkBombIsContainedAtPidsMaxAndTheHostStaysResponsive() throws {
        try CgroupTestHost.with { host in
            let (project, leaves) = try Self.project(host, CgroupLimits(pids: 32), leaves: ["bomb"])
            defer { try? project.destroy() }
            let bomb = try ChildProcess.shell("exec /usr/bin/bash -c ':(){ :|:& };:'", gated: true)
            try leaves[0].attach(pid: bomb.pid)
            bomb.release()

            // The bomb saturates the limit and keeps retrying; it never gets past it.
            #expect(try waitUntil(seconds: 10) { try project.usage().pidsCurrent == 32 })
            var highest = 0
            for _ in 0..<20 {
                highest = max(highest, try project.usage().pidsCurrent)
                usleep(20_000)
            }
            // Reaching 32 is checked above; between samples the bomb's processes die and
            // respawn, so what matters here is that no sample is above the limit.
            #expect(highest <= 32)
            // The kernel counts refused forks in pids.events: at the limited cgroup and its
            // ancestors on cgroup2, at the forking cgroup (the leaf) on v1.
            let refusals = try [project.directories, leaves[0].directories].map { directories in
                let events = try readCgroupFile(Self.directory(directories, "pids") + "/pids.events")
                return events.split(separator: "\n").first { $0.hasPrefix("max ") }.flatMap { Int($0.dropFirst(4)) }
                    ?? 0
            }
            #expect(refusals.max()! >= 1, "pids.events max: \(refusals)")

            // The host can still fork and run a process promptly.
            let start = monotonicSeconds()
            let probe = try ChildProcess(["/bin/true"])
            #expect(probe.wait(seconds: 5) != nil)
            #expect(probe.exitCode == 0)
            #expect(monotonicSeconds() - start < 2)

            try leaves[0].kill()
            #expect(try leaves[0].pids().isEmpty)
            // Dead tasks stay charged to pids.current until reaped (the bomb by us, its orphans
            // by init), then the whole budget is back.
            #expect(bomb.wait(seconds: 5) != nil)
            #expect(try waitUntil(seconds: 10) { try project.usage().pidsCurrent == 0 })
        }
    }

    @Test func memoryHogIsOOMKilledAndItsSiblingLeafSurvives() throws {
        try CgroupTestHost.with { host in
            let limit: UInt64 = 64 << 20
            let (project, leaves) = try Self.project(
                host, CgroupLimits(memoryBytes: limit), leaves: ["sibling", "hog"])
            defer { try? project.destroy() }
            let sibling = try ChildProcess(["/bin/sleep", "1000"])
            try leaves[0].attach(pid: sibling.pid)
            let hog = try ChildProcess.shell("exec /usr/bin/python3 -c 'b = bytearray(512 << 20)'", gated: true)
            try leaves[1].attach(pid: hog.pid)
            hog.release()

            #expect(hog.wait(seconds: 60) != nil)
            #expect(hog.terminationSignal == SIGKILL)
            let usage = try leaves[1].usage()
            #expect(usage.oomKills >= 1)
            // It wanted 512 MiB and got about the limit. Not exactly at most the limit: the
            // kernel lets an OOM victim overcharge while it exits, so it can free memory
            // (seen: 64 MiB + 1.9 MiB on cgroup2); an eighth of the limit bounds that.
            #expect(usage.peakMemoryBytes <= limit + limit / 8, "peak \(usage.peakMemoryBytes)")
            #expect(usage.peakMemoryBytes > limit / 2, "peak \(usage.peakMemoryBytes)")
            #expect(try leaves[0].usage().oomKills == 0)
            #expect(isRunning(sibling.pid))
            #expect(try leaves[0].pids() == [sibling.pid])
        }
    }

    @Test func cpuHogUnderHalfACPUGetsHalfACPU() throws {
        try CgroupTestHost.with { host in
            let (project, leaves) = try Self.project(host, CgroupLimits(cpus: 0.5), leaves: ["hog"])
            defer { try? project.destroy() }
            // Other work on this shared 2-core machine (builds, debootstrap) competes with the hog
            // by weight; give the test's groups the highest weight so only the quota limits it.
            let cpuDirectories = [host.driver.directories, project.directories].map { Self.directory($0, "cpu") }
            for directory in cpuDirectories {
                let unified = host.driver.mode == .unified
                try String(unified ? "10000" : "262144").write(
                    toFile: directory + (unified ? "/cpu.weight" : "/cpu.shares"), atomically: false, encoding: .utf8)
            }
            // Two busy loops could use both cores (2.0 CPUs) unthrottled.
            let hog = try ChildProcess.shell("while :; do :; done & while :; do :; done", gated: true)
            try leaves[0].attach(pid: hog.pid)
            hog.release()
            usleep(300_000)  // let both loops start and the first periods settle

            let before = try leaves[0].usage().cpuNanos
            let start = monotonicSeconds()
            usleep(3_000_000)
            let used = Double(try leaves[0].usage().cpuNanos - before) / 1e9
            let share = used / (monotonicSeconds() - start)
            #expect(share > 0.3 && share < 0.7, "used \(share) CPUs")
            // The leaf first: it keeps running, so read after the project it could pass it.
            let leafNanos = try leaves[0].usage().cpuNanos
            #expect(try project.usage().cpuNanos >= leafNanos)
        }
    }
}
