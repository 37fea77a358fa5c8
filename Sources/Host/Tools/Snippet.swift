/// The changed parts of a file with a few lines around them, numbered like `read_file`, so
/// the model can check an edit without reading the file again.
enum Snippet {
    /// Lines of context above and below each change.
    static let context = 4
    /// Changed places shown at most; the rest are counted.
    static let maxPlaces = 8

    static func render(_ content: [UInt8], regions: [Range<Int>], lineLimit: Int) -> String {
        let lines = LineIndex(content)
        let lineCount = lines.count
        guard lineCount > 0 else { return "(the file is now empty)" }
        var ranges: [ClosedRange<Int>] = []
        for region in regions.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            let first = lines.line(containing: region.lowerBound) + 1
            let last = lines.line(containing: max(region.lowerBound, region.upperBound - 1)) + 1
            let range = max(1, first - context)...min(lineCount, max(first, last) + context)
            if let previous = ranges.last, range.lowerBound <= previous.upperBound + 1 {
                ranges[ranges.count - 1] = previous.lowerBound...max(previous.upperBound, range.upperBound)
            } else {
                ranges.append(range)
            }
        }
        var parts: [String] = []
        for range in ranges.prefix(maxPlaces) {
            parts.append(
                range.map { number in
                    let text = lines.text(ofLine: number - 1, in: content)
                    return Format.numbered(number, Format.cut(text, limit: lineLimit, totalBytes: text.utf8.count).text)
                }.joined(separator: "\n"))
        }
        if ranges.count > maxPlaces { parts.append("(\(ranges.count - maxPlaces) more changed places not shown)") }
        return parts.joined(separator: "\n...\n")
    }
}
