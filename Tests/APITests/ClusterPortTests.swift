import Foundation
import Testing

/// A server a job runs on a worker, reached through the API node: listed, a file returned
/// exactly, an event stream relayed event by event and a WebSocket both ways, all over two
/// hops (node → owner → sandbox).
extension ClusterAPITests {
    @Test func aServerInASandboxIsReachedThroughTheAPINodeStreamsAndWebSocketsIncluded() async throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        let api = cluster.api!
        let created = try cluster.upload("web", PortTests.files)
        #expect(created["id"] as? String == "web", "\(created)")
        let none = api.json("GET", "/v1/projects/web/ports")
        #expect(none["sandbox"] as? Bool == false && (none["ports"] as? [Any])?.count == 0, "\(none)")
        #expect(cluster.exec("web", "chmod +x cgi-bin/* *.sh")["exit_code"] as? Int == 0)
        var jobs: [String] = []
        for command in ["httpd -f -p 127.0.0.1:8080 -h /workspace", "nc -ll -p 8081 -e /workspace/ws.sh"] {
            let body = String(decoding: try JSONSerialization.data(withJSONObject: ["command": command]), as: UTF8.self)
            jobs.append(try #require(api.json("POST", "/v1/projects/web/jobs", body)["job_id"] as? String))
        }
        var listed: [[String: Any]] = []
        for _ in 0..<250 where listed.count < 2 {
            listed = api.json("GET", "/v1/projects/web/ports")["ports"] as? [[String: Any]] ?? []
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(
            listed.compactMap { $0["url"] as? String } == [
                "/v1/projects/web/ports/8080/", "/v1/projects/web/ports/8081/",
            ])
        let info = api.json("GET", "/v1/projects/web")
        #expect((info["ports"] as? [[String: Any]])?.count == 2, "\(info)")

        let base = "http://127.0.0.1:\(api.port)/v1/projects/web/ports"
        #expect(Node.curl(["\(base)/8080/index.html"]) == PortTests.files["index.html"])
        let echo = Node.curl(["--data-binary", "through two hops", "\(base)/8080/cgi-bin/echo?q=1"])
        #expect(echo == "method=POST query=q=1\nthrough two hops")
        let closed = api.json("GET", "/v1/projects/web/ports/9999/")
        #expect((closed["error"] as? [String: Any])?["code"] as? String == "port_closed", "\(closed)")

        let events = try RawConnection(port: api.port)
        let start = ContinuousClock.now
        try await events.send("GET /v1/projects/web/ports/8080/cgi-bin/events HTTP/1.1\r\nHost: corral\r\n\r\n")
        #expect(await events.read(until: "data: one\n\n", timeout: .seconds(5)), "\(events.text)")
        #expect(ContinuousClock.now - start < .milliseconds(1500) && !events.text.contains("data: two"))
        #expect(await events.read(until: "data: two\n\n", timeout: .seconds(5)), "\(events.text)")

        let socket = try RawConnection(port: api.port)
        try await socket.send("GET /v1/projects/web/ports/8081/live HTTP/1.1\r\n\(PortTests.handshake)\r\n")
        #expect(await socket.read(until: "\r\n\r\n"), "\(socket.text)")
        #expect(socket.text.lowercased().hasPrefix("http/1.1 101 switching protocols\r\n"), "\(socket.text)")
        #expect(socket.text.lowercased().contains("x-request-line: get /live http/1.1\r\n"), "\(socket.text)")
        for message in ["one\n", "two\n"] {
            socket.reset()
            try await socket.send(message)
            #expect(await socket.read(until: message), "\(socket.text)")
        }
        for job in jobs { _ = api.json("POST", "/v1/projects/web/jobs/\(job)/cancel", "{\"signal\": \"KILL\"}") }
        #expect(await socket.readToEnd())
    }
}
