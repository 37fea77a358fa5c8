import Foundation
import Glibc
import Sandbox
import TestSupport
import Testing

/// Escaping a kill, leaking cgroups, and landing in the wrong cgroup.
@Suite(.serialized) struct CgroupLifecycleTests {
    /// A daemon that escaped its job the classic ways: its own session (setsid), reparented
    /// away from the job (double fork), and deaf to SIGTERM.
    static let daemonScript = """
        trap '' TERM
        setsid /bin/sh -c '/bin/sleep 1000 & /bin/sleep 1000 &'
        exec /bin/sleep 1000
        """

    static func killsDaemonTree(_ host: CgroupTestHost) throws {
        let project = try host.driver.createProject("p", limits: CgroupLimits(pids: 64))
        defer { try? project.destroy() }
        let leaf = try project.createLeaf("job-1")
        try project.enableSubtreeControllers()
        let job = try ChildProcess.shell(Self.daemonScript, gated: true)
        try leaf.attach(pid: job.pid)
        job.release()

        // Three sleeps: the job itself and two orphans in a new session.
        var pids: [pid_t] = []
        #expect(
            try waitUntil(seconds: 5) {
                pids = try leaf.pids()
                return pids.count == 3 && pids.allSatisfy { ProcStat(pid: $0)?.command == "sleep" }
            })
        let orphans = pids.filter { $0 != job.pid }
        #expect(orphans.count == 2)
        for pid in orphans {
            let stat = ProcStat(pid: pid)
            #expect(stat?.parent != job.pid, "double-forked: not the job's child")
            #expect(stat?.session != getsid(0), "setsid: not in the runner's session")
            #expect((ProcStat.ignoredSignals(pid: pid) ?? 0) & (1 << (UInt64(SIGTERM) - 1)) != 0, "ignores SIGTERM")
        }

        let start = monotonicSeconds()
        try leaf.kill()
        let took = monotonicSeconds() - start
        #expect(took < 1, "kill took \(took) s")
        #expect(try leaf.pids().isEmpty)
        for directory in leaf.directories {
            #expect(try readCgroupFile(directory + "/cgroup.procs").isEmpty, "\(directory)")
        }
        for pid in pids { #expect(!isRunning(pid), "pid \(pid) still runs") }
        #expect(job.wait(seconds: 5) != nil)
        #expect(job.terminationSignal == SIGKILL)
        // The orphans are reaped by the machine's init; none may linger as a live process.
        #expect(waitUntil(seconds: 10) { pids.allSatisfy { ProcStat(pid: $0) == nil } })
    }

    @Test func killTakesSetsidDoubleForkedDaemonsThatIgnoreSIGTERM() throws {
        try CgroupTestHost.with { try Self.killsDaemonTree($0) }
    }

    @Test func killWorksThroughTheFreezerWhenCgroupKillIsMissing() throws {
        try CgroupTestHost.with(useKillFile: false) { host in
            guard case .enforced(_, let files) = host.driver.enforcement().kill else {
                Issue.record("no freezer on this host: \(host.driver.enforcement().kill)")
                return
            }
            #expect(files == [host.driver.mode == .unified ? "cgroup.freeze" : "freezer.state"])
            try Self.killsDaemonTree(host)
        }
    }

    @Test func aChildWritingZeroToTheOpenedProcsFilesLandsInTheLeafEverywhere() throws {
        try CgroupTestHost.with { host in
            let project = try host.driver.createProject("p", limits: CgroupLimits())
            defer { try? project.destroy() }
            let leaf = try project.createLeaf("job-7")
            let fds = try leaf.openProcsForChild()
            #expect(fds.count == host.driver.directories.count)
            for fd in fds { #expect(fcntl(fd.raw, F_GETFD) & FD_CLOEXEC != 0) }
            let writes = (0..<fds.count).map { "echo 0 >&\($0 + 3)" }.joined(separator: "; ")
            let child = try ChildProcess.shell("\(writes); exec /bin/sleep 1000", inheritedFDs: fds.map(\.raw))
            // Once it runs sleep, the shell has done every write (the first one alone already
            // puts it in the union that pids() reports).
            #expect(
                try waitUntil(seconds: 5) {
                    try leaf.pids() == [child.pid] && ProcStat(pid: child.pid)?.command == "sleep"
                })

            // /proc/<pid>/cgroup: every hierarchy the driver uses names the leaf.
            let expected = "/\(host.prefix)/p/job-7"
            let lines = try String(contentsOfFile: "/proc/\(child.pid)/cgroup", encoding: .utf8).split(separator: "\n")
            let used: Set<String> = ["cpu", "cpuacct", "memory", "pids", "freezer", ""]
            let ours = lines.map { $0.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false) }.filter {
                let controllers = $0[1].isEmpty ? [""] : $0[1].split(separator: ",").map(String.init)
                return !used.isDisjoint(with: controllers)
            }
            #expect(ours.count == host.driver.directories.count)
            for line in ours { #expect(line[2] == Substring(expected), "\(line)") }
            try leaf.destroy()
            #expect(child.wait(seconds: 5) != nil)
        }
    }

    /// The order the sandbox core follows, and cgroup2's "no internal processes" rule behind it.
    @Test func initMovesFromProjectToLeafThenControllersReachTheLeaves() throws {
        try CgroupTestHost.with { host in
            let project = try host.driver.createProject("p", limits: CgroupLimits(memoryBytes: 256 << 20, pids: 64))
            defer { try? project.destroy() }
            let sandboxInit = try ChildProcess(["/bin/sleep", "1000"])
            try project.attach(pid: sandboxInit.pid)
            #expect(try project.pids() == [sandboxInit.pid])
            let initLeaf = try project.createLeaf("init")
            // pid 0 would mean "the writer": the host itself would move into the sandbox's cgroup.
            #expect(throws: CgroupError.system(SystemError("attach(0)", errno: EINVAL))) {
                try initLeaf.attach(pid: 0)
            }
            try initLeaf.attach(pid: sandboxInit.pid)
            try project.enableSubtreeControllers()
            let job = try project.createLeaf("job-1")
            #expect(try initLeaf.pids() == [sandboxInit.pid])
            #expect(try job.usage().pidsCurrent == 0)

            let late = try ChildProcess(["/bin/sleep", "1000"])
            defer { late.kill() }
            if host.driver.mode == .unified {
                let d = project.directories[0]
                // Every controller the driver enforces reaches the leaves, whatever the project's
                // limits, so each job gets its own accounting.
                let delegated = try readCgroupFile(d + "/cgroup.subtree_control")
                #expect(delegated.split(separator: " ").sorted() == ["cpu", "memory", "pids"])
                for leaf in [initLeaf, job] {
                    #expect(try readCgroupFile(leaf.directories[0] + "/memory.oom.group") == "1")
                }
                // From now on the project itself may not hold a process.
                #expect(throws: CgroupError.system(SystemError("write(\(d)/cgroup.procs)", errno: EBUSY))) {
                    try project.attach(pid: late.pid)
                }
            } else {
                try project.attach(pid: late.pid)
                #expect(try project.pids() == [sandboxInit.pid, late.pid].sorted())
            }
        }
    }

    @Test func destroyLeavesNoDirectoryInAnyHierarchyAndIsIdempotent() throws {
        try CgroupTestHost.with { host in
            let hierarchies = host.driver.directories.count
            #expect(host.directoryCount() == hierarchies)
            let project = try host.driver.createProject(
                "p", limits: CgroupLimits(cpus: 1, memoryBytes: 256 << 20, pids: 64))
            let initLeaf = try project.createLeaf("init")
            _ = try project.createLeaf("job-1")
            let sleeper = try ChildProcess(["/bin/sleep", "1000"])
            try initLeaf.attach(pid: sleeper.pid)
            #expect(host.directoryCount() == hierarchies * 4)  // prefix, project, two leaves

            try project.destroy()
            #expect(host.directoryCount() == hierarchies)
            for directory in project.directories { #expect(!FileManager.default.fileExists(atPath: directory)) }
            #expect(sleeper.wait(seconds: 5) != nil)
            #expect(sleeper.terminationSignal == SIGKILL)
            try project.destroy()
            try initLeaf.destroy()
            try initLeaf.kill()
            #expect(throws: CgroupError.notFound(initLeaf.directories[0])) { try initLeaf.usage() }
        }
    }

    @Test func twentyProjectsCreatedAndDestroyedLeaveNothing() throws {
        try CgroupTestHost.with { host in
            let before = host.directoryCount()
            let projects = try (0..<20).map {
                try host.driver.createProject(
                    "p\($0)", limits: CgroupLimits(cpus: 0.5, memoryBytes: 64 << 20, pids: 16))
            }
            for project in projects { _ = try project.createLeaf("job") }
            #expect(host.directoryCount() == before + 40 * host.driver.directories.count)
            for project in projects { try project.destroy() }
            #expect(host.directoryCount() == before)
            #expect(try host.driver.projectNames().isEmpty)
        }
    }

    @Test func sweepRemovesLeftoversOfAPreviousRunAndKeepsTheLiveOnes() throws {
        try CgroupTestHost.with { host in
            let kept = try host.driver.createProject("kept", limits: CgroupLimits(pids: 8))
            let orphan = try host.driver.createProject("orphan", limits: CgroupLimits(pids: 8))
            let orphanJob = try orphan.createLeaf("job-3")
            try orphan.enableSubtreeControllers()
            let leftover = try ChildProcess(["/bin/sleep", "1000"])
            try orphanJob.attach(pid: leftover.pid)

            // A new run only knows the names it wants to keep.
            let removed = try host.driver.sweepOrphans(keeping: ["kept"])
            #expect(removed == ["orphan"])
            #expect(try host.driver.projectNames() == ["kept"])
            for directory in orphan.directories { #expect(!FileManager.default.fileExists(atPath: directory)) }
            for directory in kept.directories { #expect(FileManager.default.fileExists(atPath: directory)) }
            #expect(leftover.wait(seconds: 5) != nil)
            #expect(leftover.terminationSignal == SIGKILL)
            #expect(try host.driver.sweepOrphans(keeping: ["kept"]) == [])
            #expect(try host.driver.openProject("kept").name == "kept")
            #expect(throws: CgroupError.notFound(orphan.directories[0])) { try host.driver.openProject("orphan") }
        }
    }

    // MARK: - Clean stop

    @Test func aCleanStopRemovesThePrefixButNotWhatIsInUseNorAParentItDidNotMake() throws {
        try CgroupTestHost.with { outer in
            // The outer prefix stands for a delegated parent someone else set up.
            let inner = try CgroupDriver.detect(prefix: outer.prefix + "/inner")
            let idle = try inner.createProject("idle", limits: CgroupLimits())
            let busy = try inner.createProject("busy", limits: CgroupLimits())
            let running = try busy.createLeaf("job-1")
            _ = try busy.createLeaf("job-2")
            try busy.enableSubtreeControllers()
            let sleeper = try ChildProcess(["/bin/sleep", "1000"])
            try running.attach(pid: sleeper.pid)

            // What holds a process, and everything above it, stays (in every hierarchy,
            // deepest first); nothing is killed; the empty rest goes.
            #expect(inner.removePrefix() == inner.directories.flatMap { [$0 + "/busy/job-1", $0 + "/busy", $0] })
            #expect(ProcStat(pid: sleeper.pid)?.state != "Z")
            for directory in idle.directories { #expect(!FileManager.default.fileExists(atPath: directory)) }
            for directory in busy.directories {
                #expect(!FileManager.default.fileExists(atPath: directory + "/job-2"), "\(directory)")
            }

            // Once the process is gone, the rest goes; the parent it did not make stays.
            sleeper.kill()
            #expect(sleeper.wait(seconds: 5) != nil)
            #expect(inner.removePrefix() == [])
            for directory in inner.directories { #expect(!FileManager.default.fileExists(atPath: directory)) }
            for directory in outer.driver.directories { #expect(FileManager.default.fileExists(atPath: directory)) }
        }
    }

    @Test func aCleanStopRemovesTheParentsItsDetectionMade() throws {
        let parent = "corral-test-" + UUID().uuidString.prefix(8).lowercased()
        let driver = try CgroupDriver.detect(prefix: parent + "/inner")
        let parents = driver.directories.map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }
        defer { for directory in driver.directories + parents { rmdir(directory) } }
        for directory in driver.directories + parents { #expect(FileManager.default.fileExists(atPath: directory)) }
        #expect(driver.removePrefix() == [])
        for directory in driver.directories + parents {
            #expect(!FileManager.default.fileExists(atPath: directory), "\(directory)")
        }
    }
}
