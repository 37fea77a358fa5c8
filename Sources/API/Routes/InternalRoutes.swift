import Cluster
import Foundation
import HTTPTypes
import Host
import Hummingbird

/// Routes an API node of a cluster calls on a worker host, with an admin token:
/// `POST /v1/internal/projects/{id}/files/{tool}` runs a file tool here and answers the
/// tool's reply as it is (`{text, structured, is_error, error_code}`), for the node to
/// wrap as REST or MCP. The caller's session comes in `X-Corral-Caller`.
struct InternalRoutes {
    let state: APIState

    func add(to router: Router<APIContext>) {
        router.post("/v1/internal/projects/:id/files/:tool") { request, context in
            let id = try context.projectID()
            _ = try context.requireAdmin()
            let name = try context.parameters.require("tool")
            guard let files = state.files, files.fileToolNames.contains(name) else {
                throw APIError.unknownTool(name, known: state.files?.fileToolNames ?? [])
            }
            let arguments = try await request.jsonObject(limit: state.configuration.limits.maxJSONBytes)
            let caller = request.headers[HTTPField.Name(Forwarding.callerHeader)!]
            let reply = try await files.callFileTool(
                project: id, name: name, arguments: arguments.all, caller: caller)
            return Response.json(JSON.from(reply))
        }
    }
}
