/// Runs of plain text every match of a regular expression must contain, so `grep` can skip
/// most files with a `memmem` or two instead of running the regex over them.
///
/// Deliberately conservative: any top-level alternation or inline flag gives up, groups and
/// character classes only end a run, and a character made optional by `?`, `*` or `{0,…}`
/// is dropped. A wrong answer here would hide matches, a missing one only costs time.
enum RequiredLiteral {
    /// ASCII letters that Unicode full case folding can produce from other characters
    /// (`ſ`→s, `K`→k, `ß`→ss, `ﬁ`→fi, `ﬆ`→st, …): a case-insensitive ASCII pre-check
    /// containing them could miss a match ICU would find, unless the file is pure ASCII.
    static let foldedLetters: Set<UInt8> = Set("fiklstFIKLST".utf8)

    /// Byte strings that must all occur in a file for a pattern to match in it.
    struct Prefilter: Equatable {
        /// Lowercased when the search ignores case.
        var literals: [[UInt8]] = []
        /// The literals are only sound for a file without non-ASCII bytes.
        var asciiFilesOnly = false
    }

    /// The pre-check for `pattern`; no literals when nothing safe is known.
    static func prefilter(_ pattern: String, fixedStrings: Bool, caseInsensitive: Bool) -> Prefilter {
        let candidates = fixedStrings ? [pattern] : runs(in: pattern)
        let longest = candidates.max { $0.utf8.count < $1.utf8.count }
        // Short runs filter little and cost a scan each; the longest is always worth one.
        let useful = candidates.filter { !$0.isEmpty && ($0.utf8.count >= 3 || $0 == longest) }
        guard caseInsensitive else { return Prefilter(literals: useful.map { Array($0.utf8) }) }
        // Case-folded scanning is only done for short ASCII text (the scan is not linear in
        // the literal's length).
        let literals = useful.map { Array($0.lowercased().utf8) }.filter { bytes in
            bytes.count <= 64 && bytes.allSatisfy { $0 < 0x80 }
        }
        let folded = literals.contains { $0.contains(where: foldedLetters.contains) }
        return Prefilter(literals: literals, asciiFilesOnly: folded)
    }

    /// The longest required literal, if there is one.
    static func longest(in pattern: String) -> String? {
        runs(in: pattern).max { $0.unicodeScalars.count < $1.unicodeScalars.count }
    }

    /// Every required literal run of an ICU regular expression, in pattern order.
    static func runs(in pattern: String) -> [String] {
        let chars = Array(pattern.unicodeScalars)
        if chars.contains("|") || pattern.contains("(?") || pattern.contains("\\Q") { return [] }
        var found: [String] = []
        var run = String.UnicodeScalarView()
        var depth = 0
        var index = 0
        func endRun() {
            if !run.isEmpty { found.append(String(run)) }
            run = String.UnicodeScalarView()
        }
        // A character joins the run unless a quantifier makes it optional; any quantifier
        // ends the run.
        func literal(_ char: Unicode.Scalar) {
            guard let (keep, next) = quantifier(chars, at: index) else { return run.append(char) }
            if keep { run.append(char) }
            endRun()
            index = next
        }
        while index < chars.count {
            let char = chars[index]
            index += 1
            switch char {
            case "\\":
                guard index < chars.count else { return [] }
                let escaped = chars[index]
                index += 1
                if escaped.properties.isAlphabetic || ("0"..."9").contains(escaped) {
                    // \w, \d, \x41, \p{L}, \u00e9: a class or a code point, never plain text.
                    endRun()
                    index = skipEscapeTail(escaped, chars, from: index)
                } else if depth == 0 {
                    literal(escaped)
                }
            case "[":
                endRun()
                index = skipClass(chars, from: index)
            case "(":
                endRun()
                depth += 1
            case ")":
                depth = max(0, depth - 1)
                index = skipQuantifier(chars, from: index)
            case ".", "^", "$", "*", "+", "?", "{":
                endRun()
                if char == "{" { index = skipBraces(chars, from: index) }
            default:
                if depth == 0 { literal(char) }
            }
        }
        endRun()
        return found
    }

    /// The quantifier at `index`, if any: whether the character before it is still required
    /// (`+`, `{2}`), and where the quantifier ends.
    private static func quantifier(_ chars: [Unicode.Scalar], at index: Int) -> (keep: Bool, next: Int)? {
        guard index < chars.count, "*?+{".unicodeScalars.contains(chars[index]) else { return nil }
        let next = index + 1 < chars.count ? chars[index + 1] : nil
        let optional = chars[index] == "*" || chars[index] == "?" || (chars[index] == "{" && next == "0")
        return (!optional, skipQuantifier(chars, from: index))
    }

    /// Skips a quantifier (`*`, `+`, `?`, `{n,m}`) and its lazy/possessive suffix.
    private static func skipQuantifier(_ chars: [Unicode.Scalar], from start: Int) -> Int {
        var index = start
        guard index < chars.count else { return index }
        switch chars[index] {
        case "*", "+", "?": index += 1
        case "{": index = skipBraces(chars, from: index + 1)
        default: return index
        }
        if index < chars.count, chars[index] == "?" || chars[index] == "+" { index += 1 }
        return index
    }

    /// From just after `{`, to just after the matching `}`.
    private static func skipBraces(_ chars: [Unicode.Scalar], from start: Int) -> Int {
        var index = start
        while index < chars.count, chars[index] != "}" { index += 1 }
        return min(index + 1, chars.count)
    }

    /// After an escape that takes an argument (`\x41`, `\u00e9`, `\p{L}`, `\k<name>`, `\1`),
    /// to just after the argument; other escapes (`\b`, `\d`, `\s`) take none.
    private static func skipEscapeTail(_ escape: Unicode.Scalar, _ chars: [Unicode.Scalar], from start: Int) -> Int {
        if start < chars.count, chars[start] == "{", "xpPN".unicodeScalars.contains(escape) {
            return skipBraces(chars, from: start + 1)
        }
        let isDigit = { (char: Unicode.Scalar) in ("0"..."9").contains(char) }
        var count: Int
        switch escape {
        case "x": count = 2
        case "u": count = 4
        case "U": count = 8
        case "0": count = 3
        case "p", "P", "c": count = 1
        case "k":
            var index = start
            while index < chars.count, chars[index] != ">" { index += 1 }
            return min(index + 1, chars.count)
        case _ where isDigit(escape): count = Int.max
        default: return start
        }
        var index = start
        while index < chars.count, count > 0,
            escape == "c" || escape == "p" || escape == "P" || chars[index].properties.isASCIIHexDigit
        {
            index += 1
            count -= 1
        }
        return index
    }

    /// From just after `[`, to just after its matching `]` (ICU sets nest).
    private static func skipClass(_ chars: [Unicode.Scalar], from start: Int) -> Int {
        var index = start
        var depth = 1
        if index < chars.count, chars[index] == "^" { index += 1 }
        if index < chars.count, chars[index] == "]" { index += 1 }
        while index < chars.count, depth > 0 {
            switch chars[index] {
            case "\\": index += 1
            case "[": depth += 1
            case "]": depth -= 1
            default: break
            }
            index += 1
        }
        return index
    }
}
