import Foundation
import Sandbox
import TestSupport
import Testing

/// Sockets the host makes in a sandbox's network namespace: a listener inside that only
/// that sandbox reaches, connections to a port a job listens on, and the table of listening
/// ports; with nothing left behind.
@Suite struct NetworkNamespaceTests {
    /// Accepts one connection on `listener` and answers it with a fixed HTTP response.
    static func answerOnce(_ listener: Int32, body: String) -> Thread {
        let thread = Thread {
            var pollfd = Glibc.pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&pollfd, 1, 10_000) == 1 else { return }
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            var buffer = [UInt8](repeating: 0, count: 4096)
            _ = read(fd, &buffer, buffer.count)
            let reply = "HTTP/1.0 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
            _ = reply.withCString { write(fd, $0, strlen($0)) }
            close(fd)
        }
        thread.start()
        return thread
    }

    @Test func aListenerMadeByTheHostIsReachedFromItsSandboxOnly() async throws {
        // A first sandbox, job and namespace socket start the threads that stay for the
        // process's life (the event loop, the dispatch pool).
        try await SandboxFixture.with { warm in
            _ = try await warm.sh("true")
            close(try warm.sandbox.networkNamespace().socket())
        }
        try await Task.sleep(for: .milliseconds(200))
        let before = HostCounts.now()
        // Both sandboxes are destroyed, and their destroys waited for, before the count.
        try await SandboxFixture.with { a in
            try await SandboxFixture.with { b in
                let namespace = try a.sandbox.networkNamespace()
                let listener = try namespace.listen(port: 3128)
                defer { close(listener) }
                #expect(namespace.listeningPorts().contains(ListeningPort(port: 3128, addresses: ["127.0.0.1"])))
                _ = Self.answerOnce(listener, body: "from the host")
                let inside = try await a.sh("wget -q -O - http://127.0.0.1:3128/ 2>&1")
                #expect(inside.stdout == "from the host", "\(inside)")
                // The other sandbox has a loopback of its own, with nothing on 3128.
                let other = try await b.sh("wget -q -O - http://127.0.0.1:3128/ 2>&1; echo rc=$?")
                #expect(other.stdout.contains("Connection refused") && other.stdout.hasSuffix("rc=1\n"), "\(other)")
                // Something inside cannot take the port from the host.
                let taken = try await a.sh("nc -l -p 3128 127.0.0.1 2>&1; echo rc=$?")
                #expect(taken.stdout.contains("in use") && taken.stdout.hasSuffix("rc=1\n"), "\(taken)")
                // And the host cannot take a port a job holds.
                #expect(throws: SystemError("bind(127.0.0.1:3128 in the sandbox)", errno: EADDRINUSE)) {
                    _ = try namespace.listen(port: 3128)
                }
            }
        }
        try await Task.sleep(for: .milliseconds(300))
        let after = HostCounts.now()
        #expect(after.fds == before.fds && after.children == before.children, "\(before) → \(after)")
        #expect(after.mounts == before.mounts && after.threads <= before.threads, "\(before) → \(after)")
    }

    @Test func theHostConnectsToAPortAJobListensOnAndSeesItListed() async throws {
        try await SandboxFixture.with(files: ["index.html": "served inside\n"]) { f in
            let server = try await f.sandbox.start(
                JobSpec(["/bin/httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/workspace"], cwd: "/workspace"))
            let namespace = try f.sandbox.networkNamespace()
            var listed: [ListeningPort] = []
            for _ in 0..<200 where !listed.contains(where: { $0.port == 8080 }) {
                listed = namespace.listeningPorts()
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(listed == [ListeningPort(port: 8080, addresses: ["127.0.0.1"])])
            let fd = try namespace.socket()
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(8080).bigEndian
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            #expect(connected == 0, "connect: errno \(errno)")
            let request = "GET /index.html HTTP/1.0\r\n\r\n"
            _ = request.withCString { write(fd, $0, strlen($0)) }
            var reply: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(fd, &buffer, buffer.count)
                if n <= 0 { break }
                reply += buffer[0..<n]
            }
            let text = String(decoding: reply, as: UTF8.self)
            #expect(text.hasPrefix("HTTP/1.") && text.hasSuffix("\r\n\r\nserved inside\n"), "\(text)")
            _ = await server.cancel()
        }
    }

    @Test func theListeningTableParsesBothFamilies() {
        let v4 = """
              sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
               0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0
               1: 0100007F:0C38 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0
            """
        #expect(NetworkNamespace.listening(in: v4, v6: false) == [ListeningPort(port: 3128, addresses: ["127.0.0.1"])])
        let v6 = """
              sl  local_address                         remote_address                        st
               0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A
               1: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A
            """
        #expect(
            NetworkNamespace.listening(in: v6, v6: true) == [
                ListeningPort(port: 8080, addresses: ["::"]), ListeningPort(port: 80, addresses: ["::1"]),
            ])
    }
}
