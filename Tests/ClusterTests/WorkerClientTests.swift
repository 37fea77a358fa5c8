import Cluster
import Foundation
import Glibc
import Host
import Testing

/// The HTTP client an API node forwards calls to workers with.
@Suite struct WorkerClientTests {
    /// A socket listening on a loopback port the kernel picked, and the port.
    static func listener() throws -> (Int32, Int) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(fd >= 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        if !bound { close(fd) }
        try #require(bound)
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// A sub-second time-out was once truncated to 0 ms, which libcurl reads as "no limit":
    /// a worker that accepted and never answered held the caller forever.
    @Test func aSubSecondTimeOutEndsARequestToAWorkerThatNeverAnswers() async throws {
        // A listening socket nobody accepts on: the kernel completes the handshake from the
        // backlog, and no byte ever comes back.
        let (fd, port) = try Self.listener()
        defer { close(fd) }
        let client = WorkerClient(token: nil, timeout: .milliseconds(300))
        let outcome = await withTaskGroup(of: String.self) { group in
            group.addTask {
                do {
                    _ = try await client.send("GET", "http://127.0.0.1:\(port)/status")
                    return "answered"
                } catch ClusterError.workerUnreachable(let message) {
                    return message
                } catch {
                    return "\(error)"
                }
            }
            // The test's own guard: without the fix the request never ends.
            group.addTask {
                try? await Task.sleep(for: .seconds(20))
                return "still waiting after 20 s"
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
        #expect(outcome == "GET http://127.0.0.1:\(port)/status: Timeout was reached")
    }
}

extension WorkerClientTests {
    /// A session run or long-poll waits on the owner for as long as the caller asked
    /// (`wait_s` up to `--max-wait-s`): the call's own time-out replaces the client's, so a
    /// wait longer than the client's default is answered, not cut off.
    @Test func aRequestsOwnTimeOutOutlastsTheClientsDefault() async throws {
        let (fd, port) = try Self.listener()
        defer {
            // Wakes the server thread should it still wait in accept.
            shutdown(fd, Int32(SHUT_RDWR))
            close(fd)
        }
        // A worker that answers each request after 600 ms, as a long-poll does.
        let server = Thread {
            for _ in 0..<2 {
                let peer = accept(fd, nil, nil)
                guard peer >= 0 else { return }
                var buffer = [UInt8](repeating: 0, count: 4096)
                _ = read(peer, &buffer, buffer.count)
                usleep(600_000)
                let reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                // The second caller has given up: no SIGPIPE for writing to it.
                _ = reply.withCString { Glibc.send(peer, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
                close(peer)
            }
        }
        server.start()
        let client = WorkerClient(token: nil, timeout: .milliseconds(300))
        let url = "http://127.0.0.1:\(port)/v1/projects/p/sessions/s/runs/r?wait=0.5"
        let waited = try await client.send("GET", url, timeout: .seconds(5))
        #expect(waited.status == 200 && waited.body == Array("ok".utf8))
        await #expect(throws: ClusterError.self) { _ = try await client.send("GET", url) }
    }
}
