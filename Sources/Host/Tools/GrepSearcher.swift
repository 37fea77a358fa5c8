import Foundation

/// Finds the matching lines of one file's text with a compiled regular expression, in a
/// single pass over the whole text, the way ripgrep reports them: one result per line, and
/// no match that runs across a line break.
struct GrepSearcher {
    let regex: NSRegularExpression
    /// Bytes every match contains (see ``RequiredLiteral``), checked before any decoding so
    /// most files cost one `memmem`.
    let prefilter: RequiredLiteral.Prefilter
    let foldsCase: Bool
    let deadline: ContinuousClock.Instant

    /// Compiles `pattern`; throws `invalid_argument` naming the pattern if it is not a
    /// valid expression.
    init(pattern: String, fixedStrings: Bool, caseInsensitive: Bool, deadline: ContinuousClock.Instant)
        throws(ToolError)
    {
        var options: NSRegularExpression.Options = [.anchorsMatchLines]
        if caseInsensitive { options.insert(.caseInsensitive) }
        let source = fixedStrings ? NSRegularExpression.escapedPattern(for: pattern) : pattern
        do {
            regex = try NSRegularExpression(pattern: source, options: options)
        } catch {
            throw .invalidArguments(
                argument: "pattern",
                detail:
                    "`\(pattern)` is not a valid regular expression. Escape special characters such as ( [ { . * + ? "
                    + "with a backslash, or set fixed_strings to true to search for the text literally.")
        }
        prefilter = RequiredLiteral.prefilter(pattern, fixedStrings: fixedStrings, caseInsensitive: caseInsensitive)
        foldsCase = caseInsensitive
        self.deadline = deadline
    }

    /// One matching line: its 0-based index and where (in UTF-16 units) the match starts.
    struct Hit {
        let line: Int
        let column: Int
    }

    /// Up to `limit` matching lines of `bytes`; `timedOut` is set if the deadline passed.
    func search(_ bytes: [UInt8], limit: Int, timedOut: inout Bool) -> [Hit] {
        if bytes.isEmpty { return [] }
        if !prefilter.asciiFilesOnly || Self.isASCII(bytes),
            !prefilter.literals.allSatisfy({ Self.contains(bytes, $0, foldingCase: foldsCase) })
        {
            return []
        }
        let text = String(decoding: bytes, as: UTF8.self)
        let length = text.utf16.count
        var lines: LineIndex?  // built at the first match: most files have none
        var hits: [Hit] = []
        var expired = false
        var calls = 0
        regex.enumerateMatches(in: text, options: [.reportProgress], range: NSRange(location: 0, length: length)) {
            match, _, stop in
            // `.reportProgress` calls back as the search moves on and during long match
            // attempts, so a pathological pattern cannot hold the request past its deadline.
            // It calls back about once per character, so the clock is read every 128th time.
            calls += 1
            if calls & 127 == 0, ContinuousClock.now > deadline {
                expired = true
                stop.pointee = true
                return
            }
            guard let range = match?.range, range.location < length || (range.location == length && bytes.last != 10)
            else { return }
            let index = lines ?? LineIndex(utf16: text)
            lines = index
            let line = index.line(containing: range.location)
            if hits.last?.line == line { return }
            let lineEnd = line + 1 < index.starts.count ? index.starts[line + 1] - 1 : length
            if range.location + range.length > lineEnd, !matchesAlone(text, index.starts[line], lineEnd) { return }
            hits.append(Hit(line: line, column: range.location - index.starts[line]))
            if hits.count >= limit { stop.pointee = true }
        }
        timedOut = timedOut || expired
        return hits
    }

    /// Re-checks a line on its own, for a match that ran over the line break.
    private func matchesAlone(_ text: String, _ lineStart: Int, _ lineEnd: Int) -> Bool {
        let utf16 = text.utf16
        let lower = utf16.index(utf16.startIndex, offsetBy: lineStart)
        let upper = utf16.index(utf16.startIndex, offsetBy: lineEnd)
        let single = String(text[lower..<upper])
        return regex.firstMatch(in: single, range: NSRange(location: 0, length: single.utf16.count)) != nil
    }

    /// Whether every byte is below 0x80, eight bytes at a time.
    static func isASCII(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { raw in
            var index = 0
            while index + 8 <= raw.count {
                if raw.loadUnaligned(fromByteOffset: index, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 {
                    return false
                }
                index += 8
            }
            return raw[index...].allSatisfy { $0 < 0x80 }
        }
    }

    /// Whether `needle` occurs in `haystack`, optionally ignoring ASCII case.
    static func contains(_ haystack: [UInt8], _ needle: [UInt8], foldingCase: Bool) -> Bool {
        guard !needle.isEmpty else { return true }
        guard needle.count <= haystack.count else { return false }
        if !foldingCase { return !EditEngine.occurrences(of: needle, in: haystack).prefix(1).isEmpty }
        let fold: (UInt8) -> UInt8 = { foldingCase && $0 >= 65 && $0 <= 90 ? $0 + 32 : $0 }
        return haystack.withUnsafeBufferPointer { hay in
            let first = needle[0]
            let alternate = foldingCase && first >= 97 && first <= 122 ? first - 32 : first
            var index = 0
            let last = hay.count - needle.count
            while index <= last {
                let byte = hay[index]
                if byte == first || byte == alternate {
                    var j = 1
                    while j < needle.count, fold(hay[index + j]) == needle[j] { j += 1 }
                    if j == needle.count { return true }
                }
                index += 1
            }
            return false
        }
    }
}
