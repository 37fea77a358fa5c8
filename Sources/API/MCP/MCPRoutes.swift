import Foundation
import HTTPTypes
import Host
import Hummingbird

extension HTTPField.Name {
    /// Names an MCP session (Streamable HTTP, protocol 2025-03-26 and later).
    static let mcpSessionID = HTTPField.Name("Mcp-Session-Id")!
}

/// MCP over Streamable HTTP at `POST /v1/projects/{id}/mcp`: `initialize`, `ping`,
/// `tools/list` and `tools/call` over the same tools as the REST gateway.
///
/// An `initialize` without `Mcp-Session-Id` opens a session (``MCPSessionStore``) and names
/// it in the answer's `Mcp-Session-Id`; a request naming a session runs in it, with the
/// session's own read-state for the file tools, and one naming no live session of its
/// project and token is 404 (the client must initialize again); `DELETE` with the header
/// ends the session. A request without the header is stateless, as for clients that send
/// none. Either way each POST is answered on its own: there is no server-initiated stream.
///
/// Implemented here rather than with the Swift MCP SDK, whose shared stateless transport
/// would route answers by JSON-RPC id across clients. The surface is five methods.
struct MCPRoutes {
    let state: APIState

    static let versions = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]

    func add(to router: Router<APIContext>) {
        router.post("/v1/projects/:id/mcp") { request, context in try await post(request, context) }
        // No server-initiated stream.
        router.get("/v1/projects/:id/mcp") { _, _ in
            Self.methodNotAllowed(
                "this MCP endpoint has no server-initiated stream: POST messages (DELETE with Mcp-Session-Id ends a session)"
            )
        }
        router.delete("/v1/projects/:id/mcp") { request, context in try await delete(request, context) }
    }

    static func methodNotAllowed(_ message: String) -> Response {
        var headers = HTTPFields()
        headers[.allow] = "POST, DELETE"
        return Response.json(
            ["error": ["code": "method_not_allowed", "message": .string(message)]], status: .methodNotAllowed,
            headers: headers)
    }

    func post(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        let principal = try context.authorize(project: id)
        let sessions = state.mcpSessions
        var session: MCPSession?
        if let named = request.headers[.mcpSessionID] {
            switch await sessions.begin(named, project: id, principal: principal.name) {
            case .failure(let miss): return notFound(miss)
            case .success(let live): session = live
            }
        }
        // The session's request is in flight until answered; a streamed answer ends later.
        var answered = true
        defer { if answered, let session { sessions.finish(session.id) } }
        let bytes = try await request.collect(limit: state.configuration.limits.maxJSONBytes)
        let message: JSON
        do {
            message = try JSON.parse(bytes)
        } catch {
            return Response.json(RPC.error(nil, -32700, "parse error: \(error.message)"), status: .badRequest)
        }
        let handler = MCPHandler(
            state: state, project: id, principal: principal,
            caller: session?.caller ?? ToolRoutes.caller(principal, request.headers[.sessionID]))
        if case .array(let batch) = message {
            return try await answer(batch, handler: handler, context: context)
        }
        if session == nil, message["method"]?.stringValue == "initialize", let rpcID = message["id"], rpcID != .null {
            return await initialize(message, id: rpcID, handler: handler)
        }
        // A tools/call that asked for progress gets an SSE stream, when the client takes one.
        if message["method"]?.stringValue == "tools/call", let token = message["params"]?["_meta"]?["progressToken"],
            request.wantsEventStream
        {
            answered = false
            let streaming = session
            return streamed(message, token: token, handler: handler) {
                if let streaming { sessions.finish(streaming.id) }
            }
        }
        guard let reply = await handler.handle(message, progress: nil) else { return Response(status: .accepted) }
        return Response.json(reply)
    }

    /// A lone `initialize` without `Mcp-Session-Id`: opens a session and names it in the
    /// answer. (One inside a batch is answered without a session, as the spec keeps
    /// `initialize` out of batches.) A full store refuses it with 503 and `Retry-After`.
    func initialize(_ message: JSON, id: JSON, handler: MCPHandler) async -> Response {
        let session: MCPSession
        do {
            session = try await state.mcpSessions.open(project: handler.project, principal: handler.principal.name)
        } catch {
            var headers = HTTPFields()
            headers[.retryAfter] = String(error.retryAfter)
            return Response.json(
                RPC.error(
                    id, -32000, error.message,
                    data: ["code": "too_many_sessions", "retry_after": .int(error.retryAfter)]),
                status: .serviceUnavailable, headers: headers)
        }
        let reply = await handler.handle(message, progress: nil) ?? RPC.result(id, [:])
        var headers = HTTPFields()
        headers[.mcpSessionID] = session.id
        return Response.json(reply, headers: headers)
    }

    /// `DELETE` with `Mcp-Session-Id` ends that session (204 once its end hooks have run);
    /// without the header there is nothing to delete (405, as on a stateless server).
    func delete(_ request: Request, _ context: APIContext) async throws -> Response {
        guard let named = request.headers[.mcpSessionID] else {
            return Self.methodNotAllowed(
                "DELETE ends the MCP session its Mcp-Session-Id header names, and this request names none")
        }
        let id = try context.projectID()
        let principal = try context.authorize(project: id)
        if let miss = await state.mcpSessions.delete(named, project: id, principal: principal.name) {
            return notFound(miss)
        }
        return Response(status: .noContent)
    }

    /// 404 for a session id that names no session the caller may use, with a JSON-RPC error
    /// saying why and that the client must start a new session.
    func notFound(_ miss: MCPSessionMiss) -> Response {
        state.metrics.mcpSessionMiss(miss.label)
        return Response.json(
            RPC.error(
                nil, -32001, miss.message(state.mcpSessions),
                data: ["code": "session_not_found", "reason": .string(miss.label)]),
            status: .notFound)
    }

    /// A JSON-RPC batch, bounded three ways so one POST can never be worth more than the
    /// caller's own budget: at most ``APILimits/maxBatchItems`` messages (a longer batch is
    /// refused whole, nothing run); every message after the first is charged to the
    /// caller's rate like a request of its own (the first was charged as the POST), and one
    /// over the rate is answered with an error, unrun; once the replies pass
    /// ``APILimits/maxBatchReplyBytes``, the rest are answered with an error, unrun.
    func answer(_ batch: [JSON], handler: MCPHandler, context: APIContext) async throws -> Response {
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
            guard let reply = await handler.handle(item, progress: nil)?.serialized() else { continue }
            replyBytes += reply.count
            replies.append(reply)
        }
        return replies.isEmpty ? Response(status: .accepted) : Response.json(array: replies)
    }

    /// Progress notifications while the tool runs, then its result, as SSE `message` events;
    /// `done` runs when the call has finished, whether or not the client still reads.
    func streamed(
        _ message: JSON, token: JSON, handler: MCPHandler, done: @escaping @Sendable () -> Void
    ) -> Response {
        let (notes, sink) = AsyncStream.makeStream(of: JSON.self, bufferingPolicy: .bufferingNewest(32))
        let work = Task {
            defer {
                sink.finish()
                done()
            }
            return await handler.handle(message) { progress, text in
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
