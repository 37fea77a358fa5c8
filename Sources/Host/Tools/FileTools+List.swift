import Glibc
import Sandbox

extension FileTools {
    /// Deepest walk `glob` and `grep` make, and the largest `depth` `list_dir` accepts.
    static let maxWalkDepth = 64
    /// Most entries `list_dir` and `glob` return in one call.
    static let maxListLimit = 10_000

    // MARK: - list_dir

    /// `list_dir`: a tree of `path` down to `depth` levels, at most `limit` entries, breadth
    /// first so every top-level name is shown before deeper ones. Skips `.git`,
    /// `node_modules` and what the top-level `.gitignore` ignores, and says so. Symbolic
    /// links are shown with their targets and never followed.
    public func listDir(_ path: String = ".", depth: Int = 2, limit: Int = 500) throws(ToolError) -> ListDirResult {
        let target = try WorkspacePath(path)
        guard (1...Self.maxWalkDepth).contains(depth) else {
            throw .invalidArguments(argument: "depth", detail: "must be between 1 and \(Self.maxWalkDepth).")
        }
        guard (1...Self.maxListLimit).contains(limit) else {
            throw .invalidArguments(argument: "limit", detail: "must be between 1 and \(Self.maxListLimit).")
        }
        return try run(target) {
            try requireDirectory(target)
            var walker = TreeWalker(workspace, from: target, maxDepth: depth, maxEntries: limits.maxWalkEntries)
            walker.gitignore = loadGitignore()
            walker.breadthFirst = true
            var entries: [ListedEntry] = []
            var truncated = false
            try walker.walk { entry in
                guard entries.count < limit else {
                    truncated = true
                    return .stop
                }
                let link = entry.kind == .symlink ? WorkspaceRoot.linkTarget(entry.directory, entry.name) : nil
                entries.append(ListedEntry(path: entry.path.relative, kind: entry.kind, linkTarget: link))
                return .proceed
            }
            truncated = truncated || walker.hitEntryLimit
            entries.sort { $0.path.split(separator: "/").lexicographicallyPrecedes($1.path.split(separator: "/")) }
            let text = Self.renderTree(target, entries, walker: walker, truncated: truncated, limit: limit)
            return ListDirResult(
                path: target.relative, text: text, entries: entries, skipped: walker.skipped,
                skippedCount: walker.skippedCount, truncated: truncated)
        }
    }

    /// Throws unless `path` resolves to a directory.
    private func requireDirectory(_ path: WorkspacePath) throws {
        let fd = try workspace.open(path, openPathFlag)
        let kind = FileKind(mode: try WorkspaceRoot.status(fd.raw, path).st_mode)
        guard kind == .directory else {
            throw ToolError.invalidArguments(
                argument: "path",
                detail:
                    "`\(Format.display(path.relative))` is a \(kind.noun), not a directory; use read_file or file_info."
            )
        }
    }

    private static func renderTree(
        _ root: WorkspacePath, _ entries: [ListedEntry], walker: TreeWalker, truncated: Bool, limit: Int
    ) -> String {
        var lines = [root.components.isEmpty ? "./" : Format.display(root.relative) + "/"]
        for entry in entries {
            let depth = entry.path.split(separator: "/").count - root.components.count
            let name = Format.display(String(entry.path.split(separator: "/").last ?? ""))
            var line = String(repeating: "  ", count: depth) + name
            switch entry.kind {
            case .directory: line += "/"
            case .file: break
            case .symlink: line += " -> " + Format.display(entry.linkTarget ?? "?")
            default: line += " [\(entry.kind.rawValue)]"
            }
            lines.append(line)
        }
        if entries.isEmpty { lines.append("  (empty directory)") }
        if let note = walker.skippedNote("not listed", "Call list_dir on one to see inside.") {
            lines.append("(\(note))")
        }
        if walker.reachedDepthLimit {
            lines.append("(directories at the depth limit are not expanded; call list_dir on one, or raise depth)")
        }
        if truncated {
            lines.append(
                "(stopped at \(Format.count(limit)) entries; list a subdirectory or lower depth to see the rest)")
        }
        return lines.joined(separator: "\n")
    }

    // MARK: - glob

    /// `glob`: files (anything but directories) below `path` whose path relative to `path`
    /// matches `pattern`, newest first by modification time. `**` matches any number of
    /// directories; `.git` and `node_modules` are skipped.
    public func glob(_ pattern: String, path: String = ".", limit: Int = 100) throws(ToolError) -> GlobResult {
        var base = try WorkspacePath(path)
        var text = pattern
        // `/workspace/src/**` names the project; any other absolute pattern is outside it.
        if text.hasPrefix("/") {
            guard text.hasPrefix(WorkspacePath.mountPoint + "/") else {
                throw .pathOutsideProject(path: pattern, reason: "absolute patterns must start with /workspace/")
            }
            text = String(text.dropFirst(WorkspacePath.mountPoint.count + 1))
            base = WorkspacePath(components: [])
        }
        guard !text.isEmpty else { throw .invalidArguments(argument: "pattern", detail: "must not be empty.") }
        guard (1...Self.maxListLimit).contains(limit) else {
            throw .invalidArguments(argument: "limit", detail: "must be between 1 and \(Self.maxListLimit).")
        }
        let glob = GlobPattern(text)
        let searchRoot = base
        return try run(searchRoot) {
            try requireDirectory(searchRoot)
            let (matches, walker) = try globMatches(glob, under: searchRoot)
            let sorted = matches.sorted { $0.modified != $1.modified ? $0.modified > $1.modified : $0.path < $1.path }
            let paths = sorted.prefix(limit).map(\.path)
            return GlobResult(
                text: Self.renderGlob(paths, total: matches.count, pattern: text, base: searchRoot, walker: walker),
                paths: Array(paths), totalMatches: matches.count,
                truncated: matches.count > limit || walker.hitEntryLimit, skipped: walker.skipped,
                skippedCount: walker.skippedCount)
        }
    }

    private func globMatches(_ glob: GlobPattern, under base: WorkspacePath) throws
        -> ([(path: String, modified: Double)], TreeWalker)
    {
        // Walk only below the pattern's literal leading directories, and no deeper than it
        // can match.
        let prefix = glob.literalPrefix
        let segments = glob.alternatives.map(\.count).max() ?? 0
        let unbounded = glob.alternatives.contains { $0.contains(.globstar) }
        let depth = unbounded ? Self.maxWalkDepth : max(1, segments - prefix.count)
        var walker = TreeWalker(
            workspace, from: WorkspacePath(components: base.components + prefix), maxDepth: depth,
            maxEntries: limits.maxWalkEntries)
        var matches: [(path: String, modified: Double)] = []
        do {
            try walker.walk { entry in
                guard entry.kind != .directory, glob.matches(prefix + entry.relative) else { return .proceed }
                guard let status = try WorkspaceRoot.linkStatus(entry.directory, entry.name) else { return .proceed }
                matches.append(
                    (entry.path.relative, Double(status.st_mtim.tv_sec) + Double(status.st_mtim.tv_nsec) / 1e9))
                return .proceed
            }
        } catch let error as SystemError where !prefix.isEmpty && (error.errno == ENOENT || error.errno == ENOTDIR) {
            // The pattern's leading directory does not exist: simply no matches.
        }
        return (matches, walker)
    }

    private static func renderGlob(
        _ paths: [String], total: Int, pattern: String, base: WorkspacePath, walker: TreeWalker
    )
        -> String
    {
        guard !paths.isEmpty else {
            var text = "No files match `\(Format.display(pattern))` under `\(Format.display(base.relative))`."
            if !pattern.contains("/") {
                text +=
                    " Patterns match the whole path below `path`: `\(Format.display(pattern))` only finds files "
                    + "directly in it; use `**/\(Format.display(pattern))` to search every directory."
            }
            if let note = walker.skippedNote("not searched", "Pass one as path to search inside it.") {
                text += "\n(\(note))"
            }
            return text
        }
        var lines = paths.map(Format.display)
        if total > paths.count {
            lines.append(
                "(showing \(paths.count) of \(Format.count(total)) matches, newest first; narrow the pattern or raise limit)"
            )
        }
        if walker.hitEntryLimit {
            lines.append("(search stopped after \(Format.count(walker.visited)) entries; narrow path or pattern)")
        }
        return lines.joined(separator: "\n")
    }
}
