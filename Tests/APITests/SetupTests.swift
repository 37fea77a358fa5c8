import Foundation
import Glibc
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

@testable import API
@testable import Host

/// A project's setup commands against a real host: real sandboxes, capped workspaces, the
/// egress proxy and a server on the host's loopback that counts every request a setup makes
/// (a counter outside the sandbox and its workspace).
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs)"))
struct SetupTests {
    typealias Footprint = ProjectLifecycleTests.Footprint

    /// A policy whose jobs have no network and whose setup may reach `localhost:port` (the
    /// proxy resolves it to 127.0.0.1 on the host, which allow_private lets through).
    static func policy(port: Int, extra: String = "") -> String {
        """
        rootfs = "minimal"
        [network]
        mode = "none"
        [setup.network]
        mode = "allowlist"
        egress = ["localhost:\(port)"]
        allow_private = ["127.0.0.0/8"]
        \(extra)
        """
    }

    /// `?setup=<the commands as a JSON array>`, URL-encoded.
    static func query(_ commands: [String], policy: String? = nil) -> String {
        let json = String(decoding: JSON.array(commands.map(JSON.string)).serialized(), as: UTF8.self)
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        var query = "?setup=" + json.addingPercentEncoding(withAllowedCharacters: allowed)!
        if let policy { query += "&policy=\(policy)" }
        return query
    }

    static func upload(
        _ client: any TestClientProtocol, _ project: String, _ files: [String: String], setup: [String]? = nil,
        policy: String? = nil
    ) async throws -> Reply {
        let query = setup.map { Self.query($0, policy: policy) } ?? (policy.map { "?policy=\($0)" } ?? "")
        return try await client.call(.put, "/v1/projects/\(project)/archive\(query)", raw: try LiveHost.archive(files))
    }

    static func exec(_ client: any TestClientProtocol, _ project: String, _ command: String) async throws -> Reply {
        try await client.call(.post, "/v1/projects/\(project)/exec", json: ["command": .string(command)])
    }

    /// The stdout of a command that must complete.
    static func stdout(_ client: any TestClientProtocol, _ project: String, _ command: String) async throws -> String {
        let reply = try await exec(client, project, command)
        #expect(reply.status == .ok && reply.json["status"] == "completed", "\(reply.text)")
        return reply.json["stdout"]?.stringValue ?? ""
    }

    static func setup(_ client: any TestClientProtocol, _ project: String) async throws -> JSON {
        try await client.call(.get, "/v1/projects/\(project)").json["setup"] ?? .null
    }

    /// A file of the project's workspace, read from the host (never waiting for setup); ""
    /// when it is not there.
    static func read(_ host: CorralHost, _ project: String, _ path: String) async throws -> String {
        guard let workspace = try await host.cache.currentWorkspace(project) else { return "" }
        return (try? String(contentsOfFile: workspace.path + "/" + path, encoding: .utf8)) ?? ""
    }

    // MARK: - Once

    @Test func setupRunsOnceBeforeJobsAndAgainOnlyWhenItsCommandsOrFilesChange() async throws {
        let site = try TemporaryDirectory()
        try "counted\n".write(toFile: site.path + "/count.txt", atomically: true, encoding: .utf8)
        let counter = try LoopbackHTTPServer(serving: site.url, logRequests: true)
        defer { counter.stop() }
        try await LiveHost.run { client, host in
            let data = await host.configuration.dataDirectory
            try await LiveHost.writePolicies(["prep": Self.policy(port: counter.port)], to: host)
            // What the host starts once (event loops, the proxy's) is up before the count.
            #expect(try await Self.stdout(client, "demo", "echo up") == "up\n")
            try await host.evict("demo", discard: true)
            let before = Footprint.of(data)

            let commands = [
                "echo ran >> setup.log", "wget -q -O - http://localhost:\(counter.port)/count.txt > fetched.txt",
            ]
            let made = try await Self.upload(client, "app", ["a.txt": "v1\n"], setup: commands, policy: "prep")
            #expect(made.status == .created, "\(made.text)")
            #expect(made.json["setup"]?["commands"] == .array(commands.map(JSON.string)), "\(made.text)")
            // The first job waits for the setup the upload started.
            #expect(try await Self.stdout(client, "app", "cat setup.log fetched.txt") == "ran\ncounted\n")
            #expect(counter.requests == ["/count.txt"])
            let first = try await Self.setup(client, "app")
            #expect(first["status"] == "succeeded" && first["exit_code"] == 0, "\(first)")
            #expect(
                first["output_tail"]
                    == .string(
                        "$ echo ran >> setup.log\n$ wget -q -O - http://localhost:\(counter.port)/count.txt > fetched.txt\n"
                    ), "\(first)")
            let key = try #require(first["key"]?.stringValue)
            #expect(key.hasPrefix("sha256:") && key.count == 71)

            // A second job, and an eviction (written back) then a materialization from the
            // snapshot: no second run.
            #expect(try await Self.stdout(client, "app", "cat setup.log") == "ran\n")
            let evicted = try await client.call(.delete, "/v1/projects/app/workspace")
            #expect(evicted.status == .ok, "\(evicted.text)")
            #expect(try await client.call(.get, "/v1/projects/app").json["state"] == "cold")
            #expect(try await Self.stdout(client, "app", "cat setup.log") == "ran\n")
            #expect(counter.requests.count == 1)
            let restored = try await Self.setup(client, "app")
            #expect(restored["status"] == "succeeded" && restored["started_at"] == first["started_at"], "\(restored)")

            // Other commands run once more, on the same files.
            let changed = try await client.call(
                .put, "/v1/projects/app/setup",
                json: ["commands": .array((commands + ["echo v2 >> setup.log"]).map(JSON.string))])
            #expect(changed.status == .ok, "\(changed.text)")
            #expect(try await Self.stdout(client, "app", "cat setup.log") == "ran\nran\nv2\n")
            #expect(try await Self.stdout(client, "app", "cat setup.log") == "ran\nran\nv2\n")
            #expect(counter.requests.count == 2)
            let second = try await Self.setup(client, "app")
            #expect(second["status"] == "succeeded" && second["key"] != first["key"], "\(second)")

            // New files: the commands (kept by an upload that names none) run on them. (An
            // upload naming no policy would move the project to the default one.)
            let replaced = try await client.call(
                .put, "/v1/projects/app/archive?policy=prep", raw: try LiveHost.archive(["a.txt": "v2\n"]))
            #expect(replaced.status == .ok, "\(replaced.text)")
            #expect(try await Self.stdout(client, "app", "cat a.txt setup.log") == "v2\nran\nv2\n")
            #expect(counter.requests.count == 3)

            // Removing the commands runs nothing more.
            let cleared = try await client.call(.put, "/v1/projects/app/setup", json: ["commands": []])
            #expect(cleared.json["setup"] == ["status": "none", "commands": []], "\(cleared.text)")
            #expect(try await Self.stdout(client, "app", "cat setup.log") == "ran\nv2\n")
            #expect(counter.requests.count == 3)

            #expect(try await client.call(.delete, "/v1/projects/app").status == .noContent)
            try await ProjectLifecycleTests.settle { Footprint.of(data) == before }
            #expect(Footprint.of(data) == before)
        }
    }

    @Test func aRestartOfTheHostKeepsWhatSetupDid() async throws {
        let data = try TemporaryDirectory()
        let commands = ["echo ran >> setup.log"]
        let first = try await LiveHost.open(data)
        _ = try await first.upload("app", archive: try LiveHost.archive(["a.txt": "a\n"]), setup: commands)
        let job = JobRequest(project: "app", command: "cat setup.log")
        #expect(try await first.jobService.run(job, budget: .seconds(30)).record.result?.stdout == "ran\n")
        let before = try #require(await first.project("app").setup.startedAt)
        await first.shutdown(grace: .seconds(1))

        let second = try await LiveHost.open(data)
        let info = try await second.project("app")
        #expect(info.setup.status == .succeeded && info.setup.startedAt == before, "\(info.setup)")
        #expect(info.setup.commands == commands)
        #expect(try await second.jobService.run(job, budget: .seconds(30)).record.result?.stdout == "ran\n")
        #expect(try await second.project("app").setup.startedAt == before)
        await second.shutdown(grace: .seconds(1))
    }

    // MARK: - Failing

    @Test func aFailingSetupRefusesEveryJobWithItsOutputUntilItIsFixed() async throws {
        try await LiveHost.run { client, host in
            let commands = ["echo try >> tries; sleep 1; echo preparing; echo broken >&2; exit 3"]
            _ = try await Self.upload(client, "bad", ["a.txt": "a\n"], setup: commands)
            let message =
                "setup of project bad failed: command 1 of 1 (`\(commands[0])`) exited with 3. Jobs are refused until the setup commands change (PUT /v1/projects/bad/setup), the files change, or setup runs again (POST /v1/projects/bad/setup/run). The end of its output:\n$ \(commands[0])\npreparing\nbroken\n"
            // The first job waited for the setup the upload started: it could not start.
            let waited = try await Self.exec(client, "bad", "true")
            #expect(waited.status == .ok && waited.json["status"] == "failed_to_start", "\(waited.text)")
            #expect(waited.json["error"] == .string(message), "\(waited.text)")
            // Every later job, session and warm-up is refused at once, without running setup again.
            let refused = try await Self.exec(client, "bad", "true")
            #expect(refused.status == .conflict && refused.code == "setup_failed", "\(refused.text)")
            #expect(refused.json["error"]?["message"] == .string(message), "\(refused.text)")
            let job = try await client.call(.post, "/v1/projects/bad/jobs", json: ["command": "true"])
            #expect(job.status == .conflict && job.code == "setup_failed", "\(job.text)")
            let session = try await client.call(.post, "/v1/projects/bad/sessions", json: ["kind": "shell"])
            #expect(session.status == .conflict && session.code == "setup_failed", "\(session.text)")
            let warm = try await client.call(.post, "/v1/projects/bad/warm")
            #expect(warm.status == .conflict && warm.code == "setup_failed", "\(warm.text)")
            #expect(try await Self.read(host, "bad", "tries") == "try\n")
            let info = try await Self.setup(client, "bad")
            #expect(
                info["status"] == "failed" && info["exit_code"] == 3 && info["failed_command"] == 1, "\(info)")

            // Run again by hand: it fails again, as a result, not an error.
            let again = try await client.call(.post, "/v1/projects/bad/setup/run")
            #expect(again.status == .ok && again.json["setup"]?["status"] == "failed", "\(again.text)")
            #expect(try await Self.read(host, "bad", "tries") == "try\ntry\n")
            #expect(try await Self.exec(client, "bad", "true").code == "setup_failed")

            // Fixed commands run at once, and jobs run again.
            let fixed = try await client.call(.put, "/v1/projects/bad/setup", json: ["commands": ["echo fixed > ok"]])
            #expect(fixed.status == .ok, "\(fixed.text)")
            #expect(try await Self.stdout(client, "bad", "cat ok") == "fixed\n")
            #expect(try await Self.setup(client, "bad")["status"] == "succeeded")
        }
    }

    @Test func aTimeoutAndAnOOMKillAreFailuresThatSayWhy() async throws {
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(
                [
                    "slow": "rootfs = \"minimal\"\n[setup]\ntimeout_s = 1\n",
                    "small": "rootfs = \"minimal\"\n[setup.limits]\nmemory = \"32MiB\"\n",
                ], to: host)
            _ = try await Self.upload(client, "slow", ["a": "a\n"], setup: ["echo started; sleep 30"], policy: "slow")
            // A warm-up waits for the setup and answers with its failure.
            let slow = try await client.call(.post, "/v1/projects/slow/warm")
            #expect(slow.code == "setup_failed", "\(slow.text)")
            #expect(
                slow.json["error"]?["message"]?.stringValue?.hasPrefix(
                    "setup of project slow failed: command 1 of 1 (`echo started; sleep 30`): setup took longer than its 1 s ([setup] timeout_s of policy \"slow\") and was killed."
                ) == true, "\(slow.text)")
            #expect(try await Self.setup(client, "slow")["exit_code"] == 124)
            // One process that needs 200 MiB, so the kernel kills the command itself.
            _ = try await Self.upload(
                client, "small", ["a": "a\n"], setup: ["exec dd if=/dev/zero of=/dev/null bs=200M count=1"],
                policy: "small")
            let small = try await client.call(.post, "/v1/projects/small/warm")
            #expect(
                small.json["error"]?["message"]?.stringValue?.contains(
                    "was killed for using more memory than setup may (32MiB, [setup.limits] memory of policy \"small\")"
                ) == true, "\(small.text)")
        }
    }

    // MARK: - Waiting

    @Test func jobsAndSessionsSubmittedDuringSetupWaitForIt() async throws {
        try await LiveHost.run { client, host in
            let made = try await Self.upload(
                client, "slow", ["a.txt": "a\n"], setup: ["sleep 2; echo ready > ready.txt"])
            #expect(made.status == .created, "\(made.text)")
            let running = try await Self.setup(client, "slow")
            #expect(running["status"] == "running" || running["status"] == "pending", "\(running)")
            // The file tools do not wait: the file is not there yet.
            #expect(try await Self.read(host, "slow", "ready.txt") == "")
            let outputs = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<3 { group.addTask { try await Self.stdout(client, "slow", "cat ready.txt") } }
                group.addTask {
                    let session = try await SessionTests.create(client, project: "slow")
                    return try await SessionTests.run(client, session, "cat ready.txt", project: "slow")["output"]?
                        .stringValue ?? ""
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(outputs == Array(repeating: "ready\n", count: 4), "\(outputs)")
            #expect(try await Self.setup(client, "slow")["status"] == "succeeded")
        }
    }

    @Test func aSetupCutShortByAnEvictionRunsAgainWithTheNextJob() async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.upload(client, "cut", ["a.txt": "a\n"], setup: ["echo run >> runs.txt; sleep 3"])
            for _ in 0..<500 where try await Self.read(host, "cut", "runs.txt") != "run\n" {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(try await Self.setup(client, "cut")["status"] == "running")
            // The eviction kills the run with its sandbox, and writes the tree back as it was.
            let evicted = try await client.call(.delete, "/v1/projects/cut/workspace")
            #expect(evicted.status == .ok, "\(evicted.text)")
            #expect(try await Self.setup(client, "cut")["status"] == "pending")
            #expect(try await Self.stdout(client, "cut", "cat runs.txt") == "run\nrun\n")
            #expect(try await Self.setup(client, "cut")["status"] == "succeeded")
        }
    }

    @Test func aWarmUpStreamsTheSetupsStagesAfterTheCaches() async throws {
        try await LiveHost.run { client, host in
            // Registered (cold), so the warm-up materializes it and runs its setup.
            let commands = ["echo one", "echo two >&2"]
            _ = try await Self.upload(client, "cold", ["a.txt": "a\n"], setup: commands)
            try await host.evict("cold", discard: true)
            let stream = try await client.call(
                .post, "/v1/projects/cold/warm", headers: ["Accept": "text/event-stream"])
            #expect(stream.status == .ok, "\(stream.text)")
            let data = stream.text.split(separator: "\n").filter { $0.hasPrefix("data: ") }.map { $0.dropFirst(6) }
            let stages = data.compactMap { (try? JSON.parse(Array($0.utf8)))?["stage"]?.stringValue }
            #expect(
                stages.filter { $0.hasPrefix("setup") } == [
                    "setup_started", "setup_command", "setup_output", "setup_command", "setup_output", "setup_finished",
                ], "\(stream.text)")
            #expect(stages.firstIndex(of: "ready")! < stages.firstIndex(of: "setup_started")!, "\(stages)")
            #expect(stream.text.contains(#"data: {"command":"echo two >&2","index":2,"stage":"setup_command"}"#))
            #expect(stream.text.contains(#"data: {"stage":"setup_output","text":"two\n"}"#), "\(stream.text)")
            #expect(stream.text.contains(#""exit_code":0,"stage":"setup_finished","status":"succeeded"}"#))
            #expect(stream.text.contains("event: project\n"), "\(stream.text)")
            // Ran: a second warm-up streams no setup.
            let again = try await client.call(.post, "/v1/projects/cold/warm", headers: ["Accept": "text/event-stream"])
            #expect(!again.text.contains("setup_started"), "\(again.text)")
        }
    }

    // MARK: - Network and limits

    @Test func setupReachesItsAllowlistWhileTheProjectsJobsHaveNoNetwork() async throws {
        let site = try TemporaryDirectory()
        try "from the registry\n".write(toFile: site.path + "/pkg.txt", atomically: true, encoding: .utf8)
        let server = try LoopbackHTTPServer(serving: site.url, logRequests: true)
        defer { server.stop() }
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(["prep": Self.policy(port: server.port)], to: host)
            let fetch = "wget -q -O pkg.txt http://localhost:\(server.port)/pkg.txt"
            _ = try await Self.upload(client, "net", ["a": "a\n"], setup: [fetch], policy: "prep")
            #expect(try await Self.stdout(client, "net", "cat pkg.txt") == "from the registry\n")
            // The same request from a job: no proxy settings, and the proxy refuses it under
            // the project's own [network].
            #expect(try await Self.stdout(client, "net", "env | grep -ci proxy; true") == "0\n")
            let said = try await Self.stdout(
                client, "net",
                "printf 'CONNECT localhost:\(server.port) HTTP/1.1\\r\\n\\r\\n' | nc 127.0.0.1 3128")
            #expect(said.hasPrefix("HTTP/1.1 403 Forbidden\r\n"), "\(said)")
            #expect(said.contains("X-Corral-Egress-Rule: network_none\r\n") && said.contains("([network] mode"))
            #expect(server.requests == ["/pkg.txt"])
            // During setup, a host it does not list is refused naming [setup.network].
            let commands = ["wget -q -O - http://other.example/ 2>&1; true", fetch]
            let changed = try await client.call(
                .put, "/v1/projects/net/setup", json: ["commands": .array(commands.map(JSON.string))])
            #expect(changed.status == .ok)
            // The change starts setup in the background; a warm-up waits for that run (a
            // `POST …/setup/run` would start another if this one had already ended).
            let warmed = try await client.call(.post, "/v1/projects/net/warm")
            #expect(warmed.status == .ok, "\(warmed.text)")
            let run = try await client.call(.get, "/v1/projects/net")
            let tail = run.json["setup"]?["output_tail"]?.stringValue ?? ""
            #expect(run.json["setup"]?["status"] == "succeeded", "\(run.text)")
            #expect(tail.contains("403"), "\(tail)")
            #expect(server.requests == ["/pkg.txt", "/pkg.txt"])
        }
    }

    @Test func setupRunsUnderItsOwnLimitsAndTheJobsUnderTheProjects() async throws {
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(
                ["few": "rootfs = \"minimal\"\n[limits]\npids = 16\n[setup.limits]\npids = 256\n"], to: host)
            // 40 processes at once: more than the project's jobs may have, fewer than setup.
            let forks = "i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done; wait; echo forked $i"
            _ = try await Self.upload(client, "few", ["a": "a\n"], setup: ["\(forks) > forks.txt"], policy: "few")
            #expect(try await Self.stdout(client, "few", "cat forks.txt") == "forked 40\n")
            let job = try await Self.exec(client, "few", forks)
            #expect(job.json["stdout"] == "", "\(job.text)")
            #expect(
                job.json["stderr"]?.stringValue?.contains("can't fork: Resource temporarily unavailable") == true,
                "\(job.text)")
        }
    }

    // MARK: - Bad input

    @Test func badCommandsAreRefusedAndChangeNothing() async throws {
        try await LiveHost.run { client, host in
            let cases: [(String, String)] = [
                (#"{"commands": "true"}"#, "`commands` must be an array, got a string"),
                (#"{"commands": [1]}"#, "`commands[0]` must be a string, got a number"),
                (#"{"commands": ["true", "  "]}"#, "`commands` [1] is empty; give each command as a string"),
                (#"{"commands": ["a\u0000b"]}"#, "`commands` [0] contains a NUL byte"),
                (#"{}"#, "`commands` is required"),
                (
                    #"{"commands": [], "shell": "bash"}"#,
                    "`shell` is not a field of a setup request; the fields are `commands`"
                ),
            ]
            for (body, message) in cases {
                let reply = try await client.call(.put, "/v1/projects/demo/setup", raw: Array(body.utf8))
                #expect(reply.status == .unprocessableContent && reply.code == "invalid_argument", "\(reply.text)")
                #expect(reply.json["error"]?["message"]?.stringValue == message, "\(reply.text)")
            }
            let many = JSON.array(Array(repeating: "true", count: 33))
            let tooMany = try await client.call(.put, "/v1/projects/demo/setup", json: ["commands": many])
            #expect(tooMany.json["error"]?["message"] == "`commands` may hold at most 32 commands, got 33")
            let long = try await client.call(
                .put, "/v1/projects/demo/setup", json: ["commands": [.string(String(repeating: "x", count: 16385))]])
            #expect(long.json["error"]?["message"] == "`commands` [0] is longer than 16384 bytes")
            let query = try await client.call(
                .put, "/v1/projects/demo/archive?setup=pip%20install", raw: try LiveHost.archive(["a": "a"]))
            #expect(
                query.json["error"]?["message"]
                    == "`setup` must be a JSON array of command strings, e.g. [\"pip install -r requirements.txt\"]",
                "\(query.text)")
            let register = try await client.call(
                .put, "/v1/projects/demo", json: ["source": "file:///nowhere.tar.gz", "setup": [""]])
            #expect(register.json["error"]?["message"] == "`setup` [0] is empty; give each command as a string")
            let unknown = try await client.call(.put, "/v1/projects/nope/setup", json: ["commands": []])
            #expect(unknown.status == .notFound && unknown.code == "project_not_found")
            // Nothing changed: demo has no setup, and its jobs run.
            #expect(try await Self.setup(client, "demo") == ["status": "none", "commands": []])
            #expect(try await Self.stdout(client, "demo", "cat hello.sh") == "echo hello from sh\n")
        }
    }
}
