extension FileTools {
    /// Every tool name ``call(name:arguments:caller:)`` accepts: the API's names and the
    /// aliases models were trained on (Anthropic's text editor tool, the MCP filesystem
    /// server).
    public static let toolNames: Set<String> = Set(aliases.keys)

    /// Alias → the API tool it runs.
    public static let aliases: [String: String] = [
        "read_file": "read_file", "write_file": "write_file", "edit_file": "edit_file", "list_dir": "list_dir",
        "glob": "glob", "grep": "grep", "file_info": "file_info",
        "read_text_file": "read_file", "list_directory": "list_dir", "directory_tree": "list_dir",
        "search_files": "glob", "get_file_info": "file_info",
        "str_replace_based_edit_tool": "str_replace_based_edit_tool",
        "str_replace_editor": "str_replace_based_edit_tool",
    ]

    /// Runs the tool `name` with JSON `arguments`, checking each argument's presence and
    /// type exactly. `caller` identifies the agent session for `stale_file` (it comes from
    /// the gateway, never from the arguments). Never throws: failures are results.
    public func call(name: String, arguments: [String: JSONValue], caller: String? = nil) -> ToolResult {
        var args = ToolArguments(arguments)
        do throws(ToolError) {
            let output: any ToolOutput
            switch name {
            case "read_file", "read_text_file": output = try callRead(&args, caller: caller)
            case "write_file": output = try callWrite(&args, caller: caller)
            case "edit_file": output = try callEdit(&args, caller: caller)
            case "list_dir", "list_directory", "directory_tree": output = try callList(&args, tool: name)
            case "glob", "search_files": output = try callGlob(&args, tool: name)
            case "grep": output = try callGrep(&args)
            case "file_info", "get_file_info":
                let path = try args.requiredString("path", aliases: ["file_path"])
                try args.finish(name)
                output = try fileInfo(path)
            case "str_replace_based_edit_tool", "str_replace_editor": output = try callEditor(&args, caller: caller)
            default:
                throw ToolError.invalidArguments(
                    argument: "tool",
                    detail:
                        "there is no file tool `\(name)`; the tools are \(Self.toolNames.sorted().joined(separator: ", "))."
                )
            }
            try args.finish(name)
            return ToolResult(output)
        } catch {
            return ToolResult(error)
        }
    }

    // MARK: - One function per tool

    private func callRead(_ args: inout ToolArguments, caller: String?) throws(ToolError) -> ReadFileResult {
        let path = try args.requiredString("path", aliases: ["file_path"])
        var offset = try args.int("offset")
        var limit = try args.int("limit")
        let head = try args.int("head")
        let tail = try args.int("tail")
        try args.finish("read_file")
        // The MCP server's head/tail: the first or last N lines.
        if head != nil || tail != nil {
            guard offset == nil, limit == nil, (head == nil) != (tail == nil) else {
                throw .invalidArguments(argument: "head", detail: "give head or tail alone, without offset or limit.")
            }
            if let head { (offset, limit) = (1, head) }
            if let tail {
                // Without a line count (binary or too large) the plain read says why.
                guard let total = try fileInfo(path).lineCount else { return try readFile(path, caller: caller) }
                (offset, limit) = (max(1, total - tail + 1), tail)
            }
        }
        return try readFile(path, offset: offset, limit: limit, caller: caller)
    }

    private func callWrite(_ args: inout ToolArguments, caller: String?) throws(ToolError) -> WriteFileResult {
        let path = try args.requiredString("path", aliases: ["file_path"])
        let content = try args.requiredString("content", aliases: ["file_text"])
        try args.finish("write_file")
        return try writeFile(path, content: content, caller: caller)
    }

    private func callEdit(_ args: inout ToolArguments, caller: String?) throws(ToolError) -> EditFileResult {
        let path = try args.requiredString("path", aliases: ["file_path"])
        let single = try Self.readEdit(&args, name: nil)
        let list = try args.array("edits")
        if let dryRun = try args.bool("dryRun"), dryRun {
            throw .invalidArguments(
                argument: "dryRun", detail: "dry runs are not supported; omit it or set it to false.")
        }
        try args.finish("edit_file")
        switch (single, list) {
        case (let edit?, nil): return try editFile(path, edits: [edit], caller: caller)
        case (nil, let items?):
            let edits = try items.enumerated().map { (index, item) throws(ToolError) -> Edit in
                guard case .object(let fields) = item else {
                    throw ToolArguments.wrongType("edits[\(index)]", "an object", item)
                }
                var inner = ToolArguments(fields)
                guard let edit = try Self.readEdit(&inner, name: "edits[\(index)]") else {
                    throw ToolArguments.missing("edits[\(index)].old_str")
                }
                try inner.finish("edit_file edits[\(index)]")
                return edit
            }
            return try editFile(path, edits: edits, caller: caller)
        case (nil, nil): throw ToolArguments.missing("old_str")
        case (.some, .some):
            throw .invalidArguments(argument: "edits", detail: "give either old_str and new_str, or edits, not both.")
        }
    }

    /// Reads `old_str`/`new_str`/`replace_all` in any of their spellings; nil if no
    /// `old_str` was given at all.
    private static func readEdit(_ args: inout ToolArguments, name: String?) throws(ToolError) -> Edit? {
        let prefix = name.map { $0 + "." } ?? ""
        let old = try args.string("old_str", aliases: ["old_string", "oldText"])
        let new = try args.string("new_str", aliases: ["new_string", "newText"])
        let all = try args.bool("replace_all", aliases: ["replaceAll"])
        guard let old else {
            if new != nil || all != nil { throw ToolArguments.missing(prefix + "old_str") }
            return nil
        }
        guard let new else { throw ToolArguments.missing(prefix + "new_str") }
        return Edit(oldString: old, newString: new, replaceAll: all ?? false)
    }

    private func callList(_ args: inout ToolArguments, tool: String) throws(ToolError) -> ListDirResult {
        let path = try args.string("path", aliases: ["file_path"]) ?? "."
        // MCP's list_directory shows one level; its directory_tree the whole tree.
        let fallback = tool == "list_directory" ? 1 : tool == "directory_tree" ? 10 : 2
        let depth = try args.int("depth") ?? fallback
        let limit = try args.int("limit") ?? 500
        try args.finish(tool)
        return try listDir(path, depth: depth, limit: limit)
    }

    private func callGlob(_ args: inout ToolArguments, tool: String) throws(ToolError) -> GlobResult {
        var pattern = try args.requiredString("pattern")
        let path = try args.string("path") ?? "."
        let limit = try args.int("limit") ?? 100
        if let excluded = try args.array("excludePatterns"), !excluded.isEmpty {
            throw .invalidArguments(argument: "excludePatterns", detail: "is not supported; use a narrower pattern.")
        }
        try args.finish(tool)
        // MCP's search_files finds names at any depth; a plain glob matches whole paths.
        if tool == "search_files", !pattern.contains("/") { pattern = "**/" + pattern }
        return try glob(pattern, path: path, limit: limit)
    }

    private func callGrep(_ args: inout ToolArguments) throws(ToolError) -> GrepResult {
        var options = GrepOptions(pattern: try args.requiredString("pattern"))
        options.path = try args.string("path") ?? "."
        options.glob = try args.string("glob")
        options.caseInsensitive = try args.bool("case_insensitive") ?? false
        options.fixedStrings = try args.bool("fixed_strings") ?? false
        options.context = try args.int("context") ?? 0
        options.maxResults = try args.int("max_results") ?? 200
        try args.finish("grep")
        return try grep(options)
    }
}
