import Foundation

/// A TCP connection to a server on loopback, spoken byte by byte: for answers a test must
/// see arrive in parts (an event stream) and for upgraded (WebSocket) connections, which
/// HTTP clients collect whole or do not speak. Reads never block a thread: the socket is
/// non-blocking and waits are short sleeps.
final class RawConnection {
    let fd: Int32
    /// Everything read so far.
    private(set) var received: [UInt8] = []
    /// The peer closed its side.
    private(set) var closed = false

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard fd >= 0, connected == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit { close(fd) }

    var text: String { String(decoding: received, as: UTF8.self) }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }

    func send(_ bytes: [UInt8]) async throws {
        guard try await send(bytes, within: nil) else { return }
    }

    /// Sends `bytes`, waiting while the peer does not read; false if that lasts past
    /// `within` (a peer that stopped reading), true once everything is sent.
    func send(_ bytes: [UInt8], within: Duration?) async throws -> Bool {
        let deadline = within.map { ContinuousClock.now + $0 }
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                offset += n
            } else if errno == EAGAIN || errno == EINTR {
                if let deadline, ContinuousClock.now > deadline { return false }
                try await Task.sleep(for: .milliseconds(2))
            } else {
                throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
            }
        }
        return true
    }

    /// Reads until `done` holds for what was received, the peer closes, or `timeout`
    /// passes; returns whether `done` held.
    @discardableResult
    func read(timeout: Duration = .seconds(10), until done: ([UInt8]) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !done(received) {
            let n = Glibc.read(fd, &buffer, buffer.count)
            if n > 0 {
                received += buffer[0..<n]
                continue
            }
            if n == 0 {
                closed = true
                return done(received)
            }
            guard errno == EAGAIN || errno == EINTR, ContinuousClock.now < deadline else { return done(received) }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return true
    }

    /// Reads until `marker` has arrived.
    @discardableResult
    func read(until marker: String, timeout: Duration = .seconds(10)) async -> Bool {
        await read(timeout: timeout) { String(decoding: $0, as: UTF8.self).contains(marker) }
    }

    /// Reads until the peer closes.
    @discardableResult
    func readToEnd(timeout: Duration = .seconds(10)) async -> Bool {
        _ = await read(timeout: timeout) { _ in false }
        return closed
    }

    /// Forgets what was read so far.
    func reset() { received = [] }
}

/// The descriptors and threads of this process: what a relay must give back.
struct ProcessCounts: Equatable, CustomStringConvertible {
    var fds: Int
    var threads: Int
    /// What each descriptor is (`socket:[…]`, `anon_inode:[eventfd]`, a path), to say
    /// what changed when the counts differ.
    var kinds: [String: Int] = [:]

    static func now() -> ProcessCounts {
        let fm = FileManager.default
        let fds = (try? fm.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        var kinds: [String: Int] = [:]
        for fd in fds {
            let target = (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "?"
            let kind = target.hasPrefix("socket:") ? "socket" : target.hasPrefix("/") ? "file" : target
            kinds[kind, default: 0] += 1
        }
        return ProcessCounts(
            fds: fds.count, threads: (try? fm.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1,
            kinds: kinds)
    }

    /// Sockets, pipes and files: what a relay or a sandbox could leak. Event-loop descriptors
    /// (epoll, eventfd, timerfd) come and go with the runtime's own pools and are left out.
    var leakable: Int {
        kinds.filter { $0.key == "socket" || $0.key == "file" || $0.key.hasPrefix("pipe:") }.values.reduce(0, +)
    }

    var description: String { "fds=\(fds) threads=\(threads) \(kinds.sorted { $0.key < $1.key })" }
}
