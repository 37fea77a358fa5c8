import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Testing

/// The tool gateway and MCP over the fake host: envelopes, isError only for fixable
/// mistakes, unknown tools, aliases routed to the file tools.
@Suite struct ToolRouteTests {
    @Test func bashEnvelopeSaysTheExitCodeAndIsNotAnError() async throws {
        try await withAPI(backend: try FakeBackend(), files: FakeFiles()) { client in
            let reply = try await client.call(.post, "/v1/projects/alpha/tools/bash", json: ["command": "exit 2"])
            #expect(reply.status == .ok)
            #expect(reply.json["isError"] == false)
            #expect(reply.json["structuredContent"]?["exit_code"] == 2)
            #expect(reply.json["content"] == [["type": "text", "text": .string("[exit code 2, 0 ms]")]])
            let bad = try await client.call(
                .post, "/v1/projects/alpha/tools/bash", json: ["command": "echo", "timeout": "5"])
            #expect(bad.status == .unprocessableContent)
            #expect(bad.json["isError"] == true)
            if case .array(let content)? = bad.json["content"] {
                #expect(content.first?["text"] == "Error: `timeout` must be a number, got a string")
            }
            let policy = try await client.call(
                .post, "/v1/projects/alpha/tools/bash", json: ["command": "echo", "timeout": 5000])
            #expect(policy.status == .unprocessableContent)
            #expect(policy.json["structuredContent"]?["error"]?["code"] == "limit_exceeded", "\(policy.text)")
        }
    }

    /// Anthropic's bash tool sends `restart: true`, alone or with a command: alone it is
    /// answered at once (every command gets a fresh shell here), with a command it runs it.
    @Test func bashRestartAloneIsAnsweredAndWithACommandRunsIt() async throws {
        try await withAPI(backend: try FakeBackend(), files: FakeFiles()) { client in
            let alone = try await client.call(.post, "/v1/projects/alpha/tools/bash", json: ["restart": true])
            #expect(alone.status == .ok)
            #expect(alone.json["structuredContent"]?["restarted"] == true)
            let withCommand = try await client.call(
                .post, "/v1/projects/alpha/tools/bash", json: ["restart": true, "command": "echo hi"])
            #expect(withCommand.status == .ok)
            #expect(withCommand.json["structuredContent"]?["output"] == "hi\n", "\(withCommand.text)")
            let neither = try await client.call(.post, "/v1/projects/alpha/tools/bash", json: ["restart": false])
            #expect(neither.status == .unprocessableContent)
            #expect(neither.json["structuredContent"]?["error"]?["code"] == "invalid_argument", "\(neither.text)")
            #expect(neither.json["structuredContent"]?["error"]?["message"] == "`command` is required")
        }
    }

    @Test func unknownToolsAre404AndListTheTools() async throws {
        try await withAPI(backend: try FakeBackend(), files: FakeFiles()) { client in
            let reply = try await client.call(.post, "/v1/projects/alpha/tools/rm_rf", json: [:])
            #expect(reply.status == .notFound)
            #expect(reply.code == "unknown_tool")
            #expect(
                reply.json["error"]?["message"]?.stringValue?.hasPrefix(
                    "there is no tool `rm_rf`; the tools are bash, edit_file") == true)
            let list = try await client.call(.get, "/v1/projects/alpha/tools")
            guard case .array(let tools)? = list.json["tools"] else { Issue.record("no tools"); return }
            #expect(
                tools.compactMap { $0["name"]?.stringValue } == [
                    "bash", "job_output", "job_kill", "project_info", "read_file", "write_file", "edit_file",
                    "list_dir",
                    "glob", "grep", "file_info",
                ])
        }
        // Without file tools, only the command tools exist.
        try await withAPI(backend: try FakeBackend()) { client in
            let reply = try await client.call(.post, "/v1/projects/alpha/tools/read_file", json: ["path": "x"])
            #expect(reply.status == .notFound)
            #expect(
                reply.json["error"]?["message"]
                    == "there is no tool `read_file`; the tools are bash, job_kill, job_output, project_info")
        }
    }

    @Test func fileToolsAndAliasesGoToTheBackendAndItsErrorsAreModelErrors() async throws {
        let files = FakeFiles()
        files.put("alpha", "a.py", "print(1)\n")
        try await withAPI(backend: try FakeBackend(), files: files) { client in
            let read = try await client.call(.post, "/v1/projects/alpha/tools/read_text_file", json: ["path": "a.py"])
            #expect(read.json["content"] == [["type": "text", "text": "1\tprint(1)"]])
            #expect(read.json["structuredContent"] == ["path": "a.py"])
            let edit = try await client.call(
                .post, "/v1/projects/alpha/tools/edit_file", json: ["path": "a.py", "old_str": "nope", "new_str": "x"])
            #expect(edit.status == .ok)
            #expect(edit.json["isError"] == true)
            let beta = try await client.call(.post, "/v1/projects/beta/tools/read_file", json: ["path": "a.py"])
            #expect(beta.json["isError"] == true)
            let malformed = try await client.call(.post, "/v1/projects/alpha/tools/read_file", raw: Array("{".utf8))
            #expect(malformed.status == .badRequest)
        }
    }

    @Test func jobToolsFollowABackgroundJob() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let start = try await client.call(
                .post, "/v1/projects/alpha/tools/bash", json: ["command": "lines 3", "background": true])
            let id = try #require(start.json["structuredContent"]?["job_id"]?.stringValue)
            var output = ""
            var since = 0
            for _ in 0..<20 {
                let poll = try await client.call(
                    .post, "/v1/projects/alpha/tools/job_output",
                    json: ["job_id": .string(id), "since": .int(since), "wait": 2])
                output += poll.json["structuredContent"]?["output"]?.stringValue ?? ""
                since = Int(poll.json["structuredContent"]?["cursor"]?.numberValue ?? 0)
                if poll.json["structuredContent"]?["status"] == "completed" { break }
            }
            #expect(output == "line 1\nline 2\nline 3\n")
            let long = try await client.call(
                .post, "/v1/projects/alpha/tools/bash", json: ["command": "sleep 30", "background": true])
            let longID = try #require(long.json["structuredContent"]?["job_id"]?.stringValue)
            let badSignal = try await client.call(
                .post, "/v1/projects/alpha/tools/job_kill", json: ["job_id": .string(longID), "signal": "USR1"])
            #expect(badSignal.status == .unprocessableContent)
            #expect(badSignal.json["isError"] == true)
            #expect(
                ToolText.first(badSignal.json)
                    == "Error: `signal` must be one of TERM, INT, HUP, QUIT, KILL, got \"USR1\"")
            #expect(badSignal.json["structuredContent"]?["error"]?["code"] == "invalid_argument")
            // The bad call changed nothing: the job still runs, and the kill that follows is
            // the one that ends it (the fake exits with 128 + the signal's number).
            let kill = try await client.call(
                .post, "/v1/projects/alpha/tools/job_kill", json: ["job_id": .string(longID), "signal": "SIGKILL"])
            #expect(kill.json["structuredContent"]?["status"] == "cancelled")
            #expect(kill.json["structuredContent"]?["exit_code"] == 137)
            #expect(
                ToolText.first(kill.json)?.hasPrefix(
                    "Job \(longID) was stopped with SIGKILL; it and every process it started are gone.") == true)
            // A second job_kill stopped nothing: it says the job had already ended, not that
            // this call's signal stopped it.
            let again = try await client.call(
                .post, "/v1/projects/alpha/tools/job_kill", json: ["job_id": .string(longID)])
            #expect(ToolText.first(again.json) == "Job \(longID) had already ended (cancelled).")
            #expect(again.json["structuredContent"]?["exit_code"] == 137)
            let info = try await client.call(.post, "/v1/projects/alpha/tools/project_info", json: [:])
            #expect(info.json["structuredContent"]?["root"] == "/workspace")
            #expect(info.json["structuredContent"]?["id"] == "alpha")
        }
    }

    @Test func mcpSpeaksJSONRPCStatelessly() async throws {
        try await withAPI(backend: try FakeBackend(), files: FakeFiles()) { client in
            let path = "/v1/projects/alpha/mcp"
            let initialize = try await client.call(
                .post, path,
                json: ["jsonrpc": "2.0", "id": 1, "method": "initialize", "params": ["protocolVersion": "2025-03-26"]])
            #expect(initialize.json["result"]?["protocolVersion"] == "2025-03-26")
            #expect(initialize.json["result"]?["serverInfo"]?["name"] == "corral")
            let future = try await client.call(
                .post, path,
                json: ["jsonrpc": "2.0", "id": 2, "method": "initialize", "params": ["protocolVersion": "2099-01-01"]])
            #expect(future.json["result"]?["protocolVersion"] == "2025-11-25")
            let note = try await client.call(
                .post, path, json: ["jsonrpc": "2.0", "method": "notifications/initialized"])
            #expect(note.status == .accepted)
            let list = try await client.call(.post, path, json: ["jsonrpc": "2.0", "id": "x", "method": "tools/list"])
            if case .array(let tools)? = list.json["result"]?["tools"] {
                #expect(tools.count == 11)
                #expect(tools.first?["inputSchema"]?["required"] == ["command"])
            } else {
                Issue.record("no tools")
            }
            let call = try await client.call(
                .post, path,
                json: [
                    "jsonrpc": "2.0", "id": 3, "method": "tools/call",
                    "params": ["name": "bash", "arguments": ["command": "echo hi"]],
                ])
            #expect(call.json["id"] == 3)
            #expect(call.json["result"]?["structuredContent"]?["stdout"] == "hi\n")
            #expect(call.json["result"]?["isError"] == false)
            let unknown = try await client.call(
                .post, path, json: ["jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": ["name": "nope"]])
            #expect(unknown.json["error"]?["code"] == -32602)
            let wrong = try await client.call(
                .post, path,
                json: [
                    "jsonrpc": "2.0", "id": 5, "method": "tools/call",
                    "params": ["name": "bash", "arguments": ["command": 1]],
                ])
            #expect(wrong.json["result"]?["isError"] == true)
            let method = try await client.call(
                .post, path, json: ["jsonrpc": "2.0", "id": 6, "method": "resources/list"])
            #expect(method.json["error"]?["code"] == -32601)
            let parse = try await client.call(.post, path, raw: Array("{".utf8))
            #expect(parse.status == .badRequest)
            #expect(parse.json["error"]?["code"] == -32700)
            #expect(try await client.call(.get, path).status == .methodNotAllowed)
            let batch = try await client.call(
                .post, path,
                json: [
                    ["jsonrpc": "2.0", "id": 7, "method": "ping"], ["jsonrpc": "2.0", "method": "notifications/x"],
                ])
            #expect(batch.json == [["jsonrpc": "2.0", "id": 7, "result": [:]]])
        }
    }

    @Test func mcpStreamsProgressWhenAsked() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let reply = try await client.call(
                .post, "/v1/projects/alpha/mcp",
                json: [
                    "jsonrpc": "2.0", "id": 9, "method": "tools/call",
                    "params": ["name": "bash", "arguments": ["command": "lines 60"], "_meta": ["progressToken": "p1"]],
                ], headers: ["Accept": "application/json, text/event-stream"])
            #expect(reply.header("Content-Type") == "text/event-stream")
            let events = SSE.parse(reply.text)
            let progress = events.filter { $0.data["method"] == "notifications/progress" }
            #expect(!progress.isEmpty)
            #expect(progress.allSatisfy { $0.data["params"]?["progressToken"] == "p1" })
            #expect(events.last?.data["id"] == 9)
            #expect(events.last?.data["result"]?["structuredContent"]?["exit_code"] == 0)
        }
    }
}

/// The text of a tool answer's first content item.
enum ToolText {
    static func first(_ json: JSON) -> String? {
        guard case .array(let items)? = json["content"] else { return nil }
        return items.first?["text"]?.stringValue
    }
}
