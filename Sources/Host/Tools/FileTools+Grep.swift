import Glibc
import Sandbox

/// The arguments of `grep`, with the API's defaults.
public struct GrepOptions: Sendable, Equatable {
    /// A regular expression (ICU syntax, which covers ripgrep's common subset), or plain
    /// text with `fixedStrings`.
    public var pattern: String
    /// A file, or a directory to search recursively.
    public var path = "."
    /// Only files whose path (relative to `path`) matches; a pattern without `/` matches the
    /// file name at any depth, and a leading `!` excludes instead, as in `rg --glob`.
    public var glob: String?
    /// Ignore case (Unicode case folding, as ICU does it).
    public var caseInsensitive = false
    /// Treat `pattern` as plain text, not a regular expression.
    public var fixedStrings = false
    /// Lines of context before and after each match.
    public var context = 0
    /// Matching lines reported at most, over all files.
    public var maxResults = 200

    /// The defaults of API.md for everything but the pattern.
    public init(pattern: String) { self.pattern = pattern }
}

extension FileTools {
    /// `grep`: searches file contents in Swift (the host never runs a tool over a
    /// workspace) with ripgrep's conventions: `.git`, `node_modules` and `.gitignore`d
    /// paths are skipped, binary files and files over ``Limits/maxGrepFileBytes`` are
    /// passed over, output is `path:line:text` with `path-line-text` context lines and `--`
    /// between groups. Stops at `maxResults`, the output cap or the time budget, and says so.
    public func grep(_ options: GrepOptions) throws(ToolError) -> GrepResult {
        let target = try WorkspacePath(options.path)
        guard (0...100).contains(options.context) else {
            throw .invalidArguments(argument: "context", detail: "must be between 0 and 100.")
        }
        guard (1...10_000).contains(options.maxResults) else {
            throw .invalidArguments(argument: "max_results", detail: "must be between 1 and 10000.")
        }
        let searcher = try GrepSearcher(
            pattern: options.pattern, fixedStrings: options.fixedStrings, caseInsensitive: options.caseInsensitive,
            deadline: .now + .milliseconds(Int(limits.grepTimeBudget * 1000)))
        let filter = options.glob.map(GrepFilter.init)
        return try run(target) {
            var run = GrepRun(searcher: searcher, options: options, limits: limits)
            let probe = try workspace.open(target, openPathFlag)
            if FileKind(mode: try WorkspaceRoot.status(probe.raw, target).st_mode) == .directory {
                var walker = TreeWalker(
                    workspace, from: target, maxDepth: Self.maxWalkDepth, maxEntries: limits.maxWalkEntries)
                walker.gitignore = loadGitignore()
                try walker.walk { entry in
                    guard entry.kind == .file, filter?.includes(entry.relative) ?? true else { return .proceed }
                    let fd = try? WorkspaceRoot.openat2(
                        entry.directory, entry.name, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW,
                        resolve: WorkspaceRoot.beneathNoLinks)
                    if let fd { run.search(fd.raw, path: entry.path) }
                    return run.stopped ? .stop : .proceed
                }
                run.walkLimitHit = walker.hitEntryLimit
                run.skippedNote = walker.skippedNote("not searched", "Pass one as path to search inside it.")
                (run.skipped, run.skippedCount) = (walker.skipped, walker.skippedCount)
            } else {
                let (fd, _) = try workspace.openRegular(target)
                run.search(fd.raw, path: target)
            }
            return run.result()
        }
    }

    /// `grep` with each argument spelled out.
    public func grep(
        _ pattern: String, path: String = ".", glob: String? = nil, caseInsensitive: Bool = false,
        fixedStrings: Bool = false, context: Int = 0, maxResults: Int = 200
    ) throws(ToolError) -> GrepResult {
        var options = GrepOptions(pattern: pattern)
        options.path = path
        options.glob = glob
        options.caseInsensitive = caseInsensitive
        options.fixedStrings = fixedStrings
        options.context = context
        options.maxResults = maxResults
        return try grep(options)
    }
}

/// `grep`'s `glob` argument: include only matching files, or with `!`, exclude them.
struct GrepFilter {
    let pattern: GlobPattern
    let excludes: Bool

    init(_ text: String) {
        excludes = text.hasPrefix("!")
        let body = excludes ? String(text.dropFirst()) : text
        // Without a slash the pattern names files at any depth, as in rg and .gitignore.
        pattern = GlobPattern(body.contains("/") ? body : "**/" + body)
    }

    func includes(_ relative: [String]) -> Bool { pattern.matches(relative) != excludes }
}

/// The state of one `grep` call: what was found so far and why it stopped.
struct GrepRun {
    let searcher: GrepSearcher
    let options: GrepOptions
    let limits: FileTools.Limits

    private var lines: [String] = []
    private var outputBytes = 0
    private(set) var matches: [GrepMatch] = []
    private var filesSearched = 0
    private var skippedLarge = 0
    private var skippedBinary = 0
    private var timedOut = false
    private var outputFull = false
    var walkLimitHit = false
    /// What the walk skipped (``TreeWalker/skippedNote(_:_:)``), said when nothing matched.
    var skippedNote: String?
    var skipped: [String] = []
    var skippedCount = 0

    init(searcher: GrepSearcher, options: GrepOptions, limits: FileTools.Limits) {
        self.searcher = searcher
        self.options = options
        self.limits = limits
    }

    var stopped: Bool { matches.count >= options.maxResults || timedOut || outputFull }

    /// Searches the open file `fd` if it is a regular, text file within the size cap.
    mutating func search(_ fd: Int32, path: WorkspacePath) {
        var status = stat()
        guard fstat(fd, &status) == 0, FileKind(mode: status.st_mode) == .file else { return }
        guard Int64(status.st_size) <= limits.maxGrepFileBytes else {
            skippedLarge += 1
            return
        }
        // One unreadable file does not end the search.
        guard let bytes = try? WorkspaceRoot.read(fd, limit: Int(limits.maxGrepFileBytes)) else { return }
        if bytes.prefix(LineReader.binaryProbeBytes).contains(0) {
            skippedBinary += 1
            return
        }
        filesSearched += 1
        let hits = searcher.search(bytes, limit: options.maxResults - matches.count, timedOut: &timedOut)
        if !hits.isEmpty { render(hits, in: bytes, path: Format.display(path.relative), relative: path.relative) }
    }

    /// Appends one file's matches, with context lines and `--` between groups.
    private mutating func render(_ hits: [GrepSearcher.Hit], in bytes: [UInt8], path: String, relative: String) {
        let index = LineIndex(bytes)
        let hitColumns = Dictionary(hits.map { ($0.line, $0.column) }, uniquingKeysWith: { first, _ in first })
        var previous: Int?
        for hit in hits {
            let first = max(previous.map { $0 + 1 } ?? 0, hit.line - options.context)
            let last = min(index.count - 1, hit.line + options.context)
            if options.context > 0, !lines.isEmpty, previous == nil || first > previous! + 1 { emit("--") }
            guard first <= last else { continue }
            for line in first...last where previous.map({ line > $0 }) ?? true {
                let text = index.text(ofLine: line, in: bytes)
                let column = hitColumns[line]
                let shown = Self.cut(text, around: column ?? 0, limit: limits.maxGrepLineCharacters)
                if column != nil {
                    matches.append(GrepMatch(path: relative, line: line + 1, text: text))
                    emit("\(path):\(line + 1):\(shown)")
                } else {
                    emit("\(path)-\(line + 1)-\(shown)")
                }
                previous = line
                if outputFull { return }
            }
        }
    }

    private mutating func emit(_ line: String) {
        guard outputBytes + line.utf8.count <= limits.maxOutputBytes else {
            outputFull = true
            return
        }
        outputBytes += line.utf8.count + 1
        lines.append(line)
    }

    /// A long line cut to `limit` characters, around the match (at UTF-16 offset `column`)
    /// when it lies further in.
    static func cut(_ text: String, around column: Int, limit: Int) -> String {
        guard text.utf8.count > limit, text.count > limit else { return text }
        let utf16 = text.utf16
        let match = utf16.index(utf16.startIndex, offsetBy: min(max(column, 0), utf16.count))
        let before = text[..<match].count
        let start = text.index(text.startIndex, offsetBy: max(0, min(before - limit / 4, text.count - limit)))
        let end = text.index(start, offsetBy: limit)
        return (start > text.startIndex ? "…" : "") + text[start..<end] + (end < text.endIndex ? "… [line cut]" : "")
    }

    func result() -> GrepResult {
        var text = lines.joined(separator: "\n")
        if matches.isEmpty {
            text = "No matches for `\(Format.display(options.pattern))` in `\(Format.display(options.path))`."
        }
        var notes: [String] = []
        if matches.count >= options.maxResults {
            notes.append(
                "stopped at max_results=\(options.maxResults) matching lines; narrow the pattern, path or glob, or raise max_results"
            )
        }
        if outputFull { notes.append("output cut at \(Format.bytes(Int64(limits.maxOutputBytes))); narrow the search") }
        if timedOut { notes.append("the search ran out of time; results are partial, narrow path or glob") }
        if walkLimitHit {
            notes.append("stopped after visiting \(Format.count(limits.maxWalkEntries)) entries; narrow path")
        }
        if skippedBinary > 0 { notes.append("\(Format.plural(skippedBinary, "binary file")) skipped") }
        if skippedLarge > 0 {
            notes.append(
                "\(Format.plural(skippedLarge, "file")) over \(Format.bytes(limits.maxGrepFileBytes)) skipped; "
                    + "read them with read_file ranges")
        }
        if !notes.isEmpty { text += "\n(" + notes.joined(separator: "; ") + ")" }
        // Only an empty answer says what was skipped: with matches the model has results (as
        // with rg), without them it must not read "not there" for "not looked at".
        if matches.isEmpty, let skippedNote { text += "\n(\(skippedNote))" }
        let truncated = matches.count >= options.maxResults || outputFull || timedOut || walkLimitHit
        return GrepResult(
            text: text, matches: matches, filesSearched: filesSearched, truncated: truncated, skipped: skipped,
            skippedCount: skippedCount)
    }
}
