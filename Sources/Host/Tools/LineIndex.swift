/// Where each line of a text starts, to turn offsets into line numbers and back.
///
/// Built from bytes (edits, snippets, grep output) or from UTF-16 units (the offsets
/// NSRegularExpression reports). A final line break does not start another line.
struct LineIndex {
    /// Offset of each line's first unit; the first is 0, and a text ending in a line break
    /// has one more entry, equal to its length.
    let starts: [Int]
    /// Lines in the text.
    let count: Int

    init(_ bytes: [UInt8]) { self.init(bytes, length: bytes.count) }

    /// From a text's UTF-16 units.
    init(utf16 text: String) { self.init(text.utf16, length: text.utf16.count) }

    private init<Units: Sequence>(_ units: Units, length: Int) where Units.Element: BinaryInteger {
        var starts = [0]
        var offset = 0
        for unit in units {
            offset += 1
            if unit == 10 { starts.append(offset) }
        }
        self.starts = starts
        count = length == 0 || starts.last == length ? starts.count - 1 : starts.count
    }

    /// The 0-based line holding `offset`.
    func line(containing offset: Int) -> Int {
        var low = 0
        var high = starts.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if starts[middle] <= offset { low = middle } else { high = middle - 1 }
        }
        return low
    }

    /// The text of 0-based line `line` of `bytes`, without its `\n` or `\r\n`, as
    /// `read_file` shows it.
    func text(ofLine line: Int, in bytes: [UInt8]) -> String {
        var end = line + 1 < starts.count ? starts[line + 1] : bytes.count
        if end > starts[line], bytes[end - 1] == 10 { end -= 1 }
        if end > starts[line], bytes[end - 1] == 13 { end -= 1 }
        return String(decoding: bytes[starts[line]..<end], as: UTF8.self)
    }
}
