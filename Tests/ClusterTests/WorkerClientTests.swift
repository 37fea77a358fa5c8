import Cluster
import Foundation
import Glibc
import Host
import Testing

/// The HTTP client an API node forwards calls to workers with.
@Suite struct WorkerClientTests {
    /// A sub-second time-out was once truncated to 0 ms, which libcurl reads as "no limit":
    /// a worker that accepted and never answered held the caller forever.
    @Test func aSubSecondTimeOutEndsARequestToAWorkerThatNeverAnswers() async throws {
        // A listening socket nobody accepts on: the kernel completes the handshake from the
        // backlog, and no byte ever comes back.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(fd, pointer, length) == 0 && listen(fd, 8) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        #expect(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
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
