import Foundation
import Sandbox
import TestSupport
import Testing

/// The "Starving the host or other projects" attacks of THREATS.md, through the exec path
/// of sandboxes whose project cgroup carries limits. The suite's name contains "Cgroup", so
/// the cgroup v2 VM lane runs it too.
@Suite struct CgroupSandboxLimitsTests {
    /// Runs `body` with a sandbox whose project cgroup carries `limits` (and tmpfs mounts of
    /// `tmpfs` bytes) and its workspace, destroying it on every way out.
    func withSandbox<T>(
        _ limits: CgroupLimits, id: String = "limits", tmpfs: UInt64 = 32 << 20,
        _ body: (ProjectSandbox, TemporaryDirectory) async throws -> T
    ) async throws -> T {
        try await SandboxFixture.with(
            id: id,
            configure: {
                $0.limits = limits
                $0.tmpBytes = tmpfs
                $0.shmBytes = tmpfs
            }
        ) { f in try await body(f.sandbox, f.workspace) }
    }

    func sh(_ s: ProjectSandbox, _ script: String, timeout: Duration = .seconds(30)) async throws -> JobResult {
        try await s.exec(JobSpec(["/bin/sh", "-c", script], timeout: timeout, killGrace: .milliseconds(200)))
    }

    /// The forks the kernel refused under a pids limit, as `pids.events` (`max N`) in the
    /// pids hierarchy's copy of `directories` counts them; 0 for a cgroup already removed.
    static func forkRefusals(_ directories: [String]) -> Int {
        let directory = directories.first { $0.hasPrefix("/sys/fs/cgroup/pids/") } ?? directories[0]
        guard let events = try? String(contentsOfFile: directory + "/pids.events", encoding: .utf8) else { return 0 }
        return events.split(separator: "\n").first { $0.hasPrefix("max ") }.flatMap { Int($0.dropFirst(4)) } ?? 0
    }

    @Test func forkBombIsHeldAtThePidsLimitAndTheSandboxStaysUsable() async throws {
        try await withSandbox(CgroupLimits(pids: 64)) { s, _ in
            let jobs = try #require(s.jobsCgroup)
            // The job's shell forks its `sleep` and the bomb's subshell before the bomb starts, and
            // afterwards only waits (a builtin): a shell whose fork is refused exits with 2, so
            // the job's own shell must never need a fork the bomb has taken.
            let running = try await s.start(
                JobSpec(
                    ["/bin/sh", "-c", "sleep 3 & s=$!; (bomb() { bomb | bomb & }; bomb) & wait $s; echo done"],
                    timeout: .seconds(20), killGrace: .milliseconds(200)))
            // The kernel counts refused forks at the limited cgroup (the jobs' group) and its
            // ancestors on cgroup2, at the forking one (the job's leaf) on v1; the leaf goes with
            // the job, so both are read while it runs.
            var refusals = 0
            var highest = 0
            while !running.isFinished {
                let leaves = ((try? jobs.leafNames()) ?? []).compactMap { try? jobs.leaf($0).directories }
                refusals = max(refusals, ([jobs.directories] + leaves).map(Self.forkRefusals).max() ?? 0)
                highest = max(highest, (try? jobs.usage().pidsCurrent) ?? 0)
                try await Task.sleep(for: .milliseconds(20))
            }
            let r = await running.wait()
            #expect(refusals >= 1, "pids.events max never counted a refused fork")
            #expect(highest <= 64, "pids.current reached \(highest) over pids.max 64")
            #expect(r.stderr.contains("can't fork"), "\(r.stderr.prefix(200))")
            // The job ended on its own, when its shell did. (How much of the bomb was still alive
            // then varies: its processes exit on every refused fork, so it may have died out.)
            #expect(r.status == .completed)
            #expect(r.exitCode == 0)
            #expect(r.signal == nil)
            #expect(!r.timedOut)
            #expect(r.stdout == "done\n")
            // The bomb's processes went with the job (the jobs' cgroup empties), and the next
            // job runs normally.
            for _ in 0..<200 where !((try? s.jobsCgroup?.pids()) ?? []).isEmpty {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(try s.jobsCgroup?.pids() == [])
            #expect(try await sh(s, "echo fine").stdout == "fine\n")
        }
    }

    @Test func heapBombIsOOMKilledAndReportedAndTheInitSurvives() async throws {
        try await withSandbox(CgroupLimits(memoryBytes: 64 << 20)) { s, _ in
            let r = try await sh(s, "awk 'BEGIN { x = \"xxxxxxxxxxxxxxxx\"; while (1) x = x x }'")
            #expect(r.oomKilled)
            #expect(r.signal == SIGKILL)
            #expect(r.peakMemoryBytes >= 32 << 20)
            #expect(s.isAlive)
            #expect(try await sh(s, "echo next").stdout == "next\n")
        }
    }

    @Test(arguments: ["/dev/shm", "/tmp"])
    func tmpfsFillIsCappedBySizeAndTheSandboxStaysUsable(_ dir: String) async throws {
        try await withSandbox(CgroupLimits(memoryBytes: 128 << 20), tmpfs: 32 << 20) { s, _ in
            // The cgroup v2 VM lane (emulated, 2 vCPUs) takes about 25 s to fill 32 MiB here.
            let r = try await sh(
                s, "head -c 200000000 /dev/zero > \(dir)/fill; echo rc=$?; wc -c < \(dir)/fill", timeout: .seconds(120))
            #expect(r.stdout == "rc=1\n\(32 << 20)\n", "\(r.stdout) \(r.stderr)")
            #expect(!r.oomKilled)
            #expect(try await sh(s, "rm \(dir)/fill; echo next").stdout == "next\n")
        }
    }

    @Test func tmpfsLargerThanMemoryIsOOMKilledAndTheInitSurvives() async throws {
        // A policy whose tmpfs exceeds its memory: the pages count against the jobs' group,
        // the OOM killer takes the job, and the init, outside that group, lives on.
        try await withSandbox(CgroupLimits(memoryBytes: 64 << 20), tmpfs: 512 << 20) { s, _ in
            let r = try await sh(s, "head -c 200000000 /dev/zero > /dev/shm/fill; echo rc=$?")
            #expect(r.oomKilled, "\(r)")
            #expect(s.isAlive)
            #expect(kill(s.initPID, 0) == 0)
            // The pages stay charged while the file exists: the next job that needs memory is
            // OOM-killed too, or cannot even be created, and is told so. (A job as small as
            // `echo` may fit in what the killed job left: starting one costs the project no
            // copy of the host's page tables.)
            do {
                let r = try await sh(s, "awk 'BEGIN { x = sprintf(\"%16000000s\", \"\"); print length(x) }'")
                #expect(r.oomKilled, "\(r)")
            } catch let error as SandboxError {
                #expect([.killedWhileStarting(signal: SIGKILL), .memoryFullWhileStarting].contains(error), "\(error)")
            }
            #expect(s.isAlive)
        }
    }

    @Test func cpuHogGetsItsShareOfHalfACPU() async throws {
        try await withSandbox(CgroupLimits(cpus: 0.5)) { s, _ in
            let r = try await sh(s, "(while :; do :; done) & (while :; do :; done) & sleep 3; kill %1 %2")
            let share = Double(r.cpuMs) / Double(r.durationMs)
            #expect(share > 0.4 && share < 0.6, "cpu \(r.cpuMs) ms over \(r.durationMs) ms = \(share)")
        }
    }

    @Test func timeoutKillsEveryDescendantThatIgnoresTERMInItsOwnSession() async throws {
        try await withSandbox(CgroupLimits(pids: 128)) { s, ws in
            let r = try await sh(
                s,
                """
                setsid sh -c 'trap "" TERM; (trap "" TERM; sleep 60) & echo $! > /workspace/grandchild; sleep 60' &
                trap '' TERM; echo $! > /workspace/child; sleep 60
                """,
                // Time for both to write their pids even in the emulated cgroup v2 VM beside a
                // build (500 ms once was not); the point is what the timeout kills, not when.
                timeout: .seconds(3))
            #expect(r.timedOut)
            #expect(r.exitCode == 124)
            let pids = ["child", "grandchild"].compactMap {
                try? String(contentsOfFile: ws.path + "/" + $0, encoding: .utf8).trimmingCharacters(
                    in: .whitespacesAndNewlines)
            }
            #expect(pids.count == 2)
            let check = try await sh(
                s,
                "for p in \(pids.joined(separator: " ")); do kill -0 $p 2>/dev/null && echo alive $p; done; echo checked"
            )
            #expect(check.stdout == "checked\n")
        }
    }

    @Test func theNextJobsLeafIsMadeWhileAJobRunsAndGoesWithTheSandbox() async throws {
        let directories = try await withSandbox(CgroupLimits(pids: 64), id: "spare") { s, _ in
            let jobs = try #require(s.jobsCgroup)
            #expect(try await sh(s, "echo one").stdout == "one\n")
            // job-1 was made for the first job and is gone with it; job-2 waits, empty.
            for _ in 0..<200 where try jobs.leafNames() != ["job-2"] { try await Task.sleep(for: .milliseconds(10)) }
            #expect(try jobs.leafNames() == ["job-2"])
            #expect(try jobs.leaf("job-2").pids() == [])
            // The second job runs in it: its process is there, in every hierarchy, while it runs.
            let running = try await s.start(JobSpec(["/bin/sh", "-c", "echo up; exec sleep 30"]))
            var inSpare: [pid_t] = []
            for _ in 0..<200 where inSpare.isEmpty {
                inSpare = (try? jobs.leaf("job-2").pids()) ?? []
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(inSpare.count == 1)
            for directory in try jobs.leaf("job-2").directories {
                let procs = try String(contentsOfFile: directory + "/cgroup.procs", encoding: .utf8)
                #expect(procs == "\(inSpare[0])\n", "\(directory)")
            }
            _ = await running.cancel()
            return try #require(s.cgroup?.directories)
        }
        // Destroying the sandbox (on the way out above) took the waiting spare with every
        // other directory.
        for directory in directories { #expect(!FileManager.default.fileExists(atPath: directory), "\(directory)") }
    }

    /// A sandbox for one job (`corral exec`) makes no spare leaf: its mkdirs and rmdirs
    /// would be paid for a job that never comes.
    @Test func aSandboxForOneJobMakesNoSpareLeaf() async throws {
        let oneJob: (inout SandboxConfiguration) -> Void = {
            $0.limits = CgroupLimits(pids: 64)
            $0.spareJobLeaves = false
        }
        try await SandboxFixture.with(id: "one-job", configure: oneJob) { f in
            let s = f.sandbox
            let jobs = try #require(s.jobsCgroup)
            #expect(try await sh(s, "echo one").stdout == "one\n")
            #expect(try await sh(s, "echo two").stdout == "two\n")
            // Each job had a leaf of its own, made at its start and gone with it; none waits.
            for _ in 0..<200 where try jobs.leafNames() != [] { try await Task.sleep(for: .milliseconds(10)) }
            #expect(try jobs.leafNames() == [])
            // Nothing is made later either.
            try await Task.sleep(for: .milliseconds(100))
            #expect(try jobs.leafNames() == [])
        }
    }

    @Test func twentySandboxesWithLimitsLeaveNoCgroupBehind() async throws {
        let driver = try #require(TestCgroups.driver)
        // Only this test's own: other suites' hosts remove their projects' cgroups on
        // threads of their own, so the whole list can change while this test runs.
        let mine = { try driver.projectNames().filter { $0.hasPrefix("twenty-") } }
        #expect(try mine() == [])
        for i in 0..<20 {
            try await withSandbox(CgroupLimits(cpus: 1, memoryBytes: 128 << 20, pids: 100), id: "twenty-\(i)") { s, _ in
                let r = try await sh(s, "echo \(i)")
                #expect(r.stdout == "\(i)\n")
            }
        }
        // A destroyed sandbox's cgroups are removed on a thread of their own once its last
        // process is reaped; a leaked one never goes. (Up to 10 s: a loaded machine, such as a
        // full test run beside a build, once needed more than 3.)
        for _ in 0..<200 where try mine() != [] { try await Task.sleep(for: .milliseconds(50)) }
        #expect(try mine() == [])
    }
}
