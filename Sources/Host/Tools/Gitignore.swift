/// The rules of a workspace's top-level `.gitignore`: the common subset of git's syntax.
///
/// Supported: globs (`*`, `?`, `[...]`), `**`, a trailing `/` (directories only), a leading
/// or inner `/` (anchored to the root; otherwise a pattern matches a name at any depth),
/// `!` negation (the last matching rule wins), `#` comments and `\` escapes. Nested
/// `.gitignore` files and `.git/info/exclude` are not read.
struct Gitignore: Sendable {
    struct Rule: Sendable {
        let pattern: GlobPattern
        let negated: Bool
        let directoryOnly: Bool
    }

    let rules: [Rule]

    init(_ text: String) {
        var rules: [Rule] = []
        for raw in text.split(separator: "\n", omittingEmptySubsequences: true) {
            var line = Substring(raw.hasSuffix("\r") ? raw.dropLast() : raw)
            // Trailing spaces are ignored unless escaped with a backslash.
            while line.hasSuffix(" "), !line.dropLast().hasSuffix("\\") { line = line.dropLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            let negated = line.hasPrefix("!")
            if negated { line = line.dropFirst() }
            let directoryOnly = line.hasSuffix("/")
            while line.hasSuffix("/") { line = line.dropLast() }
            let anchored = line.contains("/")
            while line.hasPrefix("/") { line = line.dropFirst() }
            if line.isEmpty { continue }
            let pattern = anchored ? String(line) : "**/" + line
            rules.append(
                Rule(pattern: GlobPattern(pattern, braces: false), negated: negated, directoryOnly: directoryOnly))
        }
        self.rules = rules
    }

    /// Whether the project-relative path is ignored.
    func isIgnored(_ components: [String], isDirectory: Bool) -> Bool {
        for rule in rules.reversed() where !rule.directoryOnly || isDirectory {
            if rule.pattern.matches(components) { return !rule.negated }
        }
        return false
    }
}
