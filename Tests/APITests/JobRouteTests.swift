import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Testing

/// Exec, jobs, long-poll, SSE, cancel and list, over the real job system with a fake runner.
@Suite struct JobRouteTests {
    static let resultKeys: Set<String> = [
        "status", "exit_code", "signal", "oom_killed", "duration_ms", "cpu_ms", "peak_memory_bytes", "output", "stdout",
        "stderr", "truncated", "omitted_bytes", "log_path", "unenforced_limits", "leftover_processes", "job_id",
    ]

    @Test func execReturnsTheWholeResultShapeAndANonZeroExitIsAResult() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let reply = try await client.call(.post, "/v1/projects/alpha/exec", json: ["command": "exit 3"])
            #expect(reply.status == .ok)
            guard case .object(let fields) = reply.json else { Issue.record("not an object"); return }
            #expect(Self.resultKeys.isSubset(of: Set(fields.keys)))
            #expect(reply.json["status"] == "completed")
            #expect(reply.json["exit_code"] == 3)
            #expect(reply.json["signal"] == .null)
            #expect(reply.json["message"] == .null)
        }
    }

    @Test func aBudgetThatRunsOutAnswersRunningAndTheJobGoesOn() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let reply = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "lines 10", "wait_s": 0.1])
            #expect(reply.json["status"] == "running")
            let id = try #require(reply.json["job_id"]?.stringValue)
            #expect(
                reply.json["message"]?.stringValue?.contains("after waiting 0.1 s; it goes on as job \(id)") == true)
            #expect(reply.json["exit_code"] == .null)
            var since = 0
            var output = ""
            for _ in 0..<40 {
                let poll = try await client.call(.get, "/v1/projects/alpha/jobs/\(id)?wait=5&since=\(since)")
                output += poll.json["output"]?.stringValue ?? ""
                since = Int(poll.json["cursor"]?.numberValue ?? 0)
                if poll.json["status"] == "completed" { break }
            }
            #expect(output == (1...10).map { "line \($0)\n" }.joined())
            let huge = try await client.call(.get, "/v1/projects/alpha/jobs/\(id)?wait=999999")
            #expect(huge.status == .unprocessableContent)
            let negative = try await client.call(.get, "/v1/projects/alpha/jobs/\(id)?since=-1")
            #expect(
                negative.json["error"]?["message"]?.stringValue
                    == "`since` must be between 0 and \(Int.max / 4), got -1")
        }
    }

    @Test func submitIs202WithLocationAndIdempotencyKeyReturnsTheSameJob() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let first = try await client.call(
                .post, "/v1/projects/alpha/jobs", json: ["command": "sleep 0.2"], headers: ["Idempotency-Key": "k1"])
            #expect(first.status == .accepted)
            let id = try #require(first.json["job_id"]?.stringValue)
            #expect(first.header("Location") == "/v1/projects/alpha/jobs/\(id)")
            let again = try await client.call(
                .post, "/v1/projects/alpha/jobs", json: ["command": "sleep 0.2"], headers: ["Idempotency-Key": "k1"])
            #expect(again.json["job_id"]?.stringValue == id)
            let other = try await client.call(
                .post, "/v1/projects/alpha/jobs", json: ["command": "sleep 0.2"], headers: ["Idempotency-Key": "k2"])
            #expect(other.json["job_id"]?.stringValue != id)
            let list = try await client.call(.get, "/v1/projects/alpha/jobs?limit=10")
            guard case .array(let jobs)? = list.json["jobs"] else { Issue.record("no jobs"); return }
            #expect(jobs.count == 2)
            #expect(jobs.allSatisfy { $0["background"] == true && $0["lane"] == "long" })
        }
    }

    @Test func aJobOfProjectAIsNotFoundThroughProjectB() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let job = try await client.call(.post, "/v1/projects/alpha/jobs", json: ["command": "sleep 5"])
            let id = try #require(job.json["job_id"]?.stringValue)
            for (method, path) in [
                (HTTPRequest.Method.get, "/v1/projects/beta/jobs/\(id)"),
                (.get, "/v1/projects/beta/jobs/\(id)/events"), (.post, "/v1/projects/beta/jobs/\(id)/cancel"),
            ] {
                let reply = try await client.call(method, path)
                #expect(reply.status == .notFound, "\(path)")
                #expect(reply.code == "job_not_found")
            }
            for tool in ["job_output", "job_kill"] {
                let reply = try await client.call(
                    .post, "/v1/projects/beta/tools/\(tool)", json: ["job_id": .string(id)])
                #expect(reply.status == .notFound)
                #expect(reply.json["isError"] == true)
            }
            // Still running: nothing through B touched it.
            let still = try await client.call(.get, "/v1/projects/alpha/jobs/\(id)")
            #expect(still.json["status"] == "running")
            let cancel = try await client.call(.post, "/v1/projects/alpha/jobs/\(id)/cancel")
            #expect(cancel.json["status"] == "cancelled")
            #expect(cancel.json["message"] == "The job was cancelled; it and every process it started were killed.")
        }
    }

    @Test func cancelSendsTheSignalAskedForAndRefusesOthersExactly() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            func start() async throws -> String {
                let job = try await client.call(.post, "/v1/projects/alpha/jobs", json: ["command": "sleep 30"])
                return try #require(job.json["job_id"]?.stringValue)
            }
            let id = try await start()
            let bad = try await client.call(.post, "/v1/projects/alpha/jobs/\(id)/cancel", json: ["signal": "USR1"])
            #expect(bad.status == .unprocessableContent)
            #expect(bad.code == "invalid_argument")
            #expect(bad.json["error"]?["message"] == "`signal` must be one of TERM, INT, HUP, QUIT, KILL, got \"USR1\"")
            let misspelt = try await client.call(.post, "/v1/projects/alpha/jobs/\(id)/cancel", json: ["sig": "INT"])
            #expect(misspelt.status == .unprocessableContent)
            #expect(
                misspelt.json["error"]?["message"]
                    == "`sig` is not a field of a cancel request; the fields are `signal`")
            let number = try await client.call(.post, "/v1/projects/alpha/jobs/\(id)/cancel", json: ["signal": 2])
            #expect(number.json["error"]?["message"] == "`signal` must be a string, got a number")
            // None of those touched the job.
            #expect(try await client.call(.get, "/v1/projects/alpha/jobs/\(id)").json["status"] == "running")
            let interrupted = try await client.call(
                .post, "/v1/projects/alpha/jobs/\(id)/cancel", json: ["signal": "INT"])
            #expect(interrupted.json["status"] == "cancelled")
            #expect(interrupted.json["exit_code"] == 130)
            for (name, code) in [("sighup", 129), ("KILL", 137)] {
                let other = try await start()
                let reply = try await client.call(
                    .post, "/v1/projects/alpha/jobs/\(other)/cancel", json: ["signal": .string(name)])
                #expect(reply.json["exit_code"] == .number(Double(code)), "\(name)")
            }
            let plain = try await start()
            #expect(try await client.call(.post, "/v1/projects/alpha/jobs/\(plain)/cancel").json["exit_code"] == 143)
        }
    }

    @Test func eventsStreamOutputStatusAndExitAndResumeFromLastEventID() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let job = try await client.call(.post, "/v1/projects/alpha/jobs", json: ["command": "lines 3"])
            let id = try #require(job.json["job_id"]?.stringValue)
            let stream = try await client.call(.get, "/v1/projects/alpha/jobs/\(id)/events")
            #expect(stream.header("Content-Type") == "text/event-stream")
            let events = SSE.parse(stream.text)
            let output = events.filter { $0.event == "output" }.compactMap { $0.data["text"]?.stringValue }.joined()
            #expect(output == "line 1\nline 2\nline 3\n")
            #expect(events.last?.event == "exit")
            #expect(events.last?.data["exit_code"] == 0)
            #expect(events.filter { $0.event == "status" }.last?.data["status"] == "completed")
            let resumed = try await client.call(
                .get, "/v1/projects/alpha/jobs/\(id)/events", headers: ["Last-Event-ID": "7"])
            let rest = SSE.parse(resumed.text).filter { $0.event == "output" }.compactMap {
                $0.data["text"]?.stringValue
            }
            #expect(rest.joined() == "line 2\nline 3\n")
        }
    }
}

/// Parses a Server-Sent Events body.
enum SSE {
    struct Event {
        var event: String
        var id: String?
        var data: JSON
    }

    static func parse(_ text: String) -> [Event] {
        text.components(separatedBy: "\n\n").compactMap { block in
            var event = "message"
            var id: String?
            var data = ""
            for line in block.split(separator: "\n") {
                if line.hasPrefix("event: ") { event = String(line.dropFirst(7)) }
                if line.hasPrefix("id: ") { id = String(line.dropFirst(4)) }
                if line.hasPrefix("data: ") { data += line.dropFirst(6) }
            }
            guard !data.isEmpty, let json = try? JSON.parse(Array(data.utf8)) else { return nil }
            return Event(event: event, id: id, data: json)
        }
    }
}
