import Sandbox

/// Why a file tool call failed, with a stable `code` and a message that tells the model what
/// to do next.
///
/// Every case but ``io(path:_:)`` is something the model can fix by changing its call; the
/// gateway reports those with `isError: true`. ``io(path:_:)`` is an infrastructure fault.
public enum ToolError: Error, Equatable, Sendable {
    /// An absolute path outside `/workspace`, a `..` that climbs out, a NUL byte, or a link
    /// the tools refuse to follow.
    case pathOutsideProject(path: String, reason: String)
    /// Nothing at `path`; `similar` holds up to three near names (project-relative paths).
    case notFound(path: String, similar: [String], detail: String?)
    /// A directory where a file was needed.
    case isDirectory(path: String)
    /// A FIFO, socket, device or (where the tools write) symbolic link.
    case notARegularFile(path: String, kind: String, detail: String?)
    /// The file holds binary data (a NUL byte in its first 8 KiB).
    case binaryFile(path: String, size: Int64)
    /// The file is larger than the tools handle in one piece.
    case fileTooLarge(path: String, size: Int64, limit: Int64)
    /// An offset or line outside the file.
    case invalidRange(path: String, detail: String)
    /// `old_str` does not occur; `closest` is the most similar window of lines, if any.
    case oldStrNotFound(path: String, edit: Int?, closest: ClosestMatch?, hint: String?)
    /// `old_str` occurs on each of `lines` and `replace_all` was not set.
    case oldStrNotUnique(path: String, edit: Int?, lines: [Int])
    /// `old_str == new_str`.
    case noOpEdit(path: String, edit: Int?)
    /// The file changed since the caller read it, or the caller never read it.
    case staleFile(path: String, reason: StaleReason)
    /// A missing, unknown or mistyped argument.
    case invalidArguments(argument: String, detail: String)
    /// A system call failed for a reason the model cannot fix (disk full, I/O error).
    case io(path: String, SystemError)

    /// The stable code of API.md's "Model-facing error codes".
    public var code: String {
        switch self {
        case .pathOutsideProject: "path_outside_project"
        case .notFound: "not_found"
        case .isDirectory: "is_directory"
        case .notARegularFile: "not_a_regular_file"
        case .binaryFile: "binary_file"
        case .fileTooLarge: "file_too_large"
        case .invalidRange: "invalid_range"
        case .oldStrNotFound: "old_str_not_found"
        case .oldStrNotUnique: "old_str_not_unique"
        case .noOpEdit: "no_op_edit"
        case .staleFile: "stale_file"
        case .invalidArguments: "invalid_argument"
        case .io: "io_error"
        }
    }

    /// Whether the model can fix this by changing its call (`isError` in the envelope), as
    /// opposed to an infrastructure fault.
    public var isModelError: Bool {
        if case .io = self { return false }
        return true
    }

    /// What went wrong and what to do next, written for the model.
    public var message: String {
        switch self {
        case .pathOutsideProject(let path, let reason):
            return "\(quoted(path)) is outside the project (\(reason)). Use a path relative to the project root, "
                + "such as `src/main.py`, or an absolute path under /workspace/."
        case .notFound(let path, let similar, let detail):
            var text = "\(quoted(path)) does not exist"
            if let detail { text += " (\(detail))" }
            text += "."
            if !similar.isEmpty { text += " Did you mean: \(similar.joined(separator: ", "))?" }
            return text + " Use list_dir or glob to find the right path."
        case .isDirectory(let path):
            return "\(quoted(path)) is a directory, not a file. Use list_dir to see what it contains."
        case .notARegularFile(let path, let kind, let detail):
            return "\(quoted(path)) is a \(kind), not a regular file. "
                + (detail ?? "The file tools only read and write regular files.")
        case .binaryFile(let path, let size):
            return "\(quoted(path)) is a binary file (\(Format.count(size)) bytes), so it is not shown as text. "
                + "Use file_info for its size and type, or inspect it with a command (e.g. `xxd \(path) | head`)."
        case .fileTooLarge(let path, let size, let limit):
            return
                "\(quoted(path)) is \(Format.bytes(size)), above the \(Format.bytes(limit)) limit for handling a whole file. "
                + "Read a range with offset and limit (e.g. offset=1, limit=200), or search it with grep."
        case .invalidRange(let path, let detail):
            return "Invalid range for \(quoted(path)): \(detail)"
        case .oldStrNotFound(let path, let edit, let closest, let hint):
            return Self.notFoundMessage(path: path, edit: edit, closest: closest, hint: hint)
        case .oldStrNotUnique(let path, let edit, let lines):
            let shown = lines.prefix(20).map(String.init).joined(separator: ", ") + (lines.count > 20 ? ", …" : "")
            return "\(prefix(edit))old_str occurs \(lines.count) times in \(quoted(path)) (lines \(shown)). "
                + "Include more surrounding lines in old_str to make it unique, or set replace_all to true to "
                + "replace every occurrence."
        case .noOpEdit(let path, let edit):
            return "\(prefix(edit))old_str and new_str are identical, so editing \(quoted(path)) would change nothing. "
                + "Put the new text in new_str."
        case .staleFile(let path, let reason):
            switch reason {
            case .neverRead:
                return "\(quoted(path)) already exists and you have not read it. Read it with read_file first, "
                    + "then write or edit it."
            case .modified:
                return "\(quoted(path)) changed since you last read it (a command or another agent wrote it). "
                    + "Read it again with read_file and redo your change against the current content."
            }
        case .invalidArguments(let argument, let detail):
            return "Invalid argument `\(argument)`: \(detail)"
        case .io(let path, let error):
            return "Could not access \(quoted(path)): \(error). This is a problem on the host, not in your call."
        }
    }

    private static func notFoundMessage(path: String, edit: Int?, closest: ClosestMatch?, hint: String?) -> String {
        var text =
            "\(prefix(edit))old_str was not found in \(quoted(path)). It must match the file exactly, "
            + "including whitespace, indentation and line breaks."
        if let hint { text += " \(hint)" }
        if let closest {
            let range =
                closest.startLine == closest.endLine
                ? "line \(closest.startLine)" : "lines \(closest.startLine)-\(closest.endLine)"
            text += " The closest text is at \(range) (\(Int(closest.similarity * 100))% similar):\n"
            text += closest.numberedText
            text += "\nCopy the text exactly as it appears there (without the line-number prefix) and try again."
        } else {
            text += " Nothing similar was found; read the file again with read_file."
        }
        return text
    }
}

/// The lines of a file that most resemble an `old_str` that was not found.
public struct ClosestMatch: Equatable, Sendable {
    /// First line of the window, 1-based.
    public let startLine: Int
    /// Last line of the window, 1-based, inclusive.
    public let endLine: Int
    /// 0...1; 1 means equal after trimming whitespace.
    public let similarity: Double
    /// The window in `read_file` format (`     7\ttext`).
    public let numberedText: String
}

/// Why a write was refused as stale.
public enum StaleReason: String, Equatable, Sendable {
    /// The caller never read the existing file.
    case neverRead = "never_read"
    /// The file's size, mtime, ctime or inode differ from when the caller read it.
    case modified
}

private func quoted(_ path: String) -> String { "`\(Format.display(path))`" }

private func prefix(_ edit: Int?) -> String { edit.map { "edits[\($0)]: " } ?? "" }
