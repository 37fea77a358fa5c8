import API
import Foundation
import FoundationNetworking
import HTTPTypes
import Host
import HummingbirdTesting
import Logging
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

/// Floods, graceful shutdown and the official MCP client, over real sockets against a real
/// host.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct LiveLoadTests {
    /// Plain HTTP from many tasks at once (the test client holds one connection).
    static func send(_ port: Int, _ method: String, _ path: String, json: JSON? = nil, token: String? = nil)
        async throws -> (Int, [String: String], JSON)
    {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        request.timeoutInterval = 60
        if let json { request.httpBody = Data(json.serialized()) }
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        var headers: [String: String] = [:]
        for (key, value) in http.allHeaderFields { headers["\(key)".lowercased()] = "\(value)" }
        return (http.statusCode, headers, (try? JSON.parse(Array(data))) ?? .null)
    }

    @Test func aQueueFloodGets503WithRetryAfterAndTheHostKeepsServing() async throws {
        let limits = JobLimits(
            slots: [.short: 1, .long: 1], perProject: [.short: 1, .long: 1], maxQueued: 4, maxQueuedPerProject: 4)
        try await LiveHost.run(jobLimits: limits) { client, _ in
            let port = try #require(client.port)
            let replies = try await withThrowingTaskGroup(of: (Int, [String: String], JSON).self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        try await Self.send(port, "POST", "/v1/projects/demo/jobs", json: ["command": "sleep 30"])
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let accepted = replies.filter { $0.0 == 202 }
            let refused = replies.filter { $0.0 == 503 }
            #expect(accepted.count + refused.count == 20)
            #expect((4...6).contains(accepted.count), "\(accepted.count) accepted")
            #expect(refused.allSatisfy { $0.1["retry-after"] != nil && $0.2["error"]?["code"] == "overloaded" })
            #expect(try await client.call(.get, "/health").status == .ok)
            for reply in accepted {
                let id = try #require(reply.2["job_id"]?.stringValue)
                _ = try await client.call(.post, "/v1/projects/demo/jobs/\(id)/cancel")
            }
            let after = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "echo served"])
            #expect(after.json["stdout"] == "served\n")
        }
    }

    @Test func aRequestFloodFromOneTokenGets429AndOthersStillGetIn() async throws {
        let tokens = TokenStore([
            (
                Principal(name: "flood", projects: ["*"], admin: false, rate: RateLimit(perSecond: 5, burst: 5)),
                "flood-secret-0123456789"
            ),
            (Principal(name: "calm", projects: ["*"], admin: false), "calm-secret-0123456789"),
        ])
        try await LiveHost.run(APIConfiguration(port: 0, tokens: tokens)) { client, _ in
            let port = try #require(client.port)
            let statuses = try await withThrowingTaskGroup(of: (Int, [String: String], JSON).self) { group in
                for _ in 0..<40 {
                    group.addTask {
                        try await Self.send(port, "GET", "/v1/projects/demo", token: "flood-secret-0123456789")
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            let limited = statuses.filter { $0.0 == 429 }
            #expect(limited.count >= 30)
            #expect(limited.allSatisfy { $0.1["retry-after"] == "1" && $0.1["x-ratelimit-remaining"] == "0" })
            #expect(try await client.call(.get, "/v1/projects/demo", token: "calm-secret-0123456789").status == .ok)
        }
    }

    @Test func gracefulShutdownLetsRunningJobsFinishThenStops() async throws {
        let data = try TemporaryDirectory()
        let host = try await LiveHost.open(data)
        _ = try await host.upload("demo", archive: try LiveHost.archive(LiveHost.demo))
        let port = Mutex(0)
        let app = try buildApplication(APIConfiguration(port: 0), host: host, jobs: host.jobService) { bound in
            port.withLock { $0 = bound }
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [app, HostShutdownService(host: host, grace: .seconds(5))], logger: Logger(label: "test")))
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { try await group.run() }
            #expect(waitUntil(seconds: 10) { port.withLock { $0 } != 0 })
            let bound = port.withLock { $0 }
            let finishing = Task {
                try await Self.send(
                    bound, "POST", "/v1/projects/demo/exec", json: ["command": "sleep 1; echo finished"])
            }
            try await Task.sleep(for: .milliseconds(400))
            await group.triggerGracefulShutdown()
            let (status, _, body) = try await finishing.value
            #expect(status == 200)
            #expect(body["status"] == "completed")
            #expect(body["stdout"] == "finished\n")
            try await tasks.waitForAll()
        }
        // The host is shut: it accepts no jobs.
        await #expect(throws: JobError.shuttingDown) {
            try await host.jobService.submit(JobRequest(project: "demo", command: "true"))
        }
    }

    @Test(.enabled(if: PythonProcess.hasModule("mcp"), "needs the Python mcp package (make deps)"))
    func theOfficialPythonClientListsToolsRunsBashAndEditsAFile() async throws {
        let tokens = TokenStore([
            (Principal(name: "agent", projects: ["demo"], admin: false), "agent-secret-0123456789")
        ])
        try await LiveHost.run(APIConfiguration(port: 0, tokens: tokens), realFiles: true) { client, _ in
            let port = try #require(client.port)
            let script = try String(
                contentsOf: LiveHost.repository.appendingPathComponent("Tests/APITests/Scripts/mcp_session.py"),
                encoding: .utf8)
            let output = try PythonProcess.run(
                script, ["http://127.0.0.1:\(port)/v1/projects/demo/mcp", "agent-secret-0123456789"])
            let seen = try JSON.parse(Array(output.utf8))
            #expect(
                seen["tools"] == [
                    "bash", "edit_file", "file_info", "glob", "grep", "job_kill", "job_output", "list_dir",
                    "project_info", "python", "read_file", "write_file",
                ])
            #expect(seen["schemas"]?["bash"]?["required"] == ["command"])
            #expect(seen["bash"]?["isError"] == false)
            #expect(seen["bash"]?["structuredContent"]?["exit_code"] == 3)
            #expect(seen["bash"]?["structuredContent"]?["stdout"] == "hi\n")
            #expect(seen["slow"]?["structuredContent"]?["stdout"] == "tick 1\ntick 2\ntick 3\n")
            if case .array(let progress)? = seen["progress"] {
                #expect(progress.count >= 2)
            } else {
                Issue.record("no progress")
            }
            // The host's own file tools, on the real workspace.
            #expect(Self.text(seen["read"])?.contains("1\tprint('hello from python')") == true)
            #expect(seen["edit"]?["isError"] == false)
            #expect(Self.text(seen["reread"])?.contains("1\tprint('edited over mcp')") == true)
            #expect(seen["landed"]?["structuredContent"]?["stdout"] == "print('edited over mcp')\n")
            #expect(seen["missing"]?["isError"] == true)
            #expect(seen["missing"]?["structuredContent"]?["code"] == "old_str_not_found")
            #expect(seen["wrong"]?["isError"] == true)
            try Self.expectOneSession(seen["exchanges"])
            // Two sessions on one token: the one that never read hello.sh may not edit it.
            let reader = try Self.expectOneSession(seen["reader_exchanges"])
            let writer = try Self.expectOneSession(seen["writer_exchanges"])
            #expect(reader != writer)
            #expect(seen["other_read"]?["isError"] == false)
            #expect(seen["unread"]?["isError"] == true)
            #expect(seen["unread"]?["structuredContent"]?["code"] == "stale_file")
            #expect(seen["read_first"]?["isError"] == false, "\(seen["read_first"] ?? .null)")
        }
    }

    /// The client's HTTP exchanges were one session: the POSTs up to its `initialize` (the
    /// client probes `server/discover` first) named none, the `initialize` was answered with
    /// an id, every later request named that id, and the closing `DELETE` ended it (204).
    /// GETs (the client's try at a server stream) are 405. Returns the id.
    @discardableResult
    static func expectOneSession(_ exchanges: JSON?) throws -> String {
        guard case .array(let all)? = exchanges else {
            Issue.record("no exchanges")
            return ""
        }
        let opened = try #require(all.firstIndex { $0["issued"] != .null }, "no Mcp-Session-Id issued: \(all)")
        let id = try #require(all[opened]["issued"]?.stringValue)
        #expect(id.wholeMatch(of: /[0-9a-f]{8}-[0-9a-f]{32}/) != nil, "\(id)")
        for exchange in all[...opened] {
            #expect(exchange["method"] == "POST")
            #expect(exchange["sent"] == .null, "\(exchange)")
            #expect(exchange["status"] == 200)
        }
        for exchange in all[(opened + 1)...] {
            #expect(exchange["sent"] == .string(id), "\(exchange)")
            #expect(exchange["issued"] == .null)
            if exchange["method"] == "GET" { #expect(exchange["status"] == 405) }
        }
        #expect(all.filter { $0["method"] == "POST" }.allSatisfy { $0["status"] == 200 || $0["status"] == 202 })
        // A GET the client retries in the background may come after the DELETE.
        let calls = all.filter { $0["method"] != "GET" }
        #expect(calls.filter { $0["method"] == "DELETE" }.count == 1)
        #expect(calls.last?["method"] == "DELETE")
        #expect(calls.last?["status"] == 204)
        return id
    }

    /// The first text block of a tool result.
    static func text(_ result: JSON?) -> String? {
        guard case .array(let items)? = result?["content"] else { return nil }
        return items.first?["text"]?.stringValue
    }
}
