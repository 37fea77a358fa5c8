import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Logging
import Synchronization
import Testing

@testable import API

/// Requests an audit of the host side found dangerous: each one once took the whole host
/// down, multiplied one request into many, or let one token crowd out the others. Every
/// test here names the attack and asserts the exact refusal, and that the host still serves.
@Suite struct HostileRequestTests {
    // MARK: - Integers from a request never reach arithmetic unchecked

    /// `Last-Event-ID: Int.min` on a running job once trapped on `base - cursor` and ended
    /// the process, taking every tenant's jobs with it.
    @Test func aLastEventIDOutOfRangeIsRefusedAndTheHostKeepsServing() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let job = try await client.call(.post, "/v1/projects/alpha/jobs", json: ["command": "sleep 5"])
            let id = try #require(job.json["job_id"]?.stringValue)
            for hostile in [
                "-9223372036854775808", "-1", "9223372036854775807", "99999999999999999999", "1e3", "7x",
                "2305843009213693952",
            ] {
                let reply = try await client.call(
                    .get, "/v1/projects/alpha/jobs/\(id)/events", headers: ["Last-Event-ID": hostile])
                #expect(reply.status == .unprocessableContent, "\(hostile)")
                #expect(reply.code == "invalid_argument", "\(hostile)")
                #expect(reply.json["error"]?["message"]?.stringValue?.hasPrefix("`Last-Event-ID` must be") == true)
            }
            let still = try await client.call(.get, "/v1/projects/alpha/jobs/\(id)")
            #expect(still.json["status"] == "running")
            let cancel = try await client.call(.post, "/v1/projects/alpha/jobs/\(id)/cancel")
            #expect(cancel.json["status"] == "cancelled")
        }
    }

    /// The largest cursor the API accepts is still safe everywhere it is used.
    @Test func theLargestAcceptedCursorReadsNothingAndDoesNotTrap() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let job = try await client.call(.post, "/v1/projects/alpha/jobs", json: ["command": "lines 3"])
            let id = try #require(job.json["job_id"]?.stringValue)
            let top = String(JobSnapshot.cursors.upperBound)
            let poll = try await client.call(.get, "/v1/projects/alpha/jobs/\(id)?since=\(top)&wait=2")
            #expect(poll.status == .ok)
            #expect(poll.json["output"] == "")
            let events = try await client.call(
                .get, "/v1/projects/alpha/jobs/\(id)/events", headers: ["Last-Event-ID": top])
            #expect(events.status == .ok)
            #expect(SSE.parse(events.text).filter { $0.event == "output" }.isEmpty)
            #expect(SSE.parse(events.text).last?.event == "exit")
        }
    }

    // MARK: - One request is worth one request

    static func rpc(_ id: Int, _ method: String, _ params: JSON = [:]) -> JSON {
        ["jsonrpc": "2.0", "id": .int(id), "method": .string(method), "params": params]
    }

    static func bash(_ id: Int, _ command: String) -> JSON {
        rpc(id, "tools/call", ["name": "bash", "arguments": ["command": .string(command), "background": true]])
    }

    /// 178,000 `tools/list` in one 8 MiB batch once built a 945 MB reply and 3.2 GB of RSS.
    @Test func aBatchOverTheCapIsRefusedWholeAndNothingRuns() async throws {
        let backend = try FakeBackend()
        try await withAPI(backend: backend) { client in
            let batch = JSON.array((1...33).map { Self.bash($0, "echo \($0)") })
            let reply = try await client.call(.post, "/v1/projects/alpha/mcp", json: batch)
            #expect(reply.status == .badRequest)
            #expect(reply.json["error"]?["code"] == -32600)
            #expect(
                reply.json["error"]?["message"]
                    == "invalid request: a batch of 33 messages; at most 32 per request, none was run")
            let jobs = try await client.call(.get, "/v1/projects/alpha/jobs")
            #expect(jobs.json["jobs"]?.arrayCount == 0)
            let empty = try await client.call(.post, "/v1/projects/alpha/mcp", json: .array([]))
            #expect(empty.status == .badRequest)
            #expect(empty.json["error"]?["code"] == -32600)
            let full = try await client.call(
                .post, "/v1/projects/alpha/mcp", json: .array((1...32).map { Self.rpc($0, "ping") }))
            #expect(full.status == .ok)
            #expect(full.json.arrayCount == 32)
        }
    }

    /// Once the replies of a batch pass the cap, the rest are answered with an error and
    /// never run.
    @Test func aBatchStopsRunningOnceItsRepliesPassTheCap() async throws {
        var configuration = APIConfiguration(port: 0)
        configuration.limits.maxBatchReplyBytes = 1
        try await withAPI(configuration, backend: try FakeBackend()) { client in
            let batch: JSON = [Self.rpc(1, "tools/list"), Self.bash(2, "echo two"), Self.rpc(3, "ping")]
            let reply = try await client.call(.post, "/v1/projects/alpha/mcp", json: batch)
            #expect(reply.status == .ok)
            guard case .array(let replies) = reply.json else {
                Issue.record("not a batch reply: \(reply.text)")
                return
            }
            #expect(replies.count == 3)
            #expect(replies[0]["result"]?["tools"]?.arrayCount ?? 0 > 0)
            for unrun in replies[1...] {
                #expect(unrun["error"]?["code"] == -32000)
                #expect(unrun["error"]?["data"]?["code"] == "reply_too_large")
            }
            let jobs = try await client.call(.get, "/v1/projects/alpha/jobs")
            #expect(jobs.json["jobs"]?.arrayCount == 0)
        }
    }

    /// An open server's one caller (a local harness running tools in parallel) is not
    /// throttled unless the server is asked to (`--open-rate`); then it is, by that rate.
    @Test func anOpenServerThrottlesItsCallerOnlyWhenAsked() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            for index in 0..<300 {
                let reply = try await client.call(.get, "/v1/projects/alpha")
                guard reply.status == .ok else {
                    Issue.record("request \(index) of an open server: \(reply.status) \(reply.text)")
                    return
                }
            }
        }
        var configuration = APIConfiguration(port: 0)
        configuration.limits.openRate = RateLimit(perSecond: 1, burst: 2)
        try await withAPI(configuration, backend: try FakeBackend()) { client in
            var statuses: [HTTPResponse.Status] = []
            for _ in 0..<3 { statuses.append(try await client.call(.get, "/v1/projects/alpha").status) }
            #expect(statuses == [.ok, .ok, .tooManyRequests])
            let refused = try await client.call(.get, "/v1/projects/alpha")
            #expect(
                refused.json["error"]?["message"]?.stringValue?.hasPrefix(
                    "token \"anonymous\" is over its rate of 1 requests a second (bursts of 2)") == true,
                "\(refused.text)")
        }
    }

    /// One request with 300 `bash` calls once ran 300 jobs charged as one request.
    @Test func eachMessageOfABatchIsChargedToTheCallersRate() async throws {
        // A burst of 3 that refills once in 1,000 s: the POST and two more messages.
        let tokens = TestTokens.store.adding(
            Principal(name: "batcher", projects: ["*"], admin: false, rate: RateLimit(perSecond: 0.001, burst: 3)),
            secret: "batch-secret-0123456789")
        let configuration = APIConfiguration(port: 0, tokens: tokens)
        try await withAPI(configuration, backend: try FakeBackend()) { client in
            let batch = JSON.array((1...5).map { Self.bash($0, "echo \($0)") })
            let reply = try await client.call(
                .post, "/v1/projects/alpha/mcp", json: batch, token: "batch-secret-0123456789")
            guard case .array(let replies) = reply.json else {
                Issue.record("not a batch reply: \(reply.text)")
                return
            }
            #expect(replies.count == 5)
            #expect(replies[0..<3].allSatisfy { $0["result"] != nil })
            for refused in replies[3...] {
                #expect(refused["error"]?["data"]?["code"] == "rate_limited")
                #expect(
                    refused["error"]?["message"]?.stringValue
                        == "token \"batcher\" is over its rate of 0.001 requests a second (bursts of 3); retry after 1000 s"
                )
            }
            let jobs = try await client.call(.get, "/v1/projects/alpha/jobs", token: TestTokens.admin)
            #expect(jobs.json["jobs"]?.arrayCount == 3)
            let next = try await client.call(.get, "/v1/projects/alpha/jobs", token: "batch-secret-0123456789")
            #expect(next.status == .tooManyRequests)
        }
    }

    // MARK: - Fairness between tokens

    /// Ten projects times 104 background jobs from one token once filled the host's queue.
    @Test func aTokenAtItsJobCapIsRefusedAndOtherTokensAreNot() async throws {
        var configuration = APIConfiguration(port: 0, tokens: TestTokens.store)
        configuration.limits.defaultMaxJobs = 3
        try await withAPI(configuration, backend: try FakeBackend(projects: ["alpha", "alpha2", "beta"])) { client in
            var ids: [String] = []
            for project in ["alpha", "alpha2", "alpha"] {
                let job = try await client.call(
                    .post, "/v1/projects/\(project)/jobs", json: ["command": "sleep 30"], token: TestTokens.alpha)
                #expect(job.status == .accepted)
                ids.append(try #require(job.json["job_id"]?.stringValue))
            }
            let over = try await client.call(
                .post, "/v1/projects/alpha2/jobs", json: ["command": "sleep 30"], token: TestTokens.alpha)
            #expect(over.status == .tooManyRequests)
            #expect(over.code == "too_many_jobs")
            #expect(
                over.json["error"]?["message"]
                    == "token \"alpha\" already has 3 jobs queued or running, its most at once; wait for one to end or cancel one"
            )
            #expect(over.header("Retry-After") == "1")
            let exec = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "echo hi"], token: TestTokens.alpha)
            #expect(exec.code == "too_many_jobs")
            let other = try await client.call(
                .post, "/v1/projects/beta/exec", json: ["command": "echo other"], token: TestTokens.beta)
            #expect(other.json["output"] == "other\n")
            let cancel = try await client.call(
                .post, "/v1/projects/alpha/jobs/\(ids[0])/cancel", token: TestTokens.alpha)
            #expect(cancel.json["status"] == "cancelled")
            let again = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "echo again"], token: TestTokens.alpha)
            #expect(again.json["output"] == "again\n")
            for id in ids[1...] {
                let project = id == ids[1] ? "alpha2" : "alpha"
                _ = try await client.call(.post, "/v1/projects/\(project)/jobs/\(id)/cancel", token: TestTokens.alpha)
            }
        }
    }

    @Test func aTokensFileCapOverridesTheDefault() throws {
        let store = try TokenStore.parse(
            Array(
                """
                {"tokens": [{"name": "a", "secret": "0123456789abcdef", "projects": ["*"], "max_jobs": 7},
                            {"name": "b", "secret": "0123456789abcdeg", "projects": ["*"]}]}
                """.utf8))
        #expect(store.authenticate("0123456789abcdef")?.maxJobs == 7)
        #expect(store.authenticate("0123456789abcdeg")?.maxJobs == nil)
        #expect(store.agentTokenNames == ["a", "b"])
        #expect(throws: APIError.self) {
            try TokenStore.parse(
                Array(
                    #"{"tokens": [{"name": "a", "secret": "0123456789abcdef", "projects": ["*"], "max_jobs": 0}]}"#.utf8
                ))
        }
        let worker = store.adding(
            Principal(name: "cluster", projects: ["*"], admin: true, forwarder: true), secret: "s")
        #expect(worker.agentTokenNames == ["a", "b"])
        #expect(
            TokenStore([]).adding(
                Principal(name: "cluster", projects: ["*"], admin: true, forwarder: true), secret: "s"
            ).agentTokenNames.isEmpty)
    }

    /// The same `Idempotency-Key` on two projects once returned the first project's job and
    /// never ran the second command.
    @Test func anIdempotencyKeyIsScopedToItsProject() async throws {
        let configuration = APIConfiguration(port: 0, tokens: TestTokens.store)
        try await withAPI(configuration, backend: try FakeBackend(projects: ["alpha", "alpha2"])) { client in
            let first = try await client.call(
                .post, "/v1/projects/alpha/jobs", json: ["command": "echo one"], token: TestTokens.alpha,
                headers: ["Idempotency-Key": "k"])
            let second = try await client.call(
                .post, "/v1/projects/alpha2/jobs", json: ["command": "echo two"], token: TestTokens.alpha,
                headers: ["Idempotency-Key": "k"])
            let one = try #require(first.json["job_id"]?.stringValue)
            let two = try #require(second.json["job_id"]?.stringValue)
            #expect(one != two)
            let done = try await client.call(.get, "/v1/projects/alpha2/jobs/\(two)?wait=5", token: TestTokens.alpha)
            #expect(done.json["output"] == "two\n")
            let retry = try await client.call(
                .post, "/v1/projects/alpha2/jobs", json: ["command": "echo two"], token: TestTokens.alpha,
                headers: ["Idempotency-Key": "k"])
            #expect(retry.json["job_id"]?.stringValue == two)
        }
    }

    // MARK: - Forwarded calls in a cluster

    /// Every forwarded call was once charged to the worker token's single bucket, so one
    /// tenant's load got every other tenant `429`.
    @Test func aWorkerChargesTheForwardedCallerNotTheWorkerToken() async throws {
        let worker = "worker-secret-0123456789"
        let tokens = TokenStore([
            (Principal(name: "cluster", projects: ["*"], admin: true, forwarder: true), worker),
            (
                Principal(name: "ops", projects: ["*"], admin: true, rate: RateLimit(perSecond: 1, burst: 2)),
                TestTokens.admin
            ),
        ])
        var configuration = APIConfiguration(port: 0, tokens: tokens)
        configuration.limits.defaultRate = RateLimit(perSecond: 1, burst: 2)
        try await withAPI(configuration, backend: try FakeBackend()) { client in
            func call(_ token: String, as caller: String?) async throws -> Reply {
                var headers: [String: String] = [:]
                if let caller {
                    headers["X-Corral-On-Behalf-Of"] = caller
                    headers["X-Corral-Caller-Rate"] = "1 2"
                }
                return try await client.call(.get, "/v1/projects/alpha", token: token, headers: headers)
            }
            // The noisy tenant spends its own bucket of 2 and is refused, by name.
            #expect(try await call(worker, as: "noisy%20one").status == .ok)
            #expect(try await call(worker, as: "noisy%20one").status == .ok)
            let refused = try await call(worker, as: "noisy%20one")
            #expect(refused.status == .tooManyRequests)
            #expect(refused.json["error"]?["message"]?.stringValue?.hasPrefix("token \"noisy one\" is over") == true)
            // Another tenant, and the worker token's own calls, still have theirs.
            #expect(try await call(worker, as: "quiet").status == .ok)
            #expect(try await call(worker, as: nil).status == .ok)
            #expect(try await call(worker, as: nil).status == .ok)
            // Only the worker token may name a caller: an admin naming one is charged itself.
            #expect(try await call(TestTokens.admin, as: "quiet").status == .ok)
            #expect(try await call(TestTokens.admin, as: "quiet").status == .ok)
            #expect(try await call(TestTokens.admin, as: "quiet").status == .tooManyRequests)
        }
    }

    @Test func aForwardedCallerRoundTripsThroughItsHeaders() throws {
        let caller = ForwardedCaller(name: "team a/agent \"7\"", rate: RateLimit(perSecond: 2.5, burst: 9))
        var fields = HTTPFields()
        for (name, value) in caller.headers { fields[HTTPField.Name(name)!] = value }
        #expect(ForwardedCaller(headers: fields) == caller)
        for bad in ["", "1", "-1 2", "1 -2", "nan 2", "1e9 2", "1 2 3"] {
            fields[ForwardedCaller.rateHeader] = bad
            #expect(ForwardedCaller(headers: fields) == nil, "\(bad)")
        }
    }

    // MARK: - Logs

    /// With `--log-format text`, a file name holding a newline once forged a log line.
    @Test func textLogsEscapeEveryControlCharacter() throws {
        let lines = LockedLines()
        var logger = Logger(label: "corral.test") { LineLogHandler(label: $0, format: .text, sink: lines.append) }
        logger[metadataKey: "principal"] = "alpha"
        logger.warning(
            "write-back failed",
            metadata: ["path": "a\n2026-12-07 info corral.api: forged\r\u{1b}[2J\\n\u{85}\u{2028}.txt"])
        let all = lines.all
        #expect(all.count == 1)
        let line = try #require(all.first)
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().allSatisfy { !$0.isNewline })
        #expect(
            line.hasSuffix(
                #" warning corral.test: write-back failed path=a\n2026-12-07 info corral.api: forged\r\u{1b}[2J\\n\u{85}\u{2028}.txt principal=alpha"#
                    + "\n"))
    }
}

/// Lines a log handler wrote, for tests.
final class LockedLines: Sendable {
    private let lines = Mutex<[String]>([])
    var all: [String] { lines.withLock { $0 } }
    var append: @Sendable (String) -> Void { { [self] line in lines.withLock { $0.append(line) } } }
}
