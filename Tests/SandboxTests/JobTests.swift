import Foundation
import TestSupport
import Testing

@testable import Sandbox

/// What a job sees and what comes back from it.
@Suite struct JobTests {
    @Test func exitCodeStreamsAndIdentity() async throws {
        try await SandboxFixture.with(id: "jobs-basic", files: ["a.txt": "hello\n"]) { f in
            let r = try await f.sh("cat a.txt; id -u; id -g; hostname; pwd; echo oops >&2; exit 7")
            #expect(r.status == .completed)
            #expect(r.exitCode == 7)
            #expect(r.signal == nil)
            #expect(r.stdout == "hello\n1000\n1000\njobs-basic\n/workspace\n")
            #expect(r.stderr == "oops\n")
            #expect(r.truncated == false)
        }
    }

    @Test func nonZeroExitIsAResultAndSignalsAreReported() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sh("kill -KILL $$")
            #expect(r.signal == SIGKILL)
            #expect(r.exitCode == 128 + SIGKILL)
        }
    }

    @Test func environmentIsCleanPlusRequest() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sandbox.exec(
                JobSpec(["/bin/sh", "-c", "env | sort"], environment: ["FOO": "bar", "LANG": "C"]))
            #expect(
                r.stdout
                    == """
                    FOO=bar
                    HOME=/home/agent
                    LANG=C
                    LOGNAME=agent
                    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
                    PWD=/workspace
                    SHLVL=1
                    TERM=dumb
                    TMPDIR=/tmp
                    USER=agent

                    """)
        }
    }

    @Test func stdinIsDeliveredAndPathIsSearched() async throws {
        try await SandboxFixture.with { f in
            let small = try await f.sandbox.exec(JobSpec(["tr", "a-z", "A-Z"], stdin: Array("shout\n".utf8)))
            #expect(small.stdout == "SHOUT\n")
            let big = [UInt8](repeating: UInt8(ascii: "x"), count: 1 << 20)
            let counted = try await f.sandbox.exec(JobSpec(["wc", "-c"], stdin: big))
            #expect(counted.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "1048576")
        }
    }

    @Test func missingProgramFailsAtExecveWithENOENT() async throws {
        try await SandboxFixture.with { f in
            await #expect(throws: SandboxError.childFailed(stage: "execve", errno: ENOENT)) {
                try await f.sandbox.exec(JobSpec(["no-such-program"]))
            }
            await #expect(throws: SandboxError.childFailed(stage: "execve", errno: ENOENT)) {
                try await f.sandbox.exec(JobSpec(["/workspace/absent"]))
            }
            await #expect(throws: SandboxError.childFailed(stage: "chdir", errno: ENOENT)) {
                try await f.sandbox.exec(JobSpec(["true"], cwd: "/workspace/nope"))
            }
            // The sandbox is still usable after failed starts.
            let ok = try await f.sh("echo ok")
            #expect(ok.stdout == "ok\n")
        }
    }

    @Test func outputOverTheCapKeepsHeadAndTailAndSpillsTheRest() async throws {
        try await SandboxFixture.with { f in
            let job = JobSpec(
                ["/bin/sh", "-c", "echo START; head -c 1000000 /dev/zero | tr '\\0' x; echo; echo END"],
                outputCap: 1000, logPath: ".corral/logs/job.log")
            let r = try await f.sandbox.exec(job)
            let total = 6 + 1_000_000 + 1 + 4
            #expect(r.truncated)
            #expect(r.omittedBytes == total - 1000)
            #expect(r.stdout.hasPrefix("START\nxxx"))
            #expect(r.stdout.hasSuffix("xxx\nEND\n"))
            #expect(
                r.stdout.contains(
                    "[... \(total - 1000) bytes omitted (full output in /workspace/.corral/logs/job.log) ...]"))
            #expect(r.logPath == "/workspace/.corral/logs/job.log")
            let log = try Data(contentsOf: f.workspace.url.appendingPathComponent(".corral/logs/job.log"))
            #expect(log.count == total)
        }
    }

    @Test func timeoutKillsTheJobAndReports124() async throws {
        try await SandboxFixture.with { f in
            let r = try await f.sandbox.exec(
                JobSpec(
                    ["/bin/sh", "-c", "trap '' TERM; echo started; sleep 60"], timeout: .milliseconds(300),
                    killGrace: .milliseconds(200)))
            #expect(r.status == .timedOut)
            #expect(r.timedOut)
            #expect(r.exitCode == 124)
            #expect(r.signal == SIGKILL)
            #expect(r.stdout == "started\n")
            #expect(r.durationMs >= 500 && r.durationMs < 5000)
        }
    }

    @Test func aJobStoppedBeforeItsExecIsKilledAtTheDeadlineAndLeavesNothing() async throws {
        try await SandboxFixture.with { f in
            _ = try await f.sh("true")  // the sandbox's own threads and descriptors exist before the count
            let before = HostCounts.now()
            var job = JobSpec(["/bin/true"])
            job.startDeadline = .milliseconds(300)
            job.stopBeforeExec = true
            let start = ContinuousClock.now
            await #expect(throws: SandboxError.stoppedWhileStarting(after: .milliseconds(300))) {
                try await f.sandbox.exec(job)
            }
            let waited = ContinuousClock.now - start
            #expect(waited >= .milliseconds(300) && waited < .seconds(5), "\(waited)")
            #expect(try await f.sh("echo next").stdout == "next\n")
            #expect(HostCounts.now().children == before.children)
            #expect(HostCounts.now().fds == before.fds)
        }
    }

    @Test func aSandboxProcessStoppingEverythingCannotHangTheHost() async throws {
        // `kill -STOP -1` reaches every process of the sandbox's uid but itself, including
        // jobs that are still starting (they have the sandbox's uid before their exec).
        try await SandboxFixture.with { f in
            let attacker = try await f.sandbox.start(
                JobSpec(
                    ["/bin/sh", "-c", "while :; do kill -STOP -1 2>/dev/null; done"], killGrace: .milliseconds(100)))
            for _ in 0..<10 {
                var job = JobSpec(["/bin/true"], timeout: .milliseconds(500), killGrace: .milliseconds(100))
                job.startDeadline = .milliseconds(200)
                let start = ContinuousClock.now
                do {
                    let r = try await f.sandbox.exec(job)
                    // Stopped after its exec, it is killed at its timeout; or it finished first.
                    #expect(r.status == .timedOut || r.status == .completed, "\(r)")
                } catch let error as SandboxError {
                    #expect(error == .stoppedWhileStarting(after: .milliseconds(200)))
                }
                #expect(ContinuousClock.now - start < .seconds(5))
            }
            let r = await attacker.cancel()
            #expect(r.status == .cancelled)
            #expect(try await f.sh("echo next").stdout == "next\n")
        }
    }

    @Test func backgroundJobCanBeListedAndCancelled() async throws {
        try await SandboxFixture.with { f in
            let job = try await f.sandbox.start(
                JobSpec(["/bin/sh", "-c", "echo up; touch /workspace/ready; exec sleep 60"], killGrace: .seconds(1)))
            #expect(f.sandbox.runningJobs.map(\.id) == [job.id])
            // Cancel only once the job has surely printed: it touches a file after echoing.
            let ready = f.workspace.path + "/ready"
            for _ in 0..<500 where !FileManager.default.fileExists(atPath: ready) {
                try await Task.sleep(for: .milliseconds(10))
            }
            let r = await job.cancel()
            #expect(r.status == .cancelled)
            #expect(r.signal == SIGTERM)
            #expect(r.stdout == "up\n")
        }
    }
}
