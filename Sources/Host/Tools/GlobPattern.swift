/// A glob over `/`-separated paths: `*` and `?` within a name, `[a-z]` and `[!x]` classes,
/// `{a,b}` alternatives, `**` for any number of directories, `\` to escape.
///
/// Used for the `glob` tool, `grep`'s `glob` filter and `.gitignore` rules. A `**` at the
/// end matches at least one name, so `build/**` is what is inside `build`, as in git.
struct GlobPattern: Sendable, Equatable {
    enum Segment: Sendable, Equatable {
        case globstar
        case name([Token])
    }

    enum Token: Sendable, Equatable {
        case literal(Unicode.Scalar)
        case star
        case any
        case set([ClosedRange<Unicode.Scalar>], negated: Bool)

        func matches(_ scalar: Unicode.Scalar) -> Bool {
            switch self {
            case .literal(let value): value == scalar
            case .any: true
            case .star: false
            case .set(let ranges, let negated): ranges.contains { $0.contains(scalar) } != negated
            }
        }
    }

    /// One segment list per `{…}` alternative.
    let alternatives: [[Segment]]

    /// Parses `pattern`; `braces: false` keeps `{` and `}` literal (gitignore has none).
    init(_ pattern: String, braces: Bool = true) {
        let expanded = braces ? Self.expandBraces(pattern, budget: 64) : [pattern]
        alternatives = expanded.map { text in
            text.split(separator: "/", omittingEmptySubsequences: true).map { part in
                part == "**" ? .globstar : .name(Self.tokens(part))
            }
        }
    }

    /// Whether the path `components` matches.
    func matches(_ components: [String]) -> Bool {
        let names = components.map { Array($0.unicodeScalars) }
        return alternatives.contains { Self.match($0, names) }
    }

    /// The leading names without wildcards, shared by every alternative: where a walk can
    /// start instead of at the top.
    var literalPrefix: [String] {
        guard let first = alternatives.first else { return [] }
        var prefix: [String] = []
        for (index, segment) in first.enumerated() {
            guard index < first.count - 1, case .name(let tokens) = segment else { break }
            var name = String.UnicodeScalarView()
            for token in tokens {
                guard case .literal(let scalar) = token else { return prefix }
                name.append(scalar)
            }
            guard alternatives.allSatisfy({ $0.count > index + 1 && $0[index] == segment }) else { break }
            prefix.append(String(name))
        }
        return prefix
    }

    // MARK: - Matching

    private static func match(_ segments: [Segment], _ names: [[Unicode.Scalar]]) -> Bool {
        // memo[s * (names.count + 1) + n]: 0 unknown, 1 no, 2 yes. Keeps `**/**/…` linear.
        var memo = [UInt8](repeating: 0, count: (segments.count + 1) * (names.count + 1))
        func solve(_ s: Int, _ n: Int) -> Bool {
            let key = s * (names.count + 1) + n
            if memo[key] != 0 { return memo[key] == 2 }
            let result: Bool
            if s == segments.count {
                result = n == names.count
            } else if case .name(let tokens) = segments[s] {
                result = n < names.count && matchName(tokens, names[n]) && solve(s + 1, n + 1)
            } else if s == segments.count - 1 {
                result = n < names.count
            } else {
                result = (n...names.count).contains { solve(s + 1, $0) }
            }
            memo[key] = result ? 2 : 1
            return result
        }
        return solve(0, 0)
    }

    /// Wildcard match of one name, backtracking only to the last `*`.
    static func matchName(_ tokens: [Token], _ name: [Unicode.Scalar]) -> Bool {
        var (t, n, starToken, starName) = (0, 0, -1, 0)
        while n < name.count {
            if t < tokens.count, tokens[t] == .star {
                (starToken, starName, t) = (t, n, t + 1)
            } else if t < tokens.count, tokens[t].matches(name[n]) {
                (t, n) = (t + 1, n + 1)
            } else if starToken >= 0 {
                starName += 1
                (t, n) = (starToken + 1, starName)
            } else {
                return false
            }
        }
        while t < tokens.count, tokens[t] == .star { t += 1 }
        return t == tokens.count
    }

    // MARK: - Parsing

    private static func tokens(_ part: Substring) -> [Token] {
        let scalars = Array(part.unicodeScalars)
        var tokens: [Token] = []
        var index = 0
        while index < scalars.count {
            let scalar = scalars[index]
            switch scalar {
            case "\\" where index + 1 < scalars.count:
                tokens.append(.literal(scalars[index + 1]))
                index += 2
                continue
            case "*": if tokens.last != .star { tokens.append(.star) }
            case "?": tokens.append(.any)
            case "[":
                if let (set, end) = characterClass(scalars, from: index) {
                    tokens.append(set)
                    index = end
                    continue
                }
                tokens.append(.literal(scalar))
            default: tokens.append(.literal(scalar))
            }
            index += 1
        }
        return tokens
    }

    /// Parses `[...]` starting at `start`; returns the token and the index after `]`.
    private static func characterClass(_ scalars: [Unicode.Scalar], from start: Int) -> (Token, Int)? {
        var index = start + 1
        var negated = false
        if index < scalars.count, scalars[index] == "!" || scalars[index] == "^" {
            negated = true
            index += 1
        }
        var ranges: [ClosedRange<Unicode.Scalar>] = []
        var first = true
        while index < scalars.count {
            var low = scalars[index]
            if low == "]", !first { return (.set(ranges, negated: negated), index + 1) }
            first = false
            if low == "\\", index + 1 < scalars.count {
                index += 1
                low = scalars[index]
            }
            if index + 2 < scalars.count, scalars[index + 1] == "-", scalars[index + 2] != "]" {
                let high = scalars[index + 2]
                ranges.append(low <= high ? low...high : high...low)
                index += 3
            } else {
                ranges.append(low...low)
                index += 1
            }
        }
        return nil
    }

    /// `a{b,c}d` → `abd`, `acd`; nested braces work; at most `budget` results.
    static func expandBraces(_ pattern: String, budget: Int) -> [String] {
        let scalars = Array(pattern.unicodeScalars)
        var depth = 0
        var open: Int?
        var commas: [Int] = []
        var index = 0
        while index < scalars.count {
            switch scalars[index] {
            case "\\": index += 1
            case "{":
                if depth == 0 { (open, commas) = (index, []) }
                depth += 1
            case "," where depth == 1: commas.append(index)
            case "}" where depth > 0:
                depth -= 1
                if depth == 0, let open, !commas.isEmpty {
                    let head = String(String.UnicodeScalarView(scalars[..<open]))
                    let tail = String(String.UnicodeScalarView(scalars[(index + 1)...]))
                    let cuts = [open] + commas + [index]
                    var result: [String] = []
                    for pair in zip(cuts, cuts.dropFirst()) {
                        let choice = String(String.UnicodeScalarView(scalars[(pair.0 + 1)..<pair.1]))
                        result += expandBraces(head + choice + tail, budget: budget - result.count)
                        if result.count >= budget { break }
                    }
                    return Array(result.prefix(max(budget, 1)))
                }
            default: break
            }
            index += 1
        }
        return [pattern]
    }
}
