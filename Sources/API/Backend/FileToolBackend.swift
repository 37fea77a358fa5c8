/// The file tools (read, write, edit, list, glob, grep, info and their aliases), run on a
/// project's workspace. The host's `FileTools` implement them; the API only routes calls.
public protocol FileToolBackend: Sendable {
    /// Runs one file tool (canonical name or alias) on the project's workspace.
    func callFileTool(project: String, name: String, arguments: [String: JSON], caller: String?) async throws
        -> FileToolReply
    /// Names the backend accepts (canonical + aliases), for tools/list and unknown-tool errors.
    var fileToolNames: [String] { get }
}

/// One file tool's answer: text for the model, a JSON object for programs, and whether the
/// model made a mistake it can fix (a bad path, an `old_str` that is not there).
public struct FileToolReply: Sendable {
    public var text: String
    /// A JSON object.
    public var structured: JSON
    public var isError: Bool
    /// The model-facing code (`not_found`, `old_str_not_unique`, …) when `isError`.
    public var errorCode: String?

    public init(text: String, structured: JSON, isError: Bool, errorCode: String? = nil) {
        self.text = text
        self.structured = structured
        self.isError = isError
        self.errorCode = errorCode
    }
}
