import CShim

/// One exact-match replacement of `edit_file`.
public struct Edit: Sendable, Equatable {
    /// Text to find; must occur exactly once unless `replaceAll`.
    public var oldString: String
    /// Replacement text.
    public var newString: String
    /// Replace every occurrence instead of requiring exactly one.
    public var replaceAll: Bool

    /// One replacement; `replaceAll` replaces every occurrence instead of requiring one.
    public init(oldString: String, newString: String, replaceAll: Bool = false) {
        self.oldString = oldString
        self.newString = newString
        self.replaceAll = replaceAll
    }
}

/// Applies edits to a file's bytes in memory; nothing touches the disk until all succeed.
///
/// Matching is on UTF-8 bytes, not Swift `Character`s: `"\r\n"` is one Character, so a
/// Character search would never find a `"\n"` inside a Windows line ending.
struct EditEngine {
    private(set) var content: [UInt8]
    private(set) var replacements = 0
    /// Byte ranges of the new text in `content`, kept current as later edits shift them.
    private(set) var regions: [Range<Int>] = []

    /// The largest file the edits may leave: one `replace_all` of a byte with a long text
    /// multiplies the file by that text's length, and must be refused before the host tries
    /// to allocate the product.
    let limit: Int

    init(_ content: [UInt8], limit: Int = .max) {
        self.content = content
        self.limit = limit
    }

    /// Applies `edit` (number `index` of a multi-edit, for messages) or throws why not.
    mutating func apply(_ edit: Edit, index: Int?, path: String) throws(ToolError) {
        var old = Array(edit.oldString.utf8)
        var new = Array(edit.newString.utf8)
        var found = Self.occurrences(of: old, in: content)
        // A model copies lines from read_file, which shows them without the `\r` of a CRLF
        // file; match those lines against the file's own line endings.
        if found.isEmpty, old.contains(Self.newline), Self.occurrences(of: [13, 10], in: content).count > 0 {
            let crlfOld = Self.crlf(old)
            let crlfFound = Self.occurrences(of: crlfOld, in: content)
            if !crlfFound.isEmpty { (old, new, found) = (crlfOld, Self.crlf(new), crlfFound) }
        }
        guard !found.isEmpty else {
            throw .oldStrNotFound(
                path: path, edit: index, closest: ClosestMatchFinder.find(edit.oldString, in: content),
                hint: ClosestMatchFinder.hint(for: edit.oldString))
        }
        guard found.count == 1 || edit.replaceAll else {
            let lines = LineIndex(content)
            throw .oldStrNotUnique(path: path, edit: index, lines: found.map { lines.line(containing: $0) + 1 })
        }
        try replace(found, length: old.count, with: new, path: path, edit: index)
    }

    /// Inserts `text` after line `line` (0 = at the top), adding the line break a model
    /// leaves off.
    mutating func insert(_ text: String, afterLine line: Int, path: String) throws(ToolError) {
        let lines = LineIndex(content)
        let lineCount = lines.count
        guard line >= 0, line <= lineCount else {
            throw .invalidRange(
                path: path,
                detail: "insert_line \(line) is outside the file, which has \(lineCount) lines (use 0 to \(lineCount))."
            )
        }
        var bytes = Array(text.utf8)
        let at = line < lineCount ? lines.starts[line] : content.count
        let unterminated = !content.isEmpty && content.last != Self.newline
        if at == content.count, unterminated {
            // Appending after a last line that has no line break: end that line first, and
            // leave the file as unterminated as it was.
            bytes.insert(Self.newline, at: 0)
        } else if bytes.last != Self.newline {
            bytes.append(Self.newline)
        }
        try replace([at], length: 0, with: bytes, path: path, edit: nil)
    }

    /// Replaces `length` bytes at each of `positions` (ascending, non-overlapping).
    /// Refuses, before allocating, a result above ``limit``.
    private mutating func replace(_ positions: [Int], length: Int, with new: [UInt8], path: String, edit: Int?)
        throws(ToolError)
    {
        let delta = new.count - length
        let (growth, overflow) = positions.count.multipliedReportingOverflow(by: max(delta, 0))
        let (size, past) = content.count.addingReportingOverflow(growth)
        guard !overflow, !past, size <= limit else {
            let shown = overflow || past ? "more than \(Format.bytes(Int64(limit)))" : Format.bytes(Int64(size))
            throw .invalidArguments(
                argument: edit.map { "edits[\($0)].new_str" } ?? "new_str",
                detail:
                    "this edit would make \(path) \(shown) (\(positions.count) replacements), above the \(Format.bytes(Int64(limit))) limit for editing a whole file. Write a large file with a command instead."
            )
        }
        var result: [UInt8] = []
        result.reserveCapacity(content.count + growth)
        var previous = 0
        var added: [Range<Int>] = []
        for position in positions {
            result.append(contentsOf: content[previous..<position])
            added.append(result.count..<(result.count + new.count))
            result.append(contentsOf: new)
            previous = position + length
        }
        result.append(contentsOf: content[previous...])
        // Move earlier regions to where their bytes are now: past `before` replaced ranges,
        // or to the start of the new text if the offset was inside a replaced range.
        func moved(_ offset: Int) -> Int {
            var (low, high) = (0, positions.count)
            while low < high {
                let middle = (low + high) / 2
                if positions[middle] + length <= offset { low = middle + 1 } else { high = middle }
            }
            if low < positions.count, positions[low] <= offset { return positions[low] + low * delta }
            return offset + low * delta
        }
        regions = regions.map { moved($0.lowerBound)..<max(moved($0.lowerBound), moved($0.upperBound)) } + added
        content = result
        replacements += positions.count
    }

    // MARK: - Byte helpers

    static let newline = UInt8(ascii: "\n")

    /// Start offsets of non-overlapping occurrences of `needle`, left to right. glibc's
    /// memmem is linear, so a crafted file or `old_str` cannot make this quadratic.
    static func occurrences(of needle: [UInt8], in haystack: [UInt8]) -> [Int] {
        guard !needle.isEmpty, needle.count <= haystack.count else { return [] }
        return haystack.withUnsafeBytes { hay in
            needle.withUnsafeBytes { pin in
                var result: [Int] = []
                var index = 0
                while index + pin.count <= hay.count,
                    let found = cor_memmem(hay.baseAddress! + index, hay.count - index, pin.baseAddress!, pin.count)
                {
                    let offset = hay.baseAddress!.distance(to: found)
                    result.append(offset)
                    index = offset + pin.count
                }
                return result
            }
        }
    }

    /// `\n` → `\r\n`, leaving existing `\r\n` alone.
    static func crlf(_ bytes: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        for (index, byte) in bytes.enumerated() {
            if byte == newline, index == 0 || bytes[index - 1] != 13 { result.append(13) }
            result.append(byte)
        }
        return result
    }
}
