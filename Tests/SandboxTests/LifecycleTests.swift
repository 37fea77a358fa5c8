import Foundation
import Sandbox
import TestSupport
import Testing

/// Crossing between sandboxes and jobs, concurrency, and the sandbox's life and death.
@Suite struct LifecycleTests {
    @Test func sandboxesShareNoShmFilesSocketsOrIPC() async throws {
        try await SandboxFixture.with { a in
            try await SandboxFixture.with { b in
                let planted = try await a.sh(
                    "echo secret > /dev/shm/leak && echo t > /tmp/leak && nc -lk -s 127.0.0.1 -p 7000 -e cat >/dev/null 2>&1 & sleep 0.2; echo planted"
                )
                #expect(planted.stdout == "planted\n")
                let probe = try await b.sh(
                    "ls /dev/shm /tmp; cat /proc/sysvipc/shm | wc -l; echo | nc -w 1 127.0.0.1 7000 2>&1; echo rc=$?")
                #expect(
                    probe.stdout
                        == "/dev/shm:\n\n/tmp:\n1\nnc: can't connect to remote host (127.0.0.1): Connection refused\nrc=1\n"
                )
            }
        }
    }

    @Test func aDaemonLeftByOneJobDiesWithIt() async throws {
        try await SandboxFixture.with { f in
            // The job forks a daemon into a new session that would watch for later jobs. It has
            // left the job's session before the job ends, so only the job's cgroup can still
            // find it.
            let first = try await f.sh(
                "setsid sh -c 'echo $$ > /workspace/daemon.pid; while :; do ls /proc > /dev/null; sleep 0.05; done' </dev/null >/dev/null 2>&1 & sleep 0.3"
            )
            #expect(first.exitCode == 0)
            let r = try await f.sh(
                "kill -0 $(cat /workspace/daemon.pid) 2>/dev/null; echo alive=$?; ps -o comm | grep -c sleep")
            #expect(r.stdout == "alive=1\n0\n")
        }
    }

    /// The count a model is told ("1 process the command left running was stopped"): the
    /// job's cgroup lists a daemon even after it left the job's session.
    @Test func processesAJobLeavesRunningAreCountedWhenItsMainProcessExits() async throws {
        try await SandboxFixture.with { f in
            let daemon = try await f.sh("setsid sleep 30 </dev/null >/dev/null 2>&1 & sleep 0.2; echo done")
            #expect(daemon.stdout == "done\n")
            #expect(daemon.leftoverProcesses == 1)
            let two = try await f.sh("sleep 30 & sleep 30 & echo two")
            #expect(two.leftoverProcesses == 2)
            let none = try await f.sh("sleep 0.01 & wait; echo none")
            #expect(none.leftoverProcesses == 0)
            // Stopped by its timeout, the job left nothing behind of its own accord.
            let stopped = try await f.sh("sleep 30 & sleep 30", timeout: .milliseconds(300))
            #expect(stopped.status == .timedOut)
            #expect(stopped.leftoverProcesses == nil)
        }
    }

    @Test func withoutACgroupTheSameDaemonEscapes() async throws {
        // The control for the test above: only the cgroup makes the difference.
        try await SandboxFixture.with(id: "nocg", configure: { $0.cgroups = nil }) { f in
            let first = try await f.sandbox.exec(
                JobSpec([
                    "/bin/sh", "-c",
                    "setsid sh -c 'echo $$ > /workspace/daemon.pid; while :; do sleep 0.05; done' </dev/null >/dev/null 2>&1 & sleep 0.3",
                ]))
            // Nothing lists the job's processes either: the count is unknown, not 0.
            #expect(first.leftoverProcesses == nil)
            let r = try await f.sandbox.exec(
                JobSpec(["/bin/sh", "-c", "kill -0 $(cat /workspace/daemon.pid); echo alive=$?"]))
            #expect(r.stdout == "alive=0\n")
        }
    }

    @Test func aStartUpSweepKillsSandboxesOfADeadHost() async throws {
        let prefix = TestCgroups.ownPrefix + "-sweep"
        let driver = try CgroupDriver.detect(prefix: prefix)
        // Whatever happens below, the "dead host's" prefix goes with the test.
        defer { TestCgroups.remove(prefix: prefix) }
        try await SandboxFixture.with(id: "orphan", configure: { $0.cgroups = driver }) { orphan in
            let job = try await orphan.sandbox.start(JobSpec(["sleep", "60"]))
            // The host "dies" without destroying it; the next host's sweep finds it by its cgroup.
            let swept = try driver.sweepOrphans(keeping: [])
            #expect(swept.count == 1)
            #expect(await job.wait().signal == SIGKILL)
            for _ in 0..<100 where orphan.sandbox.isAlive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!orphan.sandbox.isAlive)
            #expect(try driver.projectNames() == [])
        }
        // Then the next host stops cleanly: nothing of the prefix is left in any hierarchy.
        #expect(driver.removePrefix() == [])
        #expect(TestCgroups.directories(named: prefix) == [])
    }

    @Test func fiftyConcurrentJobsInOneSandboxAndAcrossTen() async throws {
        try await SandboxFixture.with { one in
            let results = try await withThrowingTaskGroup(of: (Int, JobResult).self) { group in
                for i in 0..<50 { group.addTask { (i, try await one.sh("echo job-\(i); exit \(i % 7)")) } }
                return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            for i in 0..<50 {
                #expect(results[i]?.stdout == "job-\(i)\n")
                #expect(results[i]?.exitCode == Int32(i % 7))
            }
        }

        try await SandboxFixture.with(ids: (0..<10).map { "many-\($0)" }) { fixtures in
            let across = try await withThrowingTaskGroup(of: (Int, JobResult).self) { group in
                for i in 0..<50 { group.addTask { (i, try await fixtures[i % 10].sh("hostname; echo \(i)")) } }
                return try await group.reduce(into: [:]) { $0[$1.0] = $1.1 }
            }
            for i in 0..<50 { #expect(across[i]?.stdout == "many-\(i % 10)\n\(i)\n") }
        }
    }

    @Test func aThousandSequentialJobsLeakNothing() async throws {
        try await SandboxFixture.with { f in
            _ = try await f.sh("true")  // warm the event loop thread
            let before = HostCounts.now()
            for i in 0..<1000 {
                let r = try await f.sandbox.exec(JobSpec(["true"]))
                if r.exitCode != 0 { Issue.record("job \(i) exited \(r.exitCode)") }
            }
            try await Task.sleep(for: .milliseconds(100))
            let after = HostCounts.now()
            #expect(after.fds == before.fds, "\(before) → \(after)")
            #expect(after.children == before.children, "\(before) → \(after)")
            #expect(after.mounts == before.mounts, "\(before) → \(after)")
            #expect(after.threads <= before.threads + 4, "\(before) → \(after)")
        }
    }

    @Test func afterTheInitDiesExecFailsCleanly() async throws {
        try await SandboxFixture.with { f in
            #expect(try await f.sh("echo alive").stdout == "alive\n")
            kill(f.sandbox.initPID, SIGKILL)
            for _ in 0..<100 where f.sandbox.isAlive { try await Task.sleep(for: .milliseconds(10)) }
            #expect(!f.sandbox.isAlive)
            await #expect(throws: SandboxError.sandboxGone(f.sandbox.configuration.projectID)) {
                try await f.sandbox.exec(JobSpec(["true"]))
            }
        }
    }

    /// An init killed from outside the sandbox (the host's OOM killer, an operator's
    /// `kill -9`) takes every job with it: each says the sandbox died, where a job killed
    /// by SIGKILL for any other reason is a plain result, and the sandbox says it died.
    @Test func aJobWhoseSandboxDiesSaysSoAndAKillOfItsOwnDoesNot() async throws {
        let f = try await SandboxFixture()
        let own = try await f.sh("kill -9 $$")
        #expect(own.status == .completed && own.signal == SIGKILL && own.exitCode == 137)
        let jobs = [
            try await f.sandbox.start(JobSpec(["sleep", "30"])),
            try await f.sandbox.start(JobSpec(["/bin/sh", "-c", "sleep 30 & wait"])),
        ]
        #expect(f.sandbox.isAlive)
        kill(f.sandbox.initPID, SIGKILL)
        for job in jobs {
            let result = await job.wait()
            #expect(result.status == .sandboxDied)
            #expect(result.exitCode == 137 && result.signal == SIGKILL)
            #expect(result.leftoverProcesses == nil)
        }
        #expect(await f.sandbox.waitForInitExit())
        #expect(f.sandbox.died)
        #expect(!f.sandbox.isAlive)
        await f.destroy()
    }

    @Test func destroyLeavesNoProcessMountOrDescriptor() async throws {
        let before = HostCounts.now()
        let f = try await SandboxFixture()
        let daemon = try await f.sandbox.start(JobSpec(["sleep", "60"]))
        let initPID = f.sandbox.initPID
        #expect(kill(initPID, 0) == 0)
        await f.destroy()
        // Destroyed, not dead: the job was killed by the host, as its result has always said.
        #expect(await daemon.wait().signal == SIGKILL)
        #expect(await daemon.wait().status == .completed)
        #expect(await f.sandbox.waitForInitExit() == false)
        #expect(!f.sandbox.died)
        #expect(kill(initPID, 0) == -1 && errno == ESRCH)
        await #expect(throws: SandboxError.sandboxGone(f.sandbox.configuration.projectID)) {
            try await f.sandbox.exec(JobSpec(["true"]))
        }
        try await Task.sleep(for: .milliseconds(100))
        let after = HostCounts.now()
        #expect(after.children == before.children, "\(before) → \(after)")
        #expect(after.mounts == before.mounts, "\(before) → \(after)")
        #expect(after.fds <= before.fds + 1, "\(before) → \(after)")  // the sandbox object's pidfd until released
    }

    /// The scoped fixture every sandbox test uses: a test that fails half-way (here, a
    /// thrown error) must not leave its sandbox, cgroups or workspace to the tests after it.
    @Test func aTestThatThrowsStillDestroysItsSandbox() async throws {
        struct Failed: Error {}
        var initPID: pid_t = 0
        var directories: [String] = []
        var workspace = ""
        do {
            try await SandboxFixture.with(id: "throws") { f in
                initPID = f.sandbox.initPID
                directories = f.sandbox.cgroup?.directories ?? []
                workspace = f.workspace.path
                throw Failed()
            }
            Issue.record("the body's error did not reach the test")
        } catch is Failed {}
        #expect(initPID > 0)
        #expect(kill(initPID, 0) == -1 && errno == ESRCH)
        #expect(!directories.isEmpty)
        for directory in directories { #expect(!FileManager.default.fileExists(atPath: directory), "\(directory)") }
        #expect(!FileManager.default.fileExists(atPath: workspace))
    }

    @Test func badConfigurationsAreRefusedUpFront() async throws {
        let ws = try TemporaryDirectory()
        defer { ws.remove() }
        // The tests' driver, not the default `CgroupDriver.host`: evaluating that one would
        // make the real `corral` prefix in every hierarchy.
        let cases: [(SandboxConfiguration, String)] = [
            (
                SandboxConfiguration(
                    projectID: "../x", workspace: ws.path, rootfs: SandboxFixture.minimalRootfs,
                    cgroups: TestCgroups.driver),
                "project id"
            ),
            (
                SandboxConfiguration(
                    projectID: "ok", workspace: "/nonexistent", rootfs: SandboxFixture.minimalRootfs,
                    cgroups: TestCgroups.driver),
                "workspace"
            ),
            (
                SandboxConfiguration(
                    projectID: "ok", workspace: ws.path, rootfs: "/nonexistent", cgroups: TestCgroups.driver), "rootfs"
            ),
            (
                SandboxConfiguration(projectID: "ok", workspace: ws.path, rootfs: ws.path, cgroups: TestCgroups.driver),
                "rootfs has no /workspace"
            ),
        ]
        for (config, expected) in cases {
            do {
                _ = try await ProjectSandbox.create(config)
                Issue.record("created a sandbox from a bad configuration: \(expected)")
            } catch let error as SandboxError {
                #expect(error.description.contains(expected), "\(error)")
            }
        }
    }
}
