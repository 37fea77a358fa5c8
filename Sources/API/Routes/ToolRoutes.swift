import HTTPTypes
import Hummingbird

extension HTTPField.Name {
    /// Names the agent session, so `stale_file` can tell one session's reads from another's.
    static let sessionID = HTTPField.Name("X-Session-Id")!
}

/// The LLM tool gateway: `POST /v1/projects/{id}/tools/{tool}` with the arguments as the
/// body, answering `{content: [{type: "text", text}], structuredContent, isError}`.
struct ToolRoutes {
    let state: APIState

    func add(to router: Router<APIContext>) {
        router.get("/v1/projects/:id/tools") { _, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            return Response.json(["tools": .array(ToolCatalog.definitions(for: state.tools.listed))])
        }
        router.post("/v1/projects/:id/tools/:tool") { request, context in try await call(request, context) }
    }

    func call(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        let principal = try context.authorize(project: id)
        let name = try context.parameters.require("tool")
        guard state.tools.accepted.contains(name) else { throw APIError.unknownTool(name, known: state.tools.accepted) }
        let bytes = try await request.collect(limit: state.configuration.limits.maxJSONBytes)
        let arguments = bytes.isEmpty ? JSON.object([:]) : try JSON.parse(bytes)
        do {
            let outcome = try await state.tools.call(
                project: id, name: name, arguments: arguments, principal: principal,
                caller: Self.caller(principal, request.headers[.sessionID]))
            // A file tool's wrong arguments are the same refusal as a command tool's: 422.
            let refused = outcome.isError && outcome.errorCode == "invalid_argument"
            return Response.json(outcome.envelope, status: refused ? .unprocessableContent : .ok)
        } catch {
            // A mistake the model can fix is still an envelope, so an agent can hand it to
            // the model as is; the status says the call was refused.
            let mapped = APIError.from(error)
            guard mapped.isModelFixable else { throw error }
            return Response.json(ToolOutcome.invalid(mapped).envelope, status: mapped.status)
        }
    }

    /// The session key for a principal: its name, and the session the client named.
    static func caller(_ principal: Principal, _ session: String?) -> String {
        guard let session, let sane = RequestIDMiddleware.sane(session) else { return principal.name }
        return principal.name + "/" + sane
    }
}
