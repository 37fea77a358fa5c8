import Foundation
import Host

/// The host's file tools behind the gateway: JSON arguments in, the tool's result out.
public struct HostFileTools: FileToolBackend {
    let host: CorralHost

    public init(host: CorralHost) { self.host = host }

    public var fileToolNames: [String] { FileTools.toolNames.sorted() }

    public func callFileTool(project: String, name: String, argumentsJSON: [UInt8], caller: String?) async throws
        -> FileToolReply
    {
        let arguments: [String: JSONValue]
        do {
            arguments = try JSONDecoder().decode([String: JSONValue].self, from: Data(argumentsJSON))
        } catch {
            return FileToolReply(
                text: "The arguments must be a JSON object.",
                structuredJSON: Array(#"{"code":"invalid_arguments"}"#.utf8),
                isError: true, errorCode: "invalid_arguments")
        }
        let result = try await host.fileTool(project: project, name: name, arguments: arguments, caller: caller)
        return FileToolReply(
            text: result.text, structuredJSON: Array(try JSONEncoder().encode(result.structured)),
            isError: result.isError, errorCode: result.errorCode)
    }
}
