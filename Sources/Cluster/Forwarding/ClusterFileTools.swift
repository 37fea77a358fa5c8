import Foundation
import Host

/// The file tools of a cluster's API node: each call goes to the project's owner, whose
/// workspace it reads or changes (`POST /v1/internal/projects/{id}/files/{tool}` on the
/// worker), with the caller's identity, so `stale_file` tracks the same session wherever
/// its calls enter the cluster.
public struct ClusterFileTools: FileToolBackend {
    let backend: ClusterBackend

    public init(backend: ClusterBackend) { self.backend = backend }

    public var fileToolNames: [String] { FileTools.toolNames.sorted() }

    public func callFileTool(project: String, name: String, arguments: [String: JSONValue], caller: String?)
        async throws
        -> ToolResult
    {
        try await backend.requireRegistered(project)
        var headers = [("Content-Type", "application/json")]
        if let caller { headers.append((Forwarding.callerHeader, caller)) }
        let response = try await backend.forward(
            project, "POST", "/v1/internal/projects/\(project)/files/\(name)", headers: headers,
            body: JSONValue.object(arguments).serialized())
        return try Wire.decode(ToolResult.self, from: response.body)
    }
}
