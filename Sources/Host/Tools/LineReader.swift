import Glibc
import Sandbox

/// One window of a file's lines, read in a single streaming pass.
struct LineWindow {
    /// Shown lines: number, text (without the line break), and whether it was cut.
    var lines: [(number: Int, text: String, cut: Bool)] = []
    /// Lines in the file; nil when the pass stopped before the end.
    var totalLines: Int?
    /// A NUL byte in the first 8 KiB.
    var binary = false
    /// The first line after the window, when the file has one.
    var nextLine: Int?
}

/// Reads numbered lines from a descriptor without holding more than the window in memory.
///
/// Huge files (a multi-gigabyte log) can be paged through: the pass keeps only the lines
/// it shows, and stops after the window unless asked to count every line.
struct LineReader {
    static let binaryProbeBytes = 8 * 1024
    static let newline = UInt8(ascii: "\n")

    let start: Int
    let end: Int
    let lineLimit: Int
    let outputLimit: Int

    private var window = LineWindow()
    private var lineNumber = 1
    private var current: [UInt8] = []
    private var currentLength = 0
    private var outputBytes = 0
    private var collecting = true

    init(start: Int, count: Int, lineLimit: Int, outputLimit: Int) {
        self.start = start
        end = start.addingReportingOverflow(count).overflow ? Int.max : start + count
        self.lineLimit = lineLimit
        self.outputLimit = outputLimit
    }

    /// Reads `fd` to its end (or, unless `countAll`, to the end of the window).
    mutating func read(_ fd: Int32, countAll: Bool) throws -> LineWindow {
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var offset = 0
        while true {
            let count = try chunk.withUnsafeMutableBytes { buffer in
                try syscall("read") { Glibc.read(fd, buffer.baseAddress, buffer.count) }
            }
            if count == 0 { break }
            if offset < Self.binaryProbeBytes, chunk[0..<min(count, Self.binaryProbeBytes - offset)].contains(0) {
                window.binary = true
                return window
            }
            offset += count
            let finished = chunk.withUnsafeBufferPointer { consume($0.prefix(count), countAll: countAll) }
            if finished { return window }
        }
        if currentLength > 0 { endLine() }
        window.totalLines = lineNumber - 1
        return window
    }

    /// Splits one chunk into lines. Returns true once the window is complete and the rest of
    /// the file need not be read; `nextLine` is then set if anything follows.
    private mutating func consume(_ bytes: Slice<UnsafeBufferPointer<UInt8>>, countAll: Bool) -> Bool {
        let base = UnsafeRawPointer(bytes.base.baseAddress!)
        var position = bytes.startIndex
        while position < bytes.endIndex {
            if !countAll, !collecting || lineNumber >= end {
                if window.nextLine == nil { window.nextLine = lineNumber }
                return true
            }
            let found = memchr(base + position, Int32(Self.newline), bytes.endIndex - position)
            let lineEnd = found.map { base.distance(to: UnsafeRawPointer($0)) } ?? bytes.endIndex
            if collecting, lineNumber >= start, lineNumber < end, current.count < lineLimit * 4 + 4 {
                let keep = min(lineEnd - position, lineLimit * 4 + 4 - current.count)
                current.append(contentsOf: bytes[position..<(position + keep)])
            }
            currentLength += lineEnd - position
            guard lineEnd < bytes.endIndex else { break }
            endLine()
            position = lineEnd + 1
        }
        return false
    }

    /// Finishes the line being read: shows it if it is in the window and output remains.
    private mutating func endLine() {
        defer {
            lineNumber += 1
            current.removeAll(keepingCapacity: true)
            currentLength = 0
        }
        guard collecting, lineNumber >= start, lineNumber < end else {
            if lineNumber >= end, window.nextLine == nil { window.nextLine = lineNumber }
            return
        }
        var text = String(decoding: current, as: UTF8.self)
        if text.hasSuffix("\r") { text.removeLast() }
        let (shown, cut) = Format.cut(text, limit: lineLimit, totalBytes: currentLength)
        if outputBytes + shown.utf8.count > outputLimit, !window.lines.isEmpty {
            collecting = false
            window.nextLine = lineNumber
            return
        }
        outputBytes += shown.utf8.count + 8
        window.lines.append((lineNumber, shown, cut))
    }
}
