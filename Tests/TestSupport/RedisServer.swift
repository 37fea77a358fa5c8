import Foundation
import Glibc

/// A real `redis-server` on 127.0.0.1 with a free port, in a temporary directory, stopped
/// (and the directory removed) when the value goes away.
///
/// It runs with an append-only file fsynced on every write, so ``restart()`` after a
/// `kill -9` comes back with everything Redis acknowledged: the cluster tests rely on that
/// to check that nothing accepted is lost across an outage.
public final class RedisServer: @unchecked Sendable {
    public let port: Int
    public let directory: String
    public let password: String?
    /// `always` (every write on disk before Redis answers) or `everysec` (Redis's default).
    public let appendfsync: String
    private var process: Process?

    public static let binary = "/usr/bin/redis-server"
    public static var isAvailable: Bool { FileManager.default.isExecutableFile(atPath: binary) }

    public init(password: String? = nil, appendfsync: String = "always") throws {
        self.password = password
        self.appendfsync = appendfsync
        var template = Array((FileManager.default.temporaryDirectory.path + "/corral-redis-XXXXXX").utf8CString)
        guard let made = mkdtemp(&template) else { throw TestSupportError("mkdtemp: errno \(errno)") }
        directory = String(cString: made)
        port = try LoopbackPort.free()
        try start()
    }

    /// `redis://[:password@]127.0.0.1:PORT`.
    public var url: String { "redis://" + (password.map { ":\($0)@" } ?? "") + "127.0.0.1:\(port)" }

    public var isRunning: Bool { process?.isRunning ?? false }

    /// Starts the server (again, on the same port and directory) and waits until it answers.
    public func start() throws {
        guard process == nil else { return }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        var arguments = [
            "--bind", "127.0.0.1", "--port", String(port), "--dir", directory, "--appendonly", "yes",
            "--appendfsync", appendfsync, "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            "--logfile", directory + "/redis.log",
        ]
        if let password { arguments += ["--requirepass", password] }
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        guard waitUntil(seconds: 10, { ping() }) else {
            stop()
            throw TestSupportError("redis-server on port \(port) did not answer")
        }
    }

    /// SIGKILL, like a crash (the test runner blocks SIGTERM, and a crash is the point).
    public func stop() {
        guard let p = process else { return }
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    /// Kills the server and starts it again on the same port with the same data.
    public func restart(after pause: Double = 0) throws {
        stop()
        if pause > 0 { usleep(UInt32(pause * 1_000_000)) }
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Whether the server answers PING with PONG (not LOADING, not refused).
    public func ping() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = Self.loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { return false }
        let request = (password.map { "AUTH \($0)\r\n" } ?? "") + "PING\r\n"
        _ = request.withCString { send(fd, $0, strlen($0), Int32(MSG_NOSIGNAL)) }
        var reply = ""
        var buffer = [UInt8](repeating: 0, count: 256)
        while !reply.contains("PONG") && !reply.contains("-") {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { return false }
            reply += String(decoding: buffer[0..<n], as: UTF8.self)
        }
        return reply.contains("+PONG")
    }

    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
