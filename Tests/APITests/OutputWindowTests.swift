import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import TestSupport
import Testing

/// Long output over every way a model runs a command (the bash tool over HTTP, MCP without
/// and with a session, the exec route): the text says first what it leaves out and how to
/// read it, the JSON says it too, and no answer carries megabytes beside its window.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct OutputWindowTests {
    static let window = 1 << 20
    static let half = window / 2
    /// What an answer may weigh: three windows of output (the tool's text, `output`,
    /// `stdout`), each a seventh longer in JSON (every short line's newline is escaped), and
    /// the rest of the fields. The whole output is 6.9 MB.
    static let bound = 4 << 20

    /// `seq 1 1000000`, and where the answer's window of it starts: the first whole line of
    /// its last MiB.
    struct Seq {
        let bytes: [UInt8] = Array((1...1_000_000).map { "\($0)\n" }.joined().utf8)
        var total: Int { bytes.count }
        var start: Int {
            let base = total - OutputWindowTests.window
            guard bytes[base - 1] != 0x0A else { return base }
            return bytes[base...].firstIndex(of: 0x0A)! + 1
        }
        var shown: String { String(decoding: bytes[start...], as: UTF8.self) }
        /// stdout as an answer carries it: the first and last half window, a marker between.
        func stdout(log: String?) -> String {
            let left = total - OutputWindowTests.window
            let whereFull = log.map { " (full output in \($0))" } ?? ""
            return String(decoding: bytes[..<OutputWindowTests.half], as: UTF8.self)
                + "\n[... \(left) bytes omitted\(whereFull) ...]\n"
                + String(decoding: bytes[(total - OutputWindowTests.half)...], as: UTF8.self)
        }
    }

    /// The text of a tool result (`{content: [{type: "text", text}], …}`).
    static func text(_ result: JSON) -> String? {
        guard case .array(let items)? = result["content"] else { return nil }
        return items.first?["text"]?.stringValue
    }

    static func fieldsNote(_ left: Int) -> String {
        "`stdout` leaves out \(left) bytes from the middle of the stream (each field holds at most the first and last 512 KiB of its stream, or less under a smaller output cap of the project's policy)."
    }

    @Test func theBashToolSaysFirstWhatItLeftOutAndWhereTheWholeOutputIs() async throws {
        try await LiveHost.run { client, _ in
            let seq = Seq()
            #expect(seq.total == 6_888_896)
            let reply = try await client.call(
                .post, "/v1/projects/demo/tools/bash", json: ["command": "seq 1 1000000"])
            #expect(reply.status == .ok)
            #expect(reply.body.count < Self.bound, "\(reply.body.count) bytes")
            let result = reply.json["structuredContent"] ?? .null
            let id = try #require(result["job_id"]?.stringValue)
            let log = "/workspace/.corral/logs/\(id).log"
            let skipped = seq.start
            let shown = seq.total - skipped
            let note =
                "\(skipped) bytes of output before this point are left out; this shows the last \(shown) of \(seq.total) bytes. All of it is in \(log): read it with read_file (offset and limit count lines) or search it with grep; `head -c \(skipped) \(log) | tail -n 50` prints the 50 lines before this."
            let duration = try #require(result["duration_ms"]?.numberValue)
            #expect(reply.json["isError"] == false)
            let text = Self.text(reply.json) ?? ""
            #expect(text.hasPrefix("[\(note)]\n"), "\(text.prefix(600))")
            #expect(text == "[\(note)]\n" + seq.shown + "[exit code 0, \(Int(duration)) ms]")
            #expect(result["status"] == "completed")
            #expect(result["truncated"] == true)
            #expect(result["output"]?.stringValue == seq.shown)
            #expect(result["cursor"] == .int(seq.total))
            #expect(result["skipped_bytes"] == .int(skipped))
            #expect(result["stdout"]?.stringValue == seq.stdout(log: log))
            #expect(result["stdout_omitted_bytes"] == .int(seq.total - Self.window))
            #expect(result["stderr"] == "")
            #expect(result["stderr_omitted_bytes"] == 0)
            #expect(result["omitted_bytes"] == .int(seq.total - Self.window))
            #expect(result["log_path"] == .string(log))
            #expect(result["message"] == .string(note + " " + Self.fieldsNote(seq.total - Self.window)))

            // The log is the whole output, and the note's command prints what comes just before.
            let same = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": .string("seq 1 1000000 | cmp - \(log) && echo same")]
            )
            #expect(same.json["stdout"] == "same\n", "\(same.text.prefix(400))")
            let before = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": .string("head -c \(skipped) \(log) | tail -n 50")])
            let lines = String(decoding: seq.bytes[..<skipped], as: UTF8.self).split(separator: "\n").suffix(50)
            #expect(before.json["stdout"]?.stringValue == lines.joined(separator: "\n") + "\n")

            // A short output says nothing of the kind.
            let short = try await client.call(.post, "/v1/projects/demo/tools/bash", json: ["command": "echo hi"])
            let small = short.json["structuredContent"] ?? .null
            let ms = try #require(small["duration_ms"]?.numberValue)
            #expect(short.json["content"] == [["type": "text", "text": .string("hi\n[exit code 0, \(Int(ms)) ms]")]])
            #expect(small["truncated"] == false)
            #expect(small["skipped_bytes"] == 0)
            #expect(small["omitted_bytes"] == 0)
            #expect(small["stdout_omitted_bytes"] == 0)
            #expect(small["log_path"] == .null)
            #expect(small["message"] == .null)
        }
    }

    @Test func theExecRouteCarriesAWindowOfEachStream() async throws {
        try await LiveHost.run { client, _ in
            let seq = Seq()
            let reply = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "seq 1 1000000"])
            #expect(reply.body.count < 3 << 20, "\(reply.body.count) bytes")
            let id = try #require(reply.json["job_id"]?.stringValue)
            let log = "/workspace/.corral/logs/\(id).log"
            #expect(reply.json["output"]?.stringValue == seq.shown)
            #expect(reply.json["stdout"]?.stringValue == seq.stdout(log: log))
            #expect(reply.json["truncated"] == true)
            #expect(reply.json["skipped_bytes"] == .int(seq.start))
            #expect(reply.json["stdout_omitted_bytes"] == .int(seq.total - Self.window))
            // A long-poll from the start of a finished job says the same.
            let poll = try await client.call(.get, "/v1/projects/demo/jobs/\(id)?since=0")
            #expect(poll.json["skipped_bytes"] == .int(seq.start))
            #expect(poll.json["message"] == reply.json["message"])
        }
    }

    @Test func overMCPWithoutASessionTheTextStartsWithTheNote() async throws {
        try await LiveHost.run { client, _ in
            let seq = Seq()
            let reply = try await client.call(
                .post, "/v1/projects/demo/mcp",
                json: [
                    "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                    "params": ["name": "bash", "arguments": ["command": "seq 1 1000000"]],
                ])
            #expect(reply.body.count < Self.bound, "\(reply.body.count) bytes")
            let result = reply.json["result"] ?? .null
            let id = try #require(result["structuredContent"]?["job_id"]?.stringValue)
            let text = Self.text(result) ?? ""
            #expect(
                text.hasPrefix(
                    "[\(seq.start) bytes of output before this point are left out; this shows the last \(seq.total - seq.start) of \(seq.total) bytes. All of it is in /workspace/.corral/logs/\(id).log: "
                ), "\(text.prefix(400))")
            #expect(text.hasSuffix(" ms]"))
            #expect(result["structuredContent"]?["truncated"] == true)
            #expect(result["structuredContent"]?["stdout_omitted_bytes"] == .int(seq.total - Self.window))
        }
    }

    /// An MCP client with a session runs bash in a persistent shell, which keeps no log:
    /// the note says so, and how to keep a long output whole.
    @Test func overMCPInASessionTheNoteSaysTheHostDidNotKeepTheRest() async throws {
        try await LiveHost.run { client, _ in
            let seq = Seq()
            let opened = try await client.call(
                .post, "/v1/projects/demo/mcp",
                json: ["jsonrpc": "2.0", "id": 1, "method": "initialize", "params": ["protocolVersion": "2025-06-18"]])
            let session = try #require(opened.header("Mcp-Session-Id"))
            let reply = try await client.call(
                .post, "/v1/projects/demo/mcp",
                json: [
                    "jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": ["name": "bash", "arguments": ["command": "seq 1 1000000"]],
                ], headers: ["Mcp-Session-Id": session])
            #expect(reply.body.count < Self.bound, "\(reply.body.count) bytes")
            let result = reply.json["result"] ?? .null
            let run = result["structuredContent"] ?? .null
            #expect(run["session_id"]?.stringValue != nil)
            let note =
                "\(seq.start) bytes of output before this point are left out; this shows the last \(seq.total - seq.start) of \(seq.total) bytes. The host did not keep them: to read a long output whole, run the command again with its output sent to a file in the workspace (command > /workspace/out.log 2>&1) and read that with read_file or grep."
            let text = Self.text(result) ?? ""
            #expect(text == "[\(note)]\n" + seq.shown + "[exit code 0, cwd /workspace]", "\(text.suffix(300))")
            #expect(run["truncated"] == true)
            #expect(run["skipped_bytes"] == .int(seq.start))
            #expect(run["stdout"]?.stringValue == seq.stdout(log: nil))
            #expect(run["stdout_omitted_bytes"] == .int(seq.total - Self.window))
            #expect(run["omitted_bytes"] == .int(seq.total - Self.window))
            #expect(run["message"] == .string(note + " " + Self.fieldsNote(seq.total - Self.window)))
            _ = try await client.call(.delete, "/v1/projects/demo/mcp", headers: ["Mcp-Session-Id": session])
        }
    }
}
