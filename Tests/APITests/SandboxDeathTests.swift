import API
import Foundation
import HTTPTypes
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

@testable import Host

/// A project's sandbox killed from outside (the host's OOM killer, an operator's `kill -9`
/// of its init) while a job runs: the job says the sandbox died, not that it exited 137; the
/// death is counted when it happens; the next command runs in a fresh sandbox.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct SandboxDeathTests {
    @Test func aJobWhoseSandboxIsKilledEndsInterruptedWithSandboxDiedAndTheNextCommandRuns() async throws {
        try await LiveHost.run { client, host in
            func deaths() async throws -> String? {
                let text = try await client.call(.get, "/metrics").text
                return text.split(separator: "\n").first { $0.hasPrefix("corral_sandbox_deaths_total ") }.map(
                    String.init)
            }
            #expect(try await deaths() == "corral_sandbox_deaths_total 0")
            let started = try await client.call(
                .post, "/v1/projects/demo/tools/bash",
                json: ["command": "echo started; sleep 30", "background": true])
            let id = try #require(started.json["structuredContent"]?["job_id"]?.stringValue)
            let running = try await client.call(.get, "/v1/projects/demo/jobs/\(id)?wait=10&since=0")
            #expect(running.json["output"] == "started\n")
            let sandbox = try #require(await host.pool.existing("demo"))
            let initPID = sandbox.initPID
            #expect(kill(initPID, SIGKILL) == 0)

            let ended = try await client.call(.get, "/v1/projects/demo/jobs/\(id)?wait=10&since=8")
            let error =
                "the sandbox of project demo died while the job ran: its init process was killed, and every process of the job with it; the job was not re-run"
            let message =
                "The files it wrote are kept, and the next command starts a fresh sandbox: run it again if it must finish."
            #expect(ended.json["status"] == "interrupted", "\(ended.text)")
            #expect(ended.json["error_code"] == "sandbox_died")
            #expect(ended.json["error"] == .string(error))
            #expect(ended.json["message"] == .string(message))
            #expect(ended.json["exit_code"] == 137)
            #expect(ended.json["signal"] == 9)
            #expect(ended.json["stdout"] == "started\n")
            // The tool a model polls with says the same.
            let tool = try await client.call(
                .post, "/v1/projects/demo/tools/job_output", json: ["job_id": .string(id), "wait": 0])
            #expect(
                tool.json["content"] == [
                    ["type": "text", "text": .string("started\n[interrupted: \(error)]\n\(message)")]
                ])

            // Counted once, when it happened.
            let deadline = ContinuousClock.now + .seconds(5)
            while try await deaths() != "corral_sandbox_deaths_total 1", ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try await deaths() == "corral_sandbox_deaths_total 1")
            #expect(kill(initPID, 0) == -1 && errno == ESRCH)

            let next = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "echo fresh"])
            #expect(next.json["status"] == "completed", "\(next.text)")
            #expect(next.json["stdout"] == "fresh\n")
            let fresh = try #require(await host.pool.existing("demo"))
            #expect(fresh.initPID != initPID)
            #expect(fresh.isAlive)
            #expect(try await deaths() == "corral_sandbox_deaths_total 1")
            // Nothing of the dead sandbox is left: its jobs ended, and the pool holds one sandbox.
            #expect(await host.pool.projects == ["demo"])
            #expect(sandbox.runningJobs.isEmpty)
        }
    }
}
