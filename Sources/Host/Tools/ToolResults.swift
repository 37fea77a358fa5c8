/// What every tool returns: the text the model reads and a structured copy for clients.
public protocol ToolOutput: Sendable {
    /// The text the model sees.
    var text: String { get }
    /// The same result as data (`structuredContent` in the MCP envelope).
    var structured: JSONValue { get }
}

/// A finished tool call as the gateway sends it: success or a model-facing error. It is
/// also the wire shape of a file tool's reply from a worker to an API node
/// (`{text, structured, is_error, error_code}`).
public struct ToolResult: Sendable, Equatable {
    /// The text content.
    public let text: String
    /// `structuredContent`: the result's fields, or `{code, message}` for an error.
    public let structured: JSONValue
    /// True only for errors the model can fix (`isError` in the envelope).
    public let isError: Bool
    /// The error's stable code, nil on success.
    public let errorCode: String?

    /// A result as it arrives from elsewhere (a worker's reply, a test's fake).
    public init(text: String, structured: JSONValue, isError: Bool, errorCode: String? = nil) {
        self.text = text
        self.structured = structured
        self.isError = isError
        self.errorCode = errorCode
    }

    /// A successful result.
    public init(_ output: some ToolOutput) {
        text = output.text
        structured = output.structured
        isError = false
        errorCode = nil
    }

    /// A failed call: the message as text, `{code, message}` as structured content.
    public init(_ error: ToolError) {
        text = error.message
        structured = ["code": .string(error.code), "message": .string(error.message)]
        isError = error.isModelError
        errorCode = error.code
    }
}

extension ToolResult: Codable {
    enum CodingKeys: String, CodingKey {
        case text, structured
        case isError = "is_error"
        case errorCode = "error_code"
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            text: try container.decode(String.self, forKey: .text),
            structured: try container.decode(JSONValue.self, forKey: .structured),
            isError: try container.decode(Bool.self, forKey: .isError),
            errorCode: try container.decodeIfPresent(String.self, forKey: .errorCode))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(text, forKey: .text)
        try container.encode(structured, forKey: .structured)
        try container.encode(isError, forKey: .isError)
        // `error_code: null` on success, as the reply always said.
        try container.encode(errorCode, forKey: .errorCode)
    }
}

/// `read_file`: numbered lines of one window of a text file.
public struct ReadFileResult: ToolOutput, Equatable {
    /// The project-relative path the tool acted on.
    public let path: String
    public let text: String
    /// First and last line shown (1-based, inclusive); both 0 for an empty file.
    public let startLine: Int
    public let endLine: Int
    /// Lines in the file; nil when the file is above the whole-file cap and was not counted.
    public let totalLines: Int?
    /// The offset that continues the read, nil at the end of the file.
    public let nextOffset: Int?
    /// Lines cut at the per-line character limit.
    public let truncatedLines: [Int]

    public var structured: JSONValue {
        [
            "path": .string(path), "start_line": .int(startLine), "end_line": .int(endLine),
            "total_lines": .optional(totalLines.map { .int($0) }),
            "next_offset": .optional(nextOffset.map { .int($0) }),
            "truncated_lines": .array(truncatedLines.map { .int($0) }),
        ]
    }
}

/// `write_file`.
public struct WriteFileResult: ToolOutput, Equatable {
    /// The project-relative path the tool acted on.
    public let path: String
    public let text: String
    public let bytesWritten: Int
    /// True when the file did not exist before.
    public let created: Bool

    public var structured: JSONValue {
        ["path": .string(path), "bytes_written": .int(bytesWritten), "created": .bool(created)]
    }
}

/// `edit_file` (and the `insert` alias).
public struct EditFileResult: ToolOutput, Equatable {
    /// The project-relative path the tool acted on.
    public let path: String
    public let text: String
    /// Occurrences replaced over all edits.
    public let replacements: Int
    /// The changed regions with ±4 lines of context, numbered like `read_file`.
    public let snippet: String

    public var structured: JSONValue {
        ["path": .string(path), "replacements": .int(replacements), "snippet": .string(snippet)]
    }
}

/// One entry of a listing or a search.
public struct ListedEntry: Sendable, Equatable {
    /// Project-relative path.
    public let path: String
    public let kind: FileKind
    /// For symbolic links, where they point (never followed).
    public let linkTarget: String?

    var structured: JSONValue {
        [
            "path": .string(path), "type": .string(kind.rawValue),
            "link_target": .optional(linkTarget.map { .string($0) }),
        ]
    }
}

/// `list_dir`.
public struct ListDirResult: ToolOutput, Equatable {
    /// The project-relative path the tool acted on.
    public let path: String
    public let text: String
    public let entries: [ListedEntry]
    /// Paths not listed because of `.git`, `node_modules` or `.gitignore` (first few).
    public let skipped: [String]
    /// How many paths were skipped in all.
    public let skippedCount: Int
    /// True when the entry limit cut the listing short.
    public let truncated: Bool

    public var structured: JSONValue {
        [
            "path": .string(path), "entries": .array(entries.map(\.structured)), "skipped": .strings(skipped),
            "skipped_count": .int(skippedCount), "truncated": .bool(truncated),
        ]
    }
}

/// `glob`.
public struct GlobResult: ToolOutput, Equatable {
    /// One path per line, newest first, and a note when cut short.
    public let text: String
    /// Matching project-relative paths, newest first.
    public let paths: [String]
    /// Matches found before the limit was applied.
    public let totalMatches: Int
    /// True when `limit` or the walk limit cut the list.
    public let truncated: Bool
    /// Paths not searched because of `.git`, `node_modules`, `.corral` (first few).
    public let skipped: [String]
    /// How many paths were not searched in all.
    public let skippedCount: Int

    public var structured: JSONValue {
        [
            "paths": .strings(paths), "total_matches": .int(totalMatches), "truncated": .bool(truncated),
            "skipped": .strings(skipped), "skipped_count": .int(skippedCount),
        ]
    }
}

/// One line `grep` reports.
public struct GrepMatch: Sendable, Equatable {
    public let path: String
    public let line: Int
    /// The whole line, without its line break.
    public let text: String

    public init(path: String, line: Int, text: String) {
        self.path = path
        self.line = line
        self.text = text
    }
}

/// `grep`.
public struct GrepResult: ToolOutput, Equatable {
    /// `path:line:text` lines, context lines as `path-line-text`, notes at the end.
    public let text: String
    /// Matching lines (context lines are only in `text`).
    public let matches: [GrepMatch]
    /// Text files actually searched (binary, oversized and skipped ones not counted).
    public let filesSearched: Int
    /// True when `max_results`, the output cap, the walk limit or the time budget stopped
    /// the search early.
    public let truncated: Bool
    /// Paths not searched because of `.git`, `node_modules`, `.corral` or `.gitignore`
    /// (first few); empty when the search was one file.
    public let skipped: [String]
    /// How many paths were not searched in all.
    public let skippedCount: Int

    public var structured: JSONValue {
        [
            "matches": .array(
                matches.map { ["path": .string($0.path), "line": .int($0.line), "text": .string($0.text)] }),
            "files_searched": .int(filesSearched), "truncated": .bool(truncated), "skipped": .strings(skipped),
            "skipped_count": .int(skippedCount),
        ]
    }
}

/// `file_info`.
public struct FileInfoResult: ToolOutput, Equatable {
    /// The project-relative path the tool acted on.
    public let path: String
    public let text: String
    public let kind: FileKind
    public let size: Int64
    /// Permission bits in octal, e.g. `0644`.
    public let mode: String
    /// Seconds since the epoch.
    public let modified: Double
    /// For text files up to the size cap.
    public let lineCount: Int?
    /// For regular files.
    public let isBinary: Bool?
    public let linkTarget: String?

    public var structured: JSONValue {
        [
            "path": .string(path), "type": .string(kind.rawValue), "size": .int(size), "mode": .string(mode),
            "modified": .number(modified), "line_count": .optional(lineCount.map { .int($0) }),
            "is_binary": .optional(isBinary.map { .bool($0) }),
            "link_target": .optional(linkTarget.map { .string($0) }),
        ]
    }
}
