import Foundation
import HTTPTypes
import Host
import Hummingbird

/// MCP over Streamable HTTP at `POST /v1/projects/{id}/mcp`: `initialize`, `ping`,
/// `tools/list` and `tools/call` over the same tools as the REST gateway.
///
/// Implemented here rather than with the Swift MCP SDK: the server is stateless (no
/// session, no server-initiated stream), so each POST is answered on its own and two clients
/// that use the same JSON-RPC id can never see each other's answers; the SDK's shared
/// stateless transport could. The surface is five methods.
struct MCPRoutes {
    let state: APIState

    static let versions = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]

    func add(to router: Router<APIContext>) {
        router.post("/v1/projects/:id/mcp") { request, context in try await post(request, context) }
        // No server-initiated stream and no sessions to end.
        router.get("/v1/projects/:id/mcp") { _, _ in Self.methodNotAllowed() }
        router.delete("/v1/projects/:id/mcp") { _, _ in Self.methodNotAllowed() }
    }

    static func methodNotAllowed() -> Response {
        var headers = HTTPFields()
        headers[.allow] = "POST"
        return Response.json(
            ["error": ["code": "method_not_allowed", "message": "this MCP endpoint is stateless: POST only"]],
            status: .methodNotAllowed, headers: headers)
    }

    func post(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        let principal = try context.authorize(project: id)
        let bytes = try await request.collect(limit: state.configuration.limits.maxJSONBytes)
        let message: JSON
        do {
            message = try JSON.parse(bytes)
        } catch {
            return Response.json(RPC.error(nil, -32700, "parse error: \(error.message)"), status: .badRequest)
        }
        let session = MCPSession(
            state: state, project: id, principal: principal,
            caller: ToolRoutes.caller(principal, request.headers[.sessionID]))
        if case .array(let batch) = message {
            return try await answer(batch, session: session, context: context)
        }
        // A tools/call that asked for progress gets an SSE stream, when the client takes one.
        if message["method"]?.stringValue == "tools/call", let token = message["params"]?["_meta"]?["progressToken"],
            request.wantsEventStream
        {
            return streamed(message, token: token, session: session)
        }
        guard let reply = await session.handle(message, progress: nil) else { return Response(status: .accepted) }
        return Response.json(reply)
    }

    /// A JSON-RPC batch, bounded three ways so one POST can never be worth more than the
    /// caller's own budget: at most ``APILimits/maxBatchItems`` messages (a longer batch is
    /// refused whole, nothing run); every message after the first is charged to the
    /// caller's rate like a request of its own (the first was charged as the POST), and one
    /// over the rate is answered with an error, unrun; once the replies pass
    /// ``APILimits/maxBatchReplyBytes``, the rest are answered with an error, unrun.
    func answer(_ batch: [JSON], session: MCPSession, context: APIContext) async throws -> Response {
        let limits = state.configuration.limits
        guard !batch.isEmpty else {
            return Response.json(RPC.error(nil, -32600, "invalid request: an empty batch"), status: .badRequest)
        }
        guard batch.count <= limits.maxBatchItems else {
            return Response.json(
                RPC.error(
                    nil, -32600,
                    "invalid request: a batch of \(batch.count) messages; at most \(limits.maxBatchItems) per request, none was run"
                ),
                status: .badRequest)
        }
        // Each reply is serialized once: its size counts toward the cap, and its bytes are
        // the response.
        var replies: [[UInt8]] = []
        var replyBytes = 0
        for (index, item) in batch.enumerated() {
            let id = item["id"].flatMap { $0 == .null ? nil : $0 }
            if index > 0, let refusal = state.charge(context) {
                if let id { replies.append(RPC.error(id, -32000, refusal.message, data: refusal.data).serialized()) }
                continue
            }
            if replyBytes > limits.maxBatchReplyBytes {
                if let id {
                    replies.append(
                        RPC.error(
                            id, -32000,
                            "not run: this batch's replies passed \(limits.maxBatchReplyBytes) bytes; send the rest in another request",
                            data: ["code": "reply_too_large"]
                        ).serialized())
                }
                continue
            }
            guard let reply = await session.handle(item, progress: nil)?.serialized() else { continue }
            replyBytes += reply.count
            replies.append(reply)
        }
        return replies.isEmpty ? Response(status: .accepted) : Response.json(array: replies)
    }

    /// Progress notifications while the tool runs, then its result, as SSE `message` events.
    func streamed(_ message: JSON, token: JSON, session: MCPSession) -> Response {
        let (notes, sink) = AsyncStream.makeStream(of: JSON.self, bufferingPolicy: .bufferingNewest(32))
        let work = Task {
            defer { sink.finish() }
            return await session.handle(message) { progress, text in
                sink.yield(
                    RPC.notification(
                        "notifications/progress",
                        ["progressToken": token, "progress": .number(progress), "message": .string(text)]))
            }
        }
        return Response.eventStream { writer in
            for await note in notes { try await writer.send("message", note) }
            if let reply = await work.value { try await writer.send("message", reply) }
        }
    }
}

/// One POST's worth of JSON-RPC: nothing outlives the request.
struct MCPSession: Sendable {
    let state: APIState
    let project: String
    let principal: Principal
    let caller: String

    /// The reply to `message`, or nil for notifications and client responses.
    func handle(_ message: JSON, progress: ToolProgress?) async -> JSON? {
        guard case .object = message, message["jsonrpc"]?.stringValue == "2.0" else {
            return RPC.error(nil, -32600, "invalid request: not a JSON-RPC 2.0 message")
        }
        guard let method = message["method"]?.stringValue else { return nil }
        guard let id = message["id"], id != .null else { return nil }
        let params = message["params"] ?? [:]
        switch method {
        case "initialize":
            let asked = params["protocolVersion"]?.stringValue ?? ""
            let version = MCPRoutes.versions.contains(asked) ? asked : MCPRoutes.versions[0]
            return RPC.result(
                id,
                [
                    "protocolVersion": .string(version), "capabilities": ["tools": ["listChanged": false]],
                    "serverInfo": ["name": "corral", "version": .string(HostModule.version)],
                    "instructions": .string(
                        "Tools for project \(project): run commands in its sandbox (bash, job_output, job_kill) and read, write, edit and search its files under /workspace."
                    ),
                ])
        case "ping": return RPC.result(id, [:])
        case "tools/list": return RPC.result(id, ["tools": .array(ToolCatalog.definitions(for: state.tools.listed))])
        case "tools/call": return await call(id, params, progress: progress)
        default: return RPC.error(id, -32601, "method not found: \(method)")
        }
    }

    func call(_ id: JSON, _ params: JSON, progress: ToolProgress?) async -> JSON {
        guard let name = params["name"]?.stringValue else {
            return RPC.error(id, -32602, "tools/call needs params.name")
        }
        guard state.tools.accepted.contains(name) else {
            return RPC.error(
                id, -32602, "unknown tool: \(name); the tools are \(state.tools.listed.joined(separator: ", "))")
        }
        do {
            let outcome = try await state.tools.call(
                project: project, name: name, arguments: params["arguments"] ?? [:], principal: principal,
                caller: caller, progress: progress)
            return RPC.result(id, outcome.envelope)
        } catch {
            // Every failure is a result the model can read; the code says what kind it was.
            let mapped = APIError.from(error)
            return RPC.result(id, ToolOutcome.invalid(mapped).envelope)
        }
    }
}

/// JSON-RPC 2.0 message shapes.
enum RPC {
    static func result(_ id: JSON, _ result: JSON) -> JSON { ["jsonrpc": "2.0", "id": id, "result": result] }

    static func error(_ id: JSON?, _ code: Int, _ message: String, data: JSON? = nil) -> JSON {
        var error: [String: JSON] = ["code": .int(code), "message": .string(message)]
        if let data { error["data"] = data }
        return ["jsonrpc": "2.0", "id": id ?? .null, "error": .object(error)]
    }

    static func notification(_ method: String, _ params: JSON) -> JSON {
        ["jsonrpc": "2.0", "method": .string(method), "params": params]
    }
}
