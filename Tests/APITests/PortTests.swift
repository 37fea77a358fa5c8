import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

/// A server a job runs inside a project's sandbox, reached through the API's ports route:
/// real sandboxes, busybox `httpd` and `nc` as the servers, the API on a real socket. No
/// host port is opened for any of them.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct PortTests {
    static let files: [String: String] = [
        "index.html": "<h1>served from the sandbox</h1>\n",
        // CGI scripts of busybox httpd: an event stream with a pause, and an echo.
        "cgi-bin/events": """
        #!/bin/sh
        printf 'Content-Type: text/event-stream\\r\\n\\r\\n'
        printf 'data: one\\n\\n'
        sleep 2
        printf 'data: two\\n\\n'

        """,
        "cgi-bin/echo": """
        #!/bin/sh
        printf 'Content-Type: text/plain\\r\\n\\r\\n'
        echo "method=$REQUEST_METHOD query=$QUERY_STRING"
        [ -n "$CONTENT_LENGTH" ] && head -c "$CONTENT_LENGTH"

        """,
        // For `nc -e`: answers the request with its own head, as the server received it.
        "dump.sh": """
        #!/bin/sh
        cr=$(printf '\\r')
        head=""
        while IFS= read -r line; do
          line=${line%"$cr"}
          [ -z "$line" ] && break
          head="$head$line
        "
        done
        printf 'HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: %d\\r\\nLocation: /next\\r\\nConnection: close\\r\\n\\r\\n%s' "${#head}" "$head"

        """,
        // For `nc -e`: accepts a WebSocket handshake (the RFC 6455 example key's answer),
        // then echoes every byte.
        "ws.sh": """
        #!/bin/sh
        cr=$(printf '\\r')
        first=""
        while IFS= read -r line; do
          line=${line%"$cr"}
          [ -z "$line" ] && break
          [ -z "$first" ] && first=$line
        done
        printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\\r\\nX-Request-Line: %s\\r\\n\\r\\n' "$first"
        exec cat

        """,
    ]

    static let handshake =
        "Host: corral\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

    /// Uploads `project` with ``files``, makes the scripts executable (which starts the
    /// sandbox), and starts each server as a background job; waits until every port listens.
    static func serve(
        _ client: any TestClientProtocol, _ project: String, _ servers: [UInt16: String], token: String? = nil
    ) async throws -> [String] {
        let upload = try await client.call(
            .put, "/v1/projects/\(project)/archive", raw: try LiveHost.archive(files), token: token)
        #expect(upload.status == .created || upload.status == .ok, "\(upload.text)")
        let chmod = try await client.call(
            .post, "/v1/projects/\(project)/exec", json: ["command": "chmod +x cgi-bin/* *.sh"], token: token)
        #expect(chmod.json["exit_code"] == 0, "\(chmod.text)")
        var jobs: [String] = []
        for (_, command) in servers.sorted(by: { $0.key < $1.key }) {
            let job = try await client.call(
                .post, "/v1/projects/\(project)/jobs", json: ["command": .string(command)], token: token)
            jobs.append(try #require(job.json["job_id"]?.stringValue, "\(job.text)"))
        }
        for _ in 0..<250 {
            let listed = try await client.call(.get, "/v1/projects/\(project)/ports", token: token)
            let ports = Set(
                (listed.json["ports"].flatMap { $0.arrayItems } ?? []).compactMap { $0["port"]?.numberValue })
            if Set(servers.keys.map(Double.init)).isSubset(of: ports) { return jobs }
            try await Task.sleep(for: .milliseconds(20))
        }
        Issue.record("the servers of \(project) never listened")
        return jobs
    }

    static func stop(_ client: any TestClientProtocol, _ project: String, _ jobs: [String], token: String? = nil)
        async throws
    {
        for job in jobs {
            _ = try await client.call(
                .post, "/v1/projects/\(project)/jobs/\(job)/cancel", json: ["signal": "KILL"], token: token)
        }
    }

    @Test func aFileAServerInTheSandboxServesIsReturnedExactlyAndItsPortIsListed() async throws {
        try await LiveHost.run { client, _ in
            let upload = try await client.call(.put, "/v1/projects/web/archive", raw: try LiveHost.archive(Self.files))
            #expect(upload.status == .created)
            // No sandbox yet: an empty list (none is started for it) and a clear refusal.
            let none = try await client.call(.get, "/v1/projects/web/ports")
            #expect(none.json == ["project": "web", "sandbox": false, "ports": []])
            let early = try await client.call(.get, "/v1/projects/web/ports/8080/index.html")
            #expect(early.status == .badGateway)
            #expect(early.code == "no_sandbox")
            #expect(try await client.call(.get, "/v1/projects/web").json["sandbox"] == false)

            let jobs = try await Self.serve(client, "web", [8080: "httpd -f -p 127.0.0.1:8080 -h /workspace"])
            let listed = try await client.call(.get, "/v1/projects/web/ports")
            let entry: JSON = ["port": 8080, "addresses": ["127.0.0.1"], "url": "/v1/projects/web/ports/8080/"]
            #expect(listed.json == ["project": "web", "sandbox": true, "ports": [entry]])
            let page = try await client.call(.get, "/v1/projects/web/ports/8080/index.html")
            #expect(page.status == .ok)
            #expect(page.text == Self.files["index.html"])
            #expect(page.header("Content-Length") == "\(Self.files["index.html"]!.utf8.count)")
            let head = try await client.call(.head, "/v1/projects/web/ports/8080/index.html")
            #expect(head.status == .ok && head.body.isEmpty)
            let missing = try await client.call(.get, "/v1/projects/web/ports/8080/absent.html")
            #expect(missing.status == .notFound)
            // Method, query and body reach the server; its answer comes back.
            let echo = try await client.call(
                .post, "/v1/projects/web/ports/8080/cgi-bin/echo?x=1&y=two", raw: Array("the body".utf8))
            #expect(echo.status == .ok)
            #expect(echo.text == "method=POST query=x=1&y=two\nthe body")

            // The project (and the model's project_info) lists it with its URL.
            let info = try await client.call(.get, "/v1/projects/web")
            #expect(info.json["ports"] == [entry])
            let tool = try await client.call(.post, "/v1/projects/web/tools/project_info")
            let text = tool.json["content"]?.arrayItems?.first?["text"]?.stringValue ?? ""
            #expect(
                text.contains(
                    "listening ports (reach them through the API):\n  8080 on 127.0.0.1: /v1/projects/web/ports/8080/"),
                "\(text)")
            #expect(tool.json["structuredContent"]?["ports"] == [entry])

            // The server gone, the port is closed, and the refusal says what to do.
            try await Self.stop(client, "web", jobs)
            let closed = try await client.call(.get, "/v1/projects/web/ports/8080/index.html")
            #expect(closed.status == .badGateway)
            #expect(closed.code == "port_closed")
            #expect(
                closed.json["error"]?["message"]
                    == "nothing listens on port 8080 in project web's sandbox (no port is listening); start your server as a background job (POST /v1/projects/web/jobs, or the bash tool with background: true) listening on port 8080 and bound to 127.0.0.1 or 0.0.0.0, then retry"
            )
            #expect(try await client.call(.get, "/v1/projects/web/ports").json["ports"] == [])
            // The host's egress proxy listens at 127.0.0.1:3128 in every sandbox: not listed,
            // and not relayed to.
            let proxy = try await client.call(.get, "/v1/projects/web/ports/3128/")
            #expect(proxy.status == .badGateway && proxy.code == "port_reserved", "\(proxy.text)")
            #expect(
                proxy.json["error"]?["message"]
                    == "port 3128 in project web's sandbox is Corral's egress proxy (docs/NETWORK.md), not a server of the project's; serve on another port"
            )
        }
    }

    @Test func anEventStreamArrivesEventByEventNotWhenItEnds() async throws {
        try await LiveHost.run { client, _ in
            let jobs = try await Self.serve(client, "web", [8080: "httpd -f -p 127.0.0.1:8080 -h /workspace"])
            let connection = try RawConnection(port: try #require(client.port))
            let start = ContinuousClock.now
            try await connection.send("GET /v1/projects/web/ports/8080/cgi-bin/events HTTP/1.1\r\nHost: corral\r\n\r\n")
            // The script sleeps 2 s between its events: the first must come long before.
            #expect(await connection.read(until: "data: one\n\n", timeout: .seconds(5)), "\(connection.text)")
            let first = ContinuousClock.now - start
            #expect(first < .milliseconds(1500), "the first event took \(first)")
            #expect(!connection.text.contains("data: two"))
            #expect(connection.text.hasPrefix("HTTP/1.1 200 OK\r\n"), "\(connection.text)")
            #expect(connection.text.lowercased().contains("content-type: text/event-stream"))
            // Then the second, and the end of the chunked body.
            #expect(await connection.read(until: "data: two\n\n", timeout: .seconds(5)))
            #expect(ContinuousClock.now - start > .milliseconds(1800))
            #expect(await connection.read(until: "\r\n0\r\n\r\n", timeout: .seconds(5)), "\(connection.text)")
            try await Self.stop(client, "web", jobs)
        }
    }

    @Test func aWebSocketUpgradeIsRelayedBothWaysByteForByte() async throws {
        try await LiveHost.run { client, _ in
            let jobs = try await Self.serve(client, "web", [8081: "nc -ll -p 8081 -e /workspace/ws.sh"])
            let connection = try RawConnection(port: try #require(client.port))
            try await connection.send("GET /v1/projects/web/ports/8081/chat?room=1 HTTP/1.1\r\n\(Self.handshake)\r\n")
            #expect(await connection.read(until: "\r\n\r\n"), "\(connection.text)")
            let head = connection.text.lowercased()
            #expect(head.hasPrefix("http/1.1 101 switching protocols\r\n"), "\(connection.text)")
            #expect(head.contains("upgrade: websocket\r\n") && head.contains("connection: upgrade\r\n"))
            #expect(head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"), "\(connection.text)")
            // The server saw the path after the port, query kept.
            #expect(head.contains("x-request-line: get /chat?room=1 http/1.1\r\n"), "\(connection.text)")
            // Both ways, more than once, any bytes (a masked frame, then plain text).
            for message in [[0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58], Array("again\n".utf8)] {
                connection.reset()
                try await connection.send(message)
                #expect(await connection.read { $0 == message }, "\(connection.received) for \(message)")
            }
            try await Self.stop(client, "web", jobs)
            // The server's end closed: the relay closes the client's.
            #expect(await connection.readToEnd())
        }
    }

    @Test func tokensProjectsAndPortsAreCheckedAsOnEveryProjectRoute() async throws {
        let configuration = APIConfiguration(port: 0, tokens: TestTokens.store)
        try await LiveHost.run(configuration) { client, _ in
            let alpha = TestTokens.alpha
            let jobs = try await Self.serve(
                client, "alpha-web", [8082: "nc -l -p 8082 -e /workspace/dump.sh"], token: alpha)
            // Another tenant's token cannot reach it, nor list it; no token is 401.
            for path in ["/v1/projects/alpha-web/ports", "/v1/projects/alpha-web/ports/8082/"] {
                let other = try await client.call(.get, path, token: TestTokens.beta)
                #expect(other.status == .forbidden && other.code == "forbidden", "\(path)")
                #expect(try await client.call(.get, path).status == .unauthorized)
            }
            for bad in ["0", "65536", "http", "-1", "80.5"] {
                let reply = try await client.call(.get, "/v1/projects/alpha-web/ports/\(bad)/", token: alpha)
                #expect(reply.status == .unprocessableContent && reply.code == "invalid_argument", "\(bad)")
            }
            let message = try await client.call(.get, "/v1/projects/alpha-web/ports/0/", token: alpha)
            #expect(message.json["error"]?["message"] == "`port` must be between 1 and 65535, got 0")
            let unknown = try await client.call(.get, "/v1/projects/alpha-none/ports/80/", token: alpha)
            #expect(unknown.status == .notFound && unknown.code == "project_not_found")
            let invalid = try await client.call(.get, "/v1/projects/alpha%20x/ports", token: TestTokens.admin)
            #expect(invalid.status == .badRequest && invalid.code == "invalid_project")

            // What the server receives: the path after the port with its query, its own
            // Host, the prefix it lost, and neither the caller's token nor Corral's headers.
            let dumped = try await client.call(
                .get, "/v1/projects/alpha-web/ports/8082/some/path?x=1&y=2", token: alpha,
                headers: ["X-Custom": "kept", "X-Corral-On-Behalf-Of": "mallory"])
            #expect(dumped.status == .ok)
            let lines = dumped.text.split(separator: "\n").map(String.init)
            #expect(lines.first == "GET /some/path?x=1&y=2 HTTP/1.1", "\(dumped.text)")
            #expect(lines.contains("Host: 127.0.0.1:8082"), "\(dumped.text)")
            #expect(lines.contains("X-Forwarded-Prefix: /v1/projects/alpha-web/ports/8082"), "\(dumped.text)")
            #expect(lines.contains("X-Custom: kept"), "\(dumped.text)")
            #expect(!dumped.text.lowercased().contains("authorization"), "\(dumped.text)")
            #expect(!dumped.text.lowercased().contains("x-corral"), "\(dumped.text)")
            #expect(!dumped.text.contains(alpha))
            // A redirect to an absolute path stays inside the relay.
            #expect(dumped.header("Location") == "/v1/projects/alpha-web/ports/8082/next")
            try await Self.stop(client, "alpha-web", jobs, token: alpha)
        }
    }

    @Test func aServerThatNeverAnswersTimesOutWith504() async throws {
        var configuration = APIConfiguration(port: 0)
        configuration.limits.portIdleTimeout = .seconds(1)
        try await LiveHost.run(configuration) { client, _ in
            // nc accepts and reads, and never answers.
            let jobs = try await Self.serve(client, "web", [8083: "nc -l -p 8083 -e sleep 30"])
            let start = ContinuousClock.now
            let reply = try await client.call(.get, "/v1/projects/web/ports/8083/")
            #expect(reply.status == .gatewayTimeout && reply.code == "port_timeout", "\(reply.text)")
            #expect(ContinuousClock.now - start < .seconds(5))
            try await Self.stop(client, "web", jobs)
        }
    }

    @Test func relaysLeaveNoDescriptorOrThreadBehindNorDoesTheSandboxTheyReached() async throws {
        try await LiveHost.run { client, _ in
            let port = try #require(client.port)
            /// One sandbox's life: servers, every kind of relay, then the sandbox destroyed.
            func cycle() async throws {
                let jobs = try await Self.serve(
                    client, "web",
                    [8080: "httpd -f -p 127.0.0.1:8080 -h /workspace", 8081: "nc -ll -p 8081 -e /workspace/ws.sh"])
                for _ in 0..<10 {
                    let page = try await client.call(.get, "/v1/projects/web/ports/8080/index.html")
                    #expect(page.text == Self.files["index.html"])
                }
                for _ in 0..<3 {
                    #expect(try await client.call(.get, "/v1/projects/web/ports/9999/").code == "port_closed")
                }
                let events = try RawConnection(port: port)
                try await events.send("GET /v1/projects/web/ports/8080/cgi-bin/events HTTP/1.1\r\nHost: c\r\n\r\n")
                #expect(await events.read(until: "data: one"))
                // A client that leaves mid-stream.
                shutdown(events.fd, Int32(SHUT_RDWR))
                let socket = try RawConnection(port: port)
                try await socket.send("GET /v1/projects/web/ports/8081/ HTTP/1.1\r\n\(Self.handshake)\r\n")
                #expect(await socket.read(until: "\r\n\r\n"))
                try await socket.send("hello\n")
                #expect(await socket.read(until: "hello\n"))
                try await Self.stop(client, "web", jobs)
                let evicted = try await client.call(.delete, "/v1/projects/web/workspace?discard=true")
                #expect(evicted.json["evicted"] == true)
                try await Task.sleep(for: .seconds(1))
            }
            // The first cycle starts what stays for the process's life (event loops, pools).
            try await cycle()
            let before = ProcessCounts.now()
            try await cycle()
            // A destroyed sandbox's event loop and the proxy's listener close on their own
            // threads: give them a moment. A leak never comes back down.
            var after = ProcessCounts.now()
            for _ in 0..<60 where !(after.leakable == before.leakable && after.threads <= before.threads) {
                try await Task.sleep(for: .milliseconds(50))
                after = ProcessCounts.now()
            }
            #expect(after.leakable == before.leakable && after.threads <= before.threads, "\(before) → \(after)")
        }
    }
}

extension JSON {
    /// The items of an array, nil for anything else.
    var arrayItems: [JSON]? {
        if case .array(let items) = self { return items }
        return nil
    }
}
