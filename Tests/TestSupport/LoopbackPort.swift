import Foundation

/// Ports for servers a test starts as separate processes, which must be told their port
/// before they bind it.
public enum LoopbackPort {
    /// A loopback port that nothing holds right now, below the kernel's ephemeral range.
    ///
    /// A port the kernel hands out for `bind(0)` comes from the ephemeral range, the same
    /// range every outgoing connection (curl, the host's Redis clients) takes its source
    /// port from: between this check and the server's own bind, a connection can take it
    /// and the server then fails to start. Ports under the range are only ever taken by an
    /// explicit bind, so the check holds until the server binds.
    public static func free() throws -> Int {
        let ephemeralStart = ephemeralRange()?.lowerBound ?? 32_768
        let low = 20_000
        let high = max(low + 1_000, ephemeralStart)
        for _ in 0..<200 {
            let port = Int.random(in: low..<high)
            if isFree(port) { return port }
        }
        throw TestSupportError("no free loopback port in \(low)..<\(high)")
    }

    /// Whether a listener could bind 127.0.0.1:`port` now (with `SO_REUSEADDR`, as servers do).
    public static func isFree(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// The kernel's ephemeral port range, from `/proc/sys/net/ipv4/ip_local_port_range`.
    static func ephemeralRange() -> ClosedRange<Int>? {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8)
        else { return nil }
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
        guard parts.count == 2, parts[0] <= parts[1] else { return nil }
        return parts[0]...parts[1]
    }
}

/// A log file for a server a test starts as a process: a restarted server appends to it,
/// and a server that fails to start says why there.
public enum ProcessLog {
    /// Starts `process` with its stdout and stderr appended to `path`, creating it. Our copy
    /// of the descriptor closes once the child has its own.
    public static func run(_ process: Process, loggingTo path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? output.close() }
        try output.seekToEnd()
        process.standardOutput = output
        process.standardError = output
        try process.run()
    }

    /// The error for `name` not answering on `port`: whether it still runs, and the end of its log.
    public static func failure(_ name: String, port: Int, process: Process, log path: String) -> TestSupportError {
        let state = process.isRunning ? "still running" : "exited with \(process.terminationStatus)"
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return TestSupportError(
            "\(name) did not come up on port \(port) (\(state)); its log ends:\n\(text.suffix(3000))")
    }
}
