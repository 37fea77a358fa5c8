import Glibc

/// Collects one output stream of a job: the first and last bytes up to a cap, the count of
/// what was cut, and, once the cap is passed, the whole stream in a log file.
///
/// Memory stays bounded by `cap` whatever the job prints. Not thread-safe: its owner
/// guards it (a job's and a session run's state locks).
public final class OutputCapture {
    let cap: Int
    private(set) var head: [UInt8] = []
    private var tail: [UInt8] = []
    private var tailStart = 0
    private(set) var total = 0
    private let spill: (() -> Int32?)?
    private var logFD: Int32 = -1

    /// A capture that keeps no log file: what passes the cap is only counted.
    public convenience init(cap: Int) { self.init(cap: cap, spill: nil) }

    /// Appends a chunk.
    public func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// `spill` opens the log file the first time the cap is passed; nil keeps no log.
    init(cap: Int, spill: (() -> Int32?)?) {
        self.cap = max(cap, 2)
        self.spill = spill
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        if bytes.isEmpty { return }
        let half = cap / 2
        if total + bytes.count > cap && logFD < 0, let spill, let fd = spill() {
            logFD = fd
            writeAll(fd, head)
            writeAll(fd, orderedTail())
        }
        if logFD >= 0 { writeAll(logFD, Array(bytes)) }
        total += bytes.count
        for byte in bytes {
            if head.count < half {
                head.append(byte)
            } else if tail.count < cap - half {
                tail.append(byte)
            } else {
                tail[tailStart] = byte
                tailStart = (tailStart + 1) % tail.count
            }
        }
    }

    /// Bytes between head and tail that are not in memory.
    public var omitted: Int { max(0, total - head.count - tail.count) }

    /// Whether the log file holds more than what is in memory.
    var spilled: Bool { logFD >= 0 }

    /// The kept bytes; when something was cut, a marker line says how much and where.
    public func text(logPath: String?) -> String {
        let tailBytes = orderedTail()
        if omitted == 0 { return String(decoding: head + tailBytes, as: UTF8.self) }
        let whereFull = logPath.map { " (full output in \($0))" } ?? ""
        let marker = "\n[... \(omitted) bytes omitted\(whereFull) ...]\n"
        return String(decoding: head, as: UTF8.self) + marker + String(decoding: tailBytes, as: UTF8.self)
    }

    func finish() {
        if logFD >= 0 {
            close(logFD)
            logFD = -1
        }
    }

    private func orderedTail() -> [UInt8] {
        Array(tail[tailStart...] + tail[..<tailStart])
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = retryingInterrupted { bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } }
            if n <= 0 { return }
            offset += n
        }
    }
}
