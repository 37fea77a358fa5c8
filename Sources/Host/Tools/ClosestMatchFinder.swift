/// Finds the lines of a file that most resemble an `old_str` that did not match, so the
/// model can see what it got wrong (usually indentation or a stale copy).
///
/// A window of as many lines as `old_str` slides over the file; each window scores the mean
/// similarity of its lines to `old_str`'s (1 for equal, 0.95 for equal but for surrounding
/// whitespace, otherwise the Dice coefficient of character bigrams).
enum ClosestMatchFinder {
    /// Files larger than this are not searched for a near match.
    static let maxBytes = 2 * 1024 * 1024
    /// Line comparisons one search may make; larger searches sample lines of each window.
    static let budget = 400_000
    /// Below this score nothing is shown.
    static let threshold = 0.5

    static func find(_ old: String, in content: [UInt8]) -> ClosestMatch? {
        guard content.count <= maxBytes else { return nil }
        let index = LineIndex(content)
        let fileLines = (0..<index.count).map { index.text(ofLine: $0, in: content) }
        var wanted = lines(old)
        if wanted.count > 1, wanted.last?.isEmpty == true { wanted.removeLast() }
        guard !fileLines.isEmpty, !wanted.isEmpty else { return nil }
        let size = min(wanted.count, fileLines.count)
        let fileGrams = fileLines.map(Bigrams.init)
        let wantedGrams = wanted.prefix(size).map(Bigrams.init)
        let windows = fileLines.count - size + 1
        let sample = sampledIndices(size: size, perWindow: max(2, budget / windows))
        var best = (start: 0, score: -1.0)
        for start in 0..<windows {
            let score = windowScore(fileGrams, wantedGrams, start: start, indices: sample)
            if score > best.score { best = (start, score) }
        }
        let full = windowScore(fileGrams, wantedGrams, start: best.start, indices: Array(0..<size))
        guard full >= threshold else { return nil }
        let shown = (best.start..<(best.start + size)).map {
            Format.numbered($0 + 1, Format.cut(fileLines[$0], limit: 500, totalBytes: fileLines[$0].utf8.count).text)
        }
        return ClosestMatch(
            startLine: best.start + 1, endLine: best.start + size, similarity: full,
            numberedText: shown.joined(separator: "\n"))
    }

    /// A hint for the mistakes models make most: pasting `read_file`'s line numbers.
    static func hint(for old: String) -> String? {
        let candidate = lines(old).filter { !$0.isEmpty }
        let numbered = candidate.allSatisfy { line in
            let trimmed = line.drop(while: { $0 == " " })
            guard let tab = trimmed.firstIndex(of: "\t") else { return false }
            return !trimmed[..<tab].isEmpty && trimmed[..<tab].allSatisfy(\.isASCIIDigitCharacter)
        }
        return !candidate.isEmpty && numbered
            ? "old_str seems to include the line-number prefixes read_file adds (`    12\\t`); leave them out." : nil
    }

    private static func lines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
        }
    }

    /// Which lines of each window to compare: all of them if the budget allows, otherwise
    /// evenly spread ones, always including the first and the last.
    private static func sampledIndices(size: Int, perWindow: Int) -> [Int] {
        guard size > perWindow else { return Array(0..<size) }
        let step = Double(size - 1) / Double(perWindow - 1)
        return Array(Set((0..<perWindow).map { Int((Double($0) * step).rounded()) })).sorted()
    }

    private static func windowScore(_ file: [Bigrams], _ wanted: [Bigrams], start: Int, indices: [Int]) -> Double {
        var total = 0.0
        for index in indices { total += file[start + index].similarity(to: wanted[index]) }
        return total / Double(indices.count)
    }
}

/// A line reduced to what the similarity needs: its text, trimmed text and sorted bigrams.
private struct Bigrams {
    let text: String
    let trimmed: Substring
    let grams: [UInt32]

    init(_ line: String) {
        text = line
        trimmed = line.trimmingWhitespace()
        // A minified line can be megabytes long; its first 500 characters say enough.
        let scalars = Array(trimmed.unicodeScalars.prefix(500))
        grams = scalars.indices.dropLast().map { (scalars[$0].value &* 31) ^ scalars[$0 + 1].value }.sorted()
    }

    func similarity(to other: Bigrams) -> Double {
        if text == other.text { return 1 }
        if trimmed == other.trimmed { return 0.95 }
        if grams.isEmpty || other.grams.isEmpty { return 0 }
        var (i, j, common) = (0, 0, 0)
        while i < grams.count, j < other.grams.count {
            if grams[i] == other.grams[j] {
                common += 1
                i += 1
                j += 1
            } else if grams[i] < other.grams[j] {
                i += 1
            } else {
                j += 1
            }
        }
        return 0.9 * Double(2 * common) / Double(grams.count + other.grams.count)
    }
}

extension String {
    /// The string without leading and trailing spaces, tabs and line breaks.
    func trimmingWhitespace() -> Substring {
        let start = firstIndex(where: { !$0.isWhitespace }) ?? endIndex
        let end = lastIndex(where: { !$0.isWhitespace }).map(index(after:)) ?? start
        return self[start..<max(start, end)]
    }
}

extension Character {
    var isASCIIDigitCharacter: Bool { isASCII && isNumber }
}
