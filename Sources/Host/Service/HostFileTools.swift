import Foundation

/// The host's file tools behind the gateway: JSON arguments in, the tool's result out.
public struct HostFileTools: FileToolBackend {
    let host: CorralHost

    public init(host: CorralHost) { self.host = host }

    public var fileToolNames: [String] { FileTools.toolNames.sorted() }

    public func callFileTool(project: String, name: String, arguments: [String: JSONValue], caller: String?)
        async throws
        -> ToolResult
    {
        try await host.fileTool(project: project, name: name, arguments: arguments, caller: caller)
    }
}
