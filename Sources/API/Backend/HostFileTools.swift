import Foundation
import Host

/// The host's file tools behind the gateway: JSON arguments in, the tool's result out.
public struct HostFileTools: FileToolBackend {
    let host: CorralHost

    public init(host: CorralHost) { self.host = host }

    public var fileToolNames: [String] { FileTools.toolNames.sorted() }

    public func callFileTool(project: String, name: String, arguments: [String: JSON], caller: String?) async throws
        -> FileToolReply
    {
        let result = try await host.fileTool(project: project, name: name, arguments: arguments, caller: caller)
        return FileToolReply(
            text: result.text, structured: result.structured, isError: result.isError,
            errorCode: result.errorCode)
    }
}
