import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Logging
import Synchronization
import Testing

@testable import API

/// Projects, compatibility shapes, operations, metrics, logs and the audit log.
@Suite struct ProjectOpsTests {
    @Test func warmStreamsProgressThenTheProject() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let stream = try await client.call(
                .post, "/v1/projects/alpha/warm", headers: ["Accept": "text/event-stream"])
            let events = SSE.parse(stream.text)
            #expect(events.map(\.event) == ["progress", "progress", "progress", "project"])
            #expect(events[0].data == ["stage": "downloading", "bytes": 10, "total": 20, "bytes_per_second": 100])
            #expect(events[3].data["state"] == "ready")
            let snapshot = try await client.call(.post, "/v1/projects/alpha/snapshot")
            #expect(snapshot.json["snapshot"]?["key"] == "snapshots/alpha")
            let evict = try await client.call(.delete, "/v1/projects/alpha/workspace?discard=true")
            #expect(evict.json == ["project": "alpha", "evicted": true, "discarded": true])
            let cold = try await client.call(.post, "/v1/projects/alpha/snapshot")
            #expect(cold.json["snapshot"] == .null)
            let json = try await client.call(.post, "/v1/projects/beta/warm")
            #expect(json.json["state"] == "ready")
            let badFlag = try await client.call(.delete, "/v1/projects/alpha/workspace?discard=maybe")
            #expect(badFlag.status == .unprocessableContent)
        }
    }

    @Test func compatibilityEndpointsKeepTheirShapes() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            let execute = try await client.call(.post, "/execute", json: ["project_id": "alpha", "command": "echo hi"])
            #expect(execute.json == ["stdout": "hi\n", "stderr": "", "return_code": 0])
            let failed = try await client.call(.post, "/execute", json: ["project_id": "alpha", "command": "exit 7"])
            #expect(failed.json["return_code"] == 7)
            let missing = try await client.call(.post, "/execute", json: ["command": "echo"])
            #expect(missing.json["error"]?["message"] == "`project_id` is required")
            let outside = try await client.call(
                .post, "/file/read", json: ["project_id": "alpha", "file_path": "../../etc/passwd"])
            #expect(
                outside.json == [
                    "content": "", "error": "path_outside_project: ../../etc/passwd is outside the project",
                    "exists": false, "size": nil,
                ])
            let absolute = try await client.call(
                .post, "/file/read", json: ["project_id": "alpha", "file_path": "/etc/passwd"])
            #expect(absolute.json["exists"] == false)
        }
    }

    @Test func sandboxPathsStayUnderWorkspace() {
        #expect(SandboxPaths.resolve("a/b/../c") == "/workspace/a/c")
        #expect(SandboxPaths.resolve("/workspace/x") == "/workspace/x")
        #expect(SandboxPaths.resolve("/workspace") == "/workspace")
        #expect(SandboxPaths.resolve("..") == nil)
        #expect(SandboxPaths.resolve("a/../../b") == nil)
        #expect(SandboxPaths.resolve("/workspacex/y") == nil)
        #expect(SandboxPaths.resolve("/proc/self/root") == nil)
        #expect(SandboxPaths.resolve("a\u{0}b") == nil)
    }

    @Test func metricsCountRequestsAndJobsByOutcome() async throws {
        try await withAPI(backend: try FakeBackend()) { client in
            _ = try await client.call(.post, "/v1/projects/alpha/exec", json: ["command": "exit 1"])
            _ = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "sleep 5", "timeout_s": 0.05])
            _ = try await client.call(.get, "/v1/projects/ghost")
            // The watcher records outcomes when jobs end, on its own task.
            var metrics = try await client.call(.get, "/metrics")
            for _ in 0..<100 where !metrics.text.contains(#"corral_jobs_total{outcome="timed_out"} 1"#) {
                try await Task.sleep(for: .milliseconds(50))
                metrics = try await client.call(.get, "/metrics")
            }
            #expect(metrics.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8")
            let text = metrics.text
            #expect(
                text.contains(
                    #"corral_http_requests_total{route="/v1/projects/{id}/exec",method="POST",status="200"} 2"#))
            #expect(
                text.contains(#"corral_http_requests_total{route="/v1/projects/{id}",method="GET",status="404"} 1"#))
            #expect(text.contains(#"corral_jobs_total{outcome="completed"} 1"#))
            #expect(text.contains(#"corral_jobs_total{outcome="timed_out"} 1"#))
            #expect(text.contains("corral_job_timeouts_total 1"))
            #expect(text.contains("corral_jobs_queued 0"))
            #expect(text.contains("# TYPE corral_http_request_duration_seconds histogram"))
        }
    }

    @Test func auditLogRecordsWhoRanWhatAndHowItEnded() async throws {
        let data = NSTemporaryDirectory() + "/corral-audit-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: data) }
        let backend = try FakeBackend()
        let configuration = APIConfiguration(port: 0, tokens: TestTokens.store, dataDirectory: data)
        try await withAPI(configuration, backend: backend) { client in
            _ = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "exit 4"], token: TestTokens.alpha)
            _ = try await client.call(
                .post, "/execute", json: ["project_id": "beta", "command": "echo"], token: TestTokens.beta)
            await backend.setOverloaded(true)
            _ = try await client.call(
                .post, "/v1/projects/alpha/exec", json: ["command": "echo refused"], token: TestTokens.alpha)
            backend.reloadSink.yield(7)
            backend.egressSink.yield(
                EgressEvent(
                    project: "alpha", host: "other.example", port: 443, address: nil, kind: "connect",
                    decision: .refused, rule: "not_allowed", bytesOut: 0, bytesIn: 0, durationMs: 2))
            backend.egressSink.yield(
                EgressEvent(
                    project: "alpha", host: "files.example", port: 443, address: "192.0.2.7", kind: "connect",
                    decision: .allowed, rule: nil, bytesOut: 517, bytesIn: 4096, durationMs: 31))
            // The watcher and the reload and egress audits write on their own tasks.
            for _ in 0..<100 {
                let text = (try? String(contentsOfFile: data + "/audit.log", encoding: .utf8)) ?? ""
                if text.contains("policy_reload") && text.contains("\"exit_code\":4") && text.contains("files.example")
                {
                    break
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            let metrics = try await client.call(.get, "/metrics", token: TestTokens.admin).text
            #expect(metrics.contains(#"corral_egress_connections_total{decision="refused"} 1"#), "\(metrics)")
            #expect(metrics.contains(#"corral_egress_connections_total{decision="allowed"} 1"#))
            #expect(metrics.contains(#"corral_egress_bytes_total{direction="out"} 517"#))
            #expect(metrics.contains(#"corral_egress_bytes_total{direction="in"} 4096"#))
        }
        let lines = try String(contentsOfFile: data + "/audit.log", encoding: .utf8).split(separator: "\n")
        let events = lines.map { try? JSON.parse(Array($0.utf8)) }
        let commands = events.filter { $0?["event"] == "command" }
        #expect(commands.map { $0?["who"] } == ["alpha", "beta"])
        #expect(commands.map { $0?["via"] } == ["exec", "compat:execute"])
        let results = events.filter { $0?["event"] == "result" }
        #expect(
            results.contains { $0?["command"] == "exit 4" && $0?["exit_code"] == 4 && $0?["status"] == "completed" })
        let refused = events.first { $0?["event"] == "command_refused" }
        #expect(refused??["code"] == "overloaded")
        #expect(refused??["command"] == "echo refused")
        let reload = events.first { $0?["event"] == "policy_reload" }
        #expect(reload??["generation"] == 7)
        #expect(reload??["policies"] == ["default": "sha256:x"])
        let egress = events.filter { $0?["event"] == "egress" }
        #expect(egress.count == 2)
        #expect(
            egress.first??["rule"] == "not_allowed" && egress.first??["decision"] == "refused"
                && egress.first??["host"] == "other.example" && egress.first??["project"] == "alpha")
        #expect(
            egress.last??["address"] == "192.0.2.7" && egress.last??["bytes_out"] == 517
                && egress.last??["bytes_in"] == 4096 && egress.last??["duration_ms"] == 31)
    }

    @Test func jsonLogsAreOneObjectPerLine() throws {
        let lines = LineSink()
        var handler = LineLogHandler(label: "corral.test", sink: lines.append)
        handler[metadataKey: "request_id"] = "r1"
        let logger = Logger(label: "corral.test") { _ in handler }
        logger.warning("disk \"full\"\nreally", metadata: ["project": "alpha"])
        let captured = lines.lines
        #expect(captured.count == 1)
        #expect(captured[0].hasSuffix("}\n"))
        #expect(captured[0].filter { $0 == "\n" }.count == 1)
        let json = try JSON.parse(Array(captured[0].utf8))
        #expect(json["msg"] == "disk \"full\"\nreally")
        #expect(json["level"] == "warning")
        #expect(json["logger"] == "corral.test")
        #expect(json["request_id"] == "r1")
        #expect(json["project"] == "alpha")
        #expect(json["ts"]?.stringValue?.count == 23)
    }
}

/// Collects log lines.
final class LineSink: Sendable {
    private let storage = Mutex<[String]>([])
    var lines: [String] { storage.withLock { $0 } }
    var append: @Sendable (String) -> Void { { line in self.storage.withLock { $0.append(line) } } }
}
