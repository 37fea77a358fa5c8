import API
import Foundation
import HTTPTypes
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

@testable import Host

/// Shell sessions in real sandboxes (the minimal image: busybox sh), through the API.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct SessionTests {
    static func create(_ client: any TestClientProtocol, _ body: JSON = ["kind": "shell"], project: String = "demo")
        async throws -> String
    {
        let made = try await client.call(.post, "/v1/projects/\(project)/sessions", json: body)
        #expect(made.status == .created, "\(made.text)")
        return try #require(made.json["session_id"]?.stringValue, "\(made.text)")
    }

    static func run(
        _ client: any TestClientProtocol, _ session: String, _ input: String, project: String = "demo",
        extra: [String: JSON] = [:]
    ) async throws -> JSON {
        var body: [String: JSON] = ["input": .string(input)]
        body.merge(extra) { _, new in new }
        let ran = try await client.call(
            .post, "/v1/projects/\(project)/sessions/\(session)/run", json: .object(body))
        #expect(ran.status == .ok, "\(ran.text)")
        return ran.json
    }

    @Test func cwdEnvironmentFunctionsAndAliasesPersistBetweenRuns() async throws {
        try await LiveHost.run { client, _ in
            let session = try await Self.create(client)
            let first = try await Self.run(
                client, session, "mkdir -p sub && cd sub && export GREETING=hi && f() { echo \"fn $1\"; }")
            #expect(first["status"] == "completed")
            #expect(first["exit_code"] == 0)
            #expect(first["cwd"] == "/workspace/sub")
            let second = try await Self.run(client, session, "echo $GREETING; f x; pwd")
            #expect(second["stdout"] == "hi\nfn x\n/workspace/sub\n")
            #expect(second["output"] == "hi\nfn x\n/workspace/sub\n")
            #expect(second["stderr"] == "")
            let failing = try await Self.run(
                client, session, "echo out; echo err >&2; exit_code() { return 3; }; exit_code")
            #expect(failing["exit_code"] == 3)
            #expect(failing["stdout"] == "out\n")
            #expect(failing["stderr"] == "err\n")
            let syntax = try await Self.run(client, session, "echo \"unterminated")
            #expect(syntax["exit_code"] == 2)
            let after = try await Self.run(client, session, "echo still $GREETING")
            #expect(after["stdout"] == "still hi\n")
            let stdin = try await Self.run(client, session, "cat", extra: ["stdin": "one\ntwo $GREETING\n"])
            #expect(stdin["stdout"] == "one\ntwo $GREETING\n")
            let closed = try await Self.run(client, session, "cat; echo done")
            #expect(closed["stdout"] == "done\n")
            let info = try await client.call(.get, "/v1/projects/demo/sessions/\(session)")
            #expect(info.json["state"] == "idle")
            #expect(info.json["commands_run"] == 7)
            #expect(info.json["cwd"] == "/workspace/sub")
            #expect(info.json["interpreter"] == "sh")
        }
    }
}

extension SessionTests {
    @Test func aTimeoutInterruptsTheCommandAndKeepsTheSessionAndItsBackgroundProcesses() async throws {
        try await LiveHost.run { client, _ in
            let session = try await Self.create(client)
            let started = try await Self.run(client, session, "sleep 300 & echo $! > /tmp/bg; export KEPT=yes")
            #expect(started["exit_code"] == 0)
            let slow = try await Self.run(
                client, session, "echo before; sleep 30; echo after", extra: ["timeout_s": 1])
            #expect(slow["status"] == "timed_out")
            #expect(slow["stdout"] == "before\n")
            #expect(slow["exit_code"] == 130)
            #expect(slow["message"]?.stringValue?.contains("interrupted") == true)
            let next = try await Self.run(client, session, "echo $KEPT; kill -0 $(cat /tmp/bg) && echo alive")
            #expect(next["status"] == "completed")
            #expect(next["stdout"] == "yes\nalive\n")
        }
    }

    @Test func aShellKilledFromInsideIsReportedLostAndRestartsClean() async throws {
        try await LiveHost.run { client, _ in
            let session = try await Self.create(client)
            _ = try await Self.run(client, session, "export MARK=1")
            let killed = try await Self.run(client, session, "kill -9 $$")
            #expect(killed["status"] == "session_lost")
            #expect(killed["session"]?["signal"] == 9)
            #expect(killed["session"]?["reason"] == "the shell was killed by signal 9")
            let info = try await client.call(.get, "/v1/projects/demo/sessions/\(session)")
            #expect(info.json["state"] == "dead")
            #expect(info.json["ended"]?["signal"] == 9)
            let refused = try await client.call(
                .post, "/v1/projects/demo/sessions/\(session)/run", json: ["input": "true"])
            #expect(refused.status == .conflict)
            #expect(refused.code == "session_dead")
            let restarted = try await client.call(.post, "/v1/projects/demo/sessions/\(session)/restart", json: [:])
            #expect(restarted.status == .ok, "\(restarted.text)")
            #expect(restarted.json["state"] == "idle")
            #expect(restarted.json["commands_run"] == 0)
            let fresh = try await Self.run(client, session, "echo \"[$MARK]\"")
            #expect(fresh["stdout"] == "[]\n")
            let exited = try await Self.run(client, session, "exit 7")
            #expect(exited["status"] == "session_lost")
            #expect(exited["session"]?["exit_code"] == 7)
        }
    }

    @Test func aBusySessionRefusesASecondRunWhichCanBeFollowedAndCancelled() async throws {
        try await LiveHost.run { client, _ in
            let session = try await Self.create(client)
            let long = try await Self.run(
                client, session, "echo tick; sleep 30", extra: ["wait_s": 0.3, "timeout_s": 60])
            #expect(long["status"] == "running")
            let run = try #require(long["run_id"]?.stringValue)
            let busy = try await client.call(
                .post, "/v1/projects/demo/sessions/\(session)/run", json: ["input": "true"])
            #expect(busy.status == .conflict)
            #expect(busy.code == "session_busy")
            let polled = try await client.call(.get, "/v1/projects/demo/sessions/\(session)/runs/\(run)?wait=5&since=0")
            #expect(polled.json["output"] == "tick\n")
            #expect(polled.json["cursor"] == 5)
            let cancelled = try await client.call(
                .post, "/v1/projects/demo/sessions/\(session)/runs/\(run)/cancel", json: ["signal": "INT"])
            #expect(cancelled.json["status"] == "cancelled", "\(cancelled.text)")
            #expect(cancelled.json["stdout"] == "tick\n")
            let after = try await Self.run(client, session, "echo again")
            #expect(after["stdout"] == "again\n")
        }
    }

    @Test func aCancelWithTheDefaultSignalEndsTheCommandButNeverTheShell() async throws {
        try await LiveHost.run { client, _ in
            let session = try await Self.create(client)
            _ = try await Self.run(client, session, "export KEPT=yes")
            for body: JSON in [[:], ["signal": "KILL"]] {
                let long = try await Self.run(
                    client, session, "echo tick; sleep 30; echo after", extra: ["wait_s": 0.3, "timeout_s": 60])
                let run = try #require(long["run_id"]?.stringValue)
                let cancelled = try await client.call(
                    .post, "/v1/projects/demo/sessions/\(session)/runs/\(run)/cancel", json: body)
                #expect(cancelled.json["status"] == "cancelled", "\(body): \(cancelled.text)")
                #expect(cancelled.json["exit_code"] == 130)
                #expect(cancelled.json["stdout"] == "tick\n")
            }
            let after = try await Self.run(client, session, "echo $KEPT")
            #expect(after["stdout"] == "yes\n")
        }
    }

    @Test func aSessionThatCannotStartIsRefusedWithAReasonNeverA500() async throws {
        try await LiveHost.run { client, host in
            for (body, code): (JSON, String) in [
                (["cwd": "/etc"], "invalid_argument"), (["cwd": "missing"], "invalid_argument"),
                (["cwd": "/proc/self/cwd/.."], "invalid_argument"), (["kind": "python"], "session_unavailable"),
                (["env": ["BIG": .string(String(repeating: "x", count: 200_000))]], "session_unavailable"),
            ] {
                let refused = try await client.call(.post, "/v1/projects/demo/sessions", json: body)
                #expect(refused.status == .unprocessableContent, "\(body): \(refused.text)")
                #expect(refused.code == code, "\(body): \(refused.text)")
            }
            #expect(await host.sessions.count == 0)
        }
    }

    @Test func twoCallersNeverSeeEachOthersSessions() async throws {
        let configuration = APIConfiguration(
            port: 0,
            tokens: TokenStore([
                (Principal(name: "alice", projects: ["demo"], admin: false), "alice-token"),
                (Principal(name: "bob", projects: ["demo"], admin: false), "bob-token"),
            ]))
        try await LiveHost.run(configuration) { client, _ in
            let made = try await client.call(
                .post, "/v1/projects/demo/sessions", json: ["kind": "shell"], token: "alice-token")
            let session = try #require(made.json["session_id"]?.stringValue)
            _ = try await client.call(
                .post, "/v1/projects/demo/sessions/\(session)/run", json: ["input": "export SECRET=a"],
                token: "alice-token")
            for (method, path) in [
                (HTTPRequest.Method.get, "/v1/projects/demo/sessions/\(session)"),
                (.post, "/v1/projects/demo/sessions/\(session)/run"),
                (.delete, "/v1/projects/demo/sessions/\(session)"),
            ] {
                let tried = try await client.call(method, path, json: ["input": "echo $SECRET"], token: "bob-token")
                #expect(tried.status == .notFound, "\(path): \(tried.text)")
                #expect(tried.code == "session_not_found")
            }
            let bobs = try await client.call(.get, "/v1/projects/demo/sessions", token: "bob-token")
            #expect(bobs.json["sessions"] == [])
            let alices = try await client.call(.get, "/v1/projects/demo/sessions", token: "alice-token")
            #expect(alices.json["sessions"]?.arrayItems?.count == 1)
        }
    }

    @Test func deleteEvictAndUnknownIdsLeaveNothingBehind() async throws {
        try await LiveHost.run { client, host in
            _ = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "true"])
            let sandbox = try #require(await host.pool.existing("demo"))
            let before = try #require(sandbox.jobsCgroup).pids().count
            let fds = Self.openDescriptors()
            var ids: [String] = []
            for _ in 0..<3 {
                let session = try await Self.create(client)
                _ = try await Self.run(client, session, "sleep 300 & sleep 300 & true")
                ids.append(session)
            }
            #expect(try sandbox.jobsCgroup!.pids().count == before + 9)
            let deleted = try await client.call(.delete, "/v1/projects/demo/sessions/\(ids[0])")
            #expect(deleted.status == .noContent)
            let gone = try await client.call(.get, "/v1/projects/demo/sessions/\(ids[0])")
            #expect(gone.code == "session_not_found")
            let evicted = try await client.call(.delete, "/v1/projects/demo/workspace")
            #expect(evicted.status == .noContent || evicted.status == .ok, "\(evicted.text)")
            #expect(await host.sessions.count == 0)
            let lost = try await client.call(.get, "/v1/projects/demo/sessions/ses_00000000_0123")
            #expect(lost.status == .gone)
            #expect(lost.code == "session_lost")
            try await Self.settle { Self.openDescriptors() <= fds }
            #expect(Self.openDescriptors() <= fds)
        }
    }

    static func openDescriptors() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).count
    }

    static func settle(_ done: () -> Bool) async throws {
        for _ in 0..<300 where !done() { try await Task.sleep(for: .milliseconds(10)) }
    }
}
