import Foundation
import Glibc
import Sandbox

/// A real HTTP file server on 127.0.0.1 with a free port, backed by Python's `http.server`.
///
/// Tests that download over HTTP start one, point it at a temporary directory and stop it
/// when done. It never listens on anything but loopback.
public final class LoopbackHTTPServer: @unchecked Sendable {
    public let port: Int
    public let root: URL
    private let process: Process

    /// Where each request's path is appended, one per line, when the server was asked to.
    public let requestLog: String?

    /// Starts serving `root` and returns once the port is known. With `logRequests`, every
    /// request's path is appended to ``requestLog`` (`.requests` in `root`): a counter
    /// outside any sandbox that a test can read.
    public init(serving root: URL, logRequests: Bool = false) throws {
        self.root = root
        let log = logRequests ? root.path + "/.requests" : nil
        requestLog = log
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        // Binding port 0 lets the kernel pick a free port; the script prints it.
        let script = """
            import functools, http.server, sys
            class H(http.server.SimpleHTTPRequestHandler):
                def log_message(self, *a):
                    if len(sys.argv) > 2:
                        with open(sys.argv[2], "a") as f: f.write(self.path + "\\n")
            h = functools.partial(H, directory=sys.argv[1])
            s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), h)
            print(s.server_address[1], flush=True)
            s.serve_forever()
            """
        process.arguments = ["python3", "-c", script, root.path] + (log.map { [$0] } ?? [])
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        self.process = process
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let text = String(data: line, encoding: .utf8),
            let port = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
        else {
            process.terminate()
            throw TestSupportError("loopback HTTP server did not report a port")
        }
        self.port = port
    }

    /// The URL of `path` on this server.
    public func url(_ path: String) -> String { "http://127.0.0.1:\(port)/\(path)" }

    /// The paths requested so far, in order (with ``init(serving:logRequests:)``).
    public var requests: [String] {
        guard let requestLog, let text = try? String(contentsOfFile: requestLog, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").map(String.init)
    }

    /// Stops the server and waits for it to exit.
    ///
    /// SIGKILL rather than `terminate()`: the test runner blocks SIGTERM and children inherit
    /// the mask, so a SIGTERM would sit pending forever.
    public func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit { if process.isRunning { stop() } }
}

/// A failure of the test harness itself, not of the code under test.
public struct TestSupportError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A temporary directory removed when the value is released or `remove()` is called.
public final class TemporaryDirectory: @unchecked Sendable {
    public let url: URL
    public var path: String { url.path }

    public init(prefix: String = "corral-test") throws {
        let base = FileManager.default.temporaryDirectory
        url = base.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    /// Unmounts whatever is mounted below the directory (a capped workspace is an ext4 image
    /// mounted there; a host keeps it mounted across its own shutdown), then deletes it.
    public func remove() {
        let mounts = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
        for line in mounts.split(separator: "\n").reversed() {
            let fields = line.split(separator: " ")
            // Lazy is fine here: the test is over, and the loop device detaches once it is idle.
            if fields.count > 4, fields[4].hasPrefix(path + "/") { umount2(String(fields[4]), Int32(MNT_DETACH)) }
        }
        try? FileManager.default.removeItem(at: url)
    }

    deinit { remove() }
}
