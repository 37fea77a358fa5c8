/// The file tools (read, write, edit, list, glob, grep, info and their aliases), run on a
/// project's workspace. The host's `FileTools` implement them; the API only routes calls.
public protocol FileToolBackend: Sendable {
    /// Runs one file tool (canonical name or alias) on the project's workspace.
    func callFileTool(project: String, name: String, arguments: [String: JSONValue], caller: String?) async throws
        -> ToolResult
    /// Names the backend accepts (canonical + aliases), for tools/list and unknown-tool errors.
    var fileToolNames: [String] { get }
}
