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
            // The spare leaf the next job takes is made in the background: let it settle.
            try await Task.sleep(for: .milliseconds(300))
            let leaves = try sandbox.jobsCgroup!.leafNames().count
            let deleted = try await client.call(.delete, "/v1/projects/demo/sessions/\(ids[0])")
            #expect(deleted.status == .noContent)
            // Its shell and both sleeps are gone, and its cgroup leaf with them.
            try await Self.settle { (try? sandbox.jobsCgroup!.pids().count) == before + 6 }
            #expect(try sandbox.jobsCgroup!.pids().count == before + 6)
            // Each session had a cgroup leaf of its own; the deleted one's is removed.
            try await Self.settle { (try? sandbox.jobsCgroup!.leafNames().count) == leaves - 1 }
            #expect(try sandbox.jobsCgroup!.leafNames().count == leaves - 1)
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

    /// Open descriptors, without those of run loops and event loops. Foundation's `Process`
    /// (which test fixtures use to run bsdtar and python) gives each thread that calls it a
    /// run loop holding an epoll, an eventfd and a timerfd until the thread ends, and the
    /// Swift runtime starts and ends its worker threads at will; the host makes none of
    /// these per project, while everything it could leak (pidfds, pipes, sockets, files,
    /// cgroup files) is counted.
    static func openDescriptors() -> Int {
        let fm = FileManager.default
        return ((try? fm.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).filter { fd in
            let target = (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? "?"
            return !runtimeDescriptors.contains(target)
        }.count
    }

    static let runtimeDescriptors: Set<String> = [
        "anon_inode:[eventfd]", "anon_inode:[eventpoll]", "anon_inode:[timerfd]",
    ]

    static func settle(_ done: () -> Bool) async throws {
        for _ in 0..<300 where !done() { try await Task.sleep(for: .milliseconds(10)) }
    }
}

extension SessionTests {
    @Test func theBashToolKeepsAShellPerCallerSessionAndAFreshShellOtherwise() async throws {
        try await LiveHost.run { client, _ in
            func bash(_ arguments: JSON, session: String?) async throws -> JSON {
                let reply = try await client.call(
                    .post, "/v1/projects/demo/tools/bash", json: arguments,
                    headers: session.map { ["X-Session-Id": $0] } ?? [:])
                #expect(reply.status == .ok, "\(reply.text)")
                return reply.json
            }
            _ = try await bash(["command": "mkdir -p deep && cd deep && export KEPT=1"], session: "agent-1")
            let kept = try await bash(["command": "echo \"$KEPT\"; pwd"], session: "agent-1")
            #expect(kept["structuredContent"]?["stdout"] == "1\n/workspace/deep\n")
            #expect(
                kept["content"]?.arrayItems?.first?["text"] == "1\n/workspace/deep\n[exit code 0, cwd /workspace/deep]")
            // Another caller session, and no session at all, start from scratch.
            let other = try await bash(["command": "echo \"[$KEPT]\"; pwd"], session: "agent-2")
            #expect(other["structuredContent"]?["stdout"] == "[]\n/workspace\n")
            let fresh = try await bash(["command": "echo \"[$KEPT]\"; pwd"], session: nil)
            #expect(fresh["structuredContent"]?["stdout"] == "[]\n/workspace\n")
            #expect(fresh["structuredContent"]?["job_id"] != nil)
            // `exit` ends the command with its code; the next call gets a fresh shell.
            let exited = try await bash(["command": "echo bye; exit 3"], session: "agent-1")
            #expect(exited["structuredContent"]?["exit_code"] == 3)
            #expect(exited["structuredContent"]?["stdout"] == "bye\n")
            #expect(exited["isError"] == false)
            let again = try await bash(["command": "pwd", "cwd": "deep"], session: "agent-1")
            #expect(again["structuredContent"]?["stdout"] == "/workspace/deep\n", "\(again)")
            let restarted = try await bash(["restart": true], session: "agent-1")
            #expect(restarted["structuredContent"]?["restarted"] == true)
            let home = try await bash(["command": "pwd"], session: "agent-1")
            #expect(home["structuredContent"]?["stdout"] == "/workspace\n")
        }
    }

    @Test func fiftySessionsAcrossTenProjectsRunAtOnceAndIdleOnesAreReaped() async throws {
        // 160 calls in a burst: above the default rate, which is not what this is about.
        var configuration = APIConfiguration(port: 0)
        configuration.limits.defaultRate = .unlimited
        try await LiveHost.run(configuration) { client, host in
            try await LiveHost.writePolicies(
                ["many": "extends = \"default\"\n[sessions]\nmax_sessions = 5\nidle_timeout_s = 2\n"], to: host)
            for p in 0..<10 {
                let upload = try await client.call(
                    .put, "/v1/projects/p\(p)/archive?policy=many", raw: try LiveHost.archive(["f": "\(p)\n"]))
                #expect(upload.status == .created, "\(upload.text)")
            }
            let ids = try await withThrowingTaskGroup(of: (Int, String).self) { group in
                for n in 0..<50 {
                    group.addTask {
                        let made = try await client.call(
                            .post, "/v1/projects/p\(n % 10)/sessions", json: ["kind": "shell", "idle_timeout_s": 60])
                        return (n, try #require(made.json["session_id"]?.stringValue, "\(made.text)"))
                    }
                }
                var ids: [Int: String] = [:]
                for try await (n, id) in group { ids[n] = id }
                return ids
            }
            #expect(ids.count == 50)
            let over = try await client.call(.post, "/v1/projects/p0/sessions", json: ["kind": "shell"])
            #expect(over.status == .tooManyRequests)
            #expect(over.code == "too_many_sessions")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (n, id) in ids {
                    group.addTask {
                        let ran = try await client.call(
                            .post, "/v1/projects/p\(n % 10)/sessions/\(id)/run",
                            json: ["input": .string("echo \(n) $(cat f)")])
                        #expect(ran.json["stdout"] == .string("\(n) \(n % 10)\n"), "\(ran.text)")
                    }
                }
                try await group.waitForAll()
            }
            for (n, id) in ids {
                let deleted = try await client.call(.delete, "/v1/projects/p\(n % 10)/sessions/\(id)")
                #expect(deleted.status == .noContent)
            }
            // A session with the policy's 2 s idle timeout is gone a little after it.
            let idle = try await client.call(.post, "/v1/projects/p1/sessions", json: ["kind": "shell"])
            let id = try #require(idle.json["session_id"]?.stringValue)
            #expect(idle.json["idle_timeout_s"] == 2)
            try await Self.settle { false }
            var gone = false
            for _ in 0..<100 where !gone {
                gone = try await client.call(.get, "/v1/projects/p1/sessions/\(id)").status == .notFound
                if !gone { try await Task.sleep(for: .milliseconds(100)) }
            }
            #expect(gone)
            #expect(await host.sessions.count == 0)
        }
    }
}

extension SessionTests {
    @Test func aRunsOutputIsCutToThePolicysCapAndAStatelessMCPCallerNamesItsShellInMeta() async throws {
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(
                ["small": "extends = \"default\"\n[output]\nstdout = \"1KiB\"\n"], to: host)
            let upload = try await client.call(
                .put, "/v1/projects/small/archive?policy=small", raw: try LiveHost.archive(["f": "x\n"]))
            #expect(upload.status == .created, "\(upload.text)")
            let made = try await client.call(.post, "/v1/projects/small/sessions", json: ["kind": "shell"])
            let session = try #require(made.json["session_id"]?.stringValue)
            let long = try await client.call(
                .post, "/v1/projects/small/sessions/\(session)/run",
                json: ["input": "i=0; while [ $i -lt 1000 ]; do echo line-$i; i=$((i+1)); done"])
            #expect(long.json["truncated"] == true)
            let stdout = long.json["stdout"]?.stringValue ?? ""
            #expect(stdout.hasPrefix("line-0\n") && stdout.hasSuffix("line-999\n"), "\(stdout.prefix(80))")
            #expect(stdout.contains("bytes omitted"))
            #expect(long.json["omitted_bytes"]?.numberValue ?? 0 > 7000)

            func call(_ command: String, meta: String) async throws -> JSON {
                let reply = try await client.call(
                    .post, "/v1/projects/demo/mcp",
                    json: [
                        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": [
                            "name": "bash", "arguments": ["command": .string(command)],
                            "_meta": ["sessionId": .string(meta)],
                        ],
                    ])
                return reply.json["result"]?["structuredContent"] ?? .null
            }
            _ = try await call("cd /tmp", meta: "a")
            #expect(try await call("pwd", meta: "a")["stdout"] == "/tmp\n")
            #expect(try await call("pwd", meta: "b")["stdout"] == "/workspace\n")
        }
    }
}

extension SessionTests {
    /// A cluster's worker drops its copy of a project another host owns now (a failover),
    /// or owned since (the project comes back): the project's sessions end with it, and
    /// their ids are lost from then on, never "not found" and never restarted here.
    @Test func aProjectLeavingTheHostEndsItsSessionsAndTheirIdsAreLostEvenWhenItComesBack() async throws {
        try await LiveHost.run { client, host in
            let session = try await Self.create(client)
            let idle = try await Self.create(client)
            _ = try await Self.run(client, session, "sleep 300 & export MARK=1")
            try await host.dropLocalCopy("demo")
            #expect(await host.sessions.count == 0)
            _ = try await host.upload("demo", archive: try LiveHost.archive(LiveHost.demo))
            for id in [session, idle] {
                let lost = try await client.call(.post, "/v1/projects/demo/sessions/\(id)/run", json: ["input": "true"])
                #expect(lost.status == .gone, "\(lost.text)")
                #expect(lost.code == "session_lost")
            }
            let fresh = try await Self.create(client)
            let clean = try await Self.run(client, fresh, "echo \"[$MARK]\"")
            #expect(clean["stdout"] == "[]\n")
        }
    }
}
