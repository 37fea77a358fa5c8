import Glibc
import Sandbox

extension FileTools {
    // MARK: - write_file

    /// `write_file`: replaces or creates `path` with `content`, atomically, creating parent
    /// directories; everything created is owned by the job user.
    ///
    /// With a `caller`, overwriting an existing file requires that this caller read the
    /// current version first (`stale_file` otherwise: never read, or changed since). New
    /// files need no read.
    public func writeFile(_ path: String, content: String, caller: String? = nil) throws(ToolError) -> WriteFileResult {
        let target = try WorkspacePath(path)
        return try run(target) {
            let destination = try workspace.writeTarget(target, createParents: true, owner: owner)
            try checkStale(destination, caller: caller)
            let bytes = Array(content.utf8)
            let status = try workspace.replace(destination, with: bytes, owner: owner)
            if let caller { ledger.record(caller, target, FileStamp(status)) }
            let created = destination.existing == nil
            let lines = LineIndex(bytes).count
            let text =
                "\(created ? "Created" : "Overwrote") `\(Format.display(target.relative))`: "
                + "\(Format.plural(bytes.count, "byte")), \(Format.plural(lines, "line"))."
            return WriteFileResult(path: target.relative, text: text, bytesWritten: bytes.count, created: created)
        }
    }

    // MARK: - edit_file

    /// `edit_file` with one replacement.
    public func editFile(
        _ path: String, oldString: String, newString: String, replaceAll: Bool = false, caller: String? = nil
    ) throws(ToolError) -> EditFileResult {
        try editFile(
            path, edits: [Edit(oldString: oldString, newString: newString, replaceAll: replaceAll)], caller: caller)
    }

    /// `edit_file`: exact-match replacements applied in order, all or nothing. Each
    /// `oldString` must occur exactly once (or `replaceAll`) in the text as the earlier edits
    /// left it. The result shows the changed lines with ±4 lines of context.
    ///
    /// With a `caller`, the file must be unchanged since this caller last read it, as for
    /// ``writeFile(_:content:caller:)``.
    public func editFile(_ path: String, edits: [Edit], caller: String? = nil) throws(ToolError) -> EditFileResult {
        let target = try WorkspacePath(path)
        guard !edits.isEmpty else { throw .invalidArguments(argument: "edits", detail: "give at least one edit.") }
        let multi = edits.count > 1
        for (index, edit) in edits.enumerated() {
            guard !edit.oldString.isEmpty else {
                throw .invalidArguments(
                    argument: multi ? "edits[\(index)].old_str" : "old_str",
                    detail: "must not be empty. To replace a whole file use write_file; to add lines use insert.")
            }
            if edit.oldString == edit.newString { throw .noOpEdit(path: target.relative, edit: multi ? index : nil) }
        }
        return try modify(target, caller: caller, summary: { Format.plural($0, "replacement") }) {
            content throws(ToolError) in
            var engine = EditEngine(content, limit: Int(limits.maxFileBytes))
            for (index, edit) in edits.enumerated() {
                try engine.apply(edit, index: multi ? index : nil, path: target.relative)
            }
            return engine
        }
    }

    /// The `insert` command of `str_replace_based_edit_tool`: `text` after line `line`
    /// (0 inserts at the top).
    public func insert(_ path: String, line: Int, text: String, caller: String? = nil) throws(ToolError)
        -> EditFileResult
    {
        let target = try WorkspacePath(path)
        let summary = line == 0 ? "inserted text at the top" : "inserted text after line \(line)"
        return try modify(target, caller: caller, summary: { _ in summary }) { content throws(ToolError) in
            var engine = EditEngine(content, limit: Int(limits.maxFileBytes))
            try engine.insert(text, afterLine: line, path: target.relative)
            return engine
        }
    }

    /// Reads an existing text file, lets `change` rewrite it in memory, and replaces the file
    /// only if every step succeeded. `summary` says what was done, given the replacements.
    private func modify(
        _ target: WorkspacePath, caller: String?, summary: (Int) -> String,
        _ change: ([UInt8]) throws(ToolError) -> EditEngine
    ) throws(ToolError) -> EditFileResult {
        try run(target) {
            let destination = try workspace.writeTarget(target, createParents: false, owner: owner)
            try checkStale(destination, caller: caller)
            let content = try workspace.readTarget(destination, limit: limits.maxFileBytes)
            if content.prefix(LineReader.binaryProbeBytes).contains(0) {
                throw ToolError.binaryFile(path: target.relative, size: Int64(content.count))
            }
            let engine = try change(content)
            let status = try workspace.replace(destination, with: engine.content, owner: owner)
            if let caller { ledger.record(caller, target, FileStamp(status)) }
            let snippet = Snippet.render(engine.content, regions: engine.regions, lineLimit: limits.maxLineCharacters)
            let count = engine.replacements
            let text =
                "Edited `\(Format.display(target.relative))`: \(summary(count)). "
                + "The changed lines with context:\n\(snippet)"
            return EditFileResult(path: target.relative, text: text, replacements: count, snippet: snippet)
        }
    }

    /// Refuses to overwrite a file `caller` has not seen in its current version.
    private func checkStale(_ destination: WriteTarget, caller: String?) throws {
        guard let caller, let existing = destination.existing else { return }
        guard let seen = ledger.stamp(caller, destination.path) else {
            throw ToolError.staleFile(path: destination.path.relative, reason: .neverRead)
        }
        if seen != FileStamp(existing) { throw ToolError.staleFile(path: destination.path.relative, reason: .modified) }
    }
}
