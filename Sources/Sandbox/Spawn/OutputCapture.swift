/// Collects one output stream of a job: the first and last bytes up to a cap, and the count
/// of what was cut. (The whole output goes to the job's log, written beside it.)
///
/// Memory stays bounded by `cap` whatever the job prints. Not thread-safe: its owner
/// guards it (a job's and a session run's state locks).
public final class OutputCapture {
    let cap: Int
    private(set) var head: [UInt8] = []
    private var tail: [UInt8] = []
    private var tailStart = 0
    /// Bytes the stream carried in all.
    private(set) var total = 0

    /// A capture that keeps the first and last `cap / 2` bytes.
    public init(cap: Int) { self.cap = max(cap, 2) }

    /// Appends a chunk.
    public func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    func append(_ bytes: UnsafeRawBufferPointer) {
        if bytes.isEmpty { return }
        let half = cap / 2
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

    /// The kept bytes; when something was cut, a marker line says how much and where.
    public func text(logPath: String?) -> String {
        let tailBytes = orderedTail()
        if omitted == 0 { return String(decoding: head + tailBytes, as: UTF8.self) }
        return String(decoding: head, as: UTF8.self) + Self.marker(omitted: omitted, logPath: logPath)
            + String(decoding: tailBytes, as: UTF8.self)
    }

    /// The line that stands for `omitted` bytes cut from the middle of a stream, naming the
    /// file that holds them all when there is one.
    public static func marker(omitted: Int, logPath: String?) -> String {
        let whereFull = logPath.map { " (full output in \($0))" } ?? ""
        return "\n[... \(omitted) bytes omitted\(whereFull) ...]\n"
    }

    private func orderedTail() -> [UInt8] {
        Array(tail[tailStart...] + tail[..<tailStart])
    }
}
