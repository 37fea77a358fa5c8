extension FileTools {
    /// Anthropic's `str_replace_based_edit_tool`: `view`, `create`, `str_replace`, `insert`.
    func callEditor(_ args: inout ToolArguments, caller: String?) throws(ToolError) -> any ToolOutput {
        let command = try args.requiredString("command")
        let path = try args.requiredString("path", aliases: ["file_path"])
        switch command {
        case "view":
            let range = try args.array("view_range")
            try args.finish("str_replace_based_edit_tool view")
            return try view(path, range: range, caller: caller)
        case "create":
            let text = try args.requiredString("file_text", aliases: ["content"])
            try args.finish("str_replace_based_edit_tool create")
            return try writeFile(path, content: text, caller: caller)
        case "str_replace":
            let old = try args.requiredString("old_str", aliases: ["old_string"])
            let new = try args.string("new_str", aliases: ["new_string"]) ?? ""
            try args.finish("str_replace_based_edit_tool str_replace")
            return try editFile(path, oldString: old, newString: new, caller: caller)
        case "insert":
            guard let line = try args.int("insert_line") else { throw ToolArguments.missing("insert_line") }
            let text = try args.requiredString("insert_text", aliases: ["new_str"])
            try args.finish("str_replace_based_edit_tool insert")
            return try insert(path, line: line, text: text, caller: caller)
        case "undo_edit":
            throw .invalidArguments(
                argument: "command", detail: "undo_edit is not supported; use str_replace to change the text back.")
        default:
            throw .invalidArguments(
                argument: "command", detail: "`\(command)` is not a command; use view, create, str_replace or insert.")
        }
    }

    /// `view`: a file's lines (optionally `[start, end]`, end -1 for the rest), or a
    /// directory's listing.
    private func view(_ path: String, range: [JSONValue]?, caller: String?) throws(ToolError) -> any ToolOutput {
        var offset: Int?
        var limit: Int?
        if let range {
            guard range.count == 2, case .number(let start) = range[0], case .number(let end) = range[1],
                start == start.rounded(), end == end.rounded(), start >= 1, end == -1 || end >= start
            else {
                throw .invalidArguments(
                    argument: "view_range",
                    detail: "must be [start, end] with 1 ≤ start ≤ end, or end = -1 for the rest.")
            }
            offset = Int(start)
            limit = end == -1 ? Int.max / 2 : Int(end - start) + 1
        }
        do {
            return try readFile(path, offset: offset, limit: limit, caller: caller)
        } catch .isDirectory where range == nil {
            return try listDir(path, depth: 2)
        }
    }
}
