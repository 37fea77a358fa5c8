import Cluster
import Foundation
import HTTPTypes
import Host
import Hummingbird
import Sandbox

/// `/v1/projects/{id}/sessions…`: persistent shells and python interpreters in a project's
/// sandbox, with runs that wait, long-poll, stream and cancel as jobs do (docs/SESSIONS.md).
struct SessionRoutes {
    let state: APIState
    var limits: APILimits { state.configuration.limits }

    func add(to router: Router<APIContext>) {
        router.post("/v1/projects/:id/sessions") { request, context in try await create(request, context) }
        router.get("/v1/projects/:id/sessions") { request, context in
            let (id, caller) = try access(context, request)
            let sessions = try await service().list(id, caller: caller)
            return Response.json(["sessions": .array(sessions.map { JSON.from($0) })])
        }
        router.get("/v1/projects/:id/sessions/:session") { request, context in
            let (id, caller) = try access(context, request)
            return Response.json(JSON.from(try await service().info(id, try sessionID(context), caller: caller)))
        }
        router.delete("/v1/projects/:id/sessions/:session") { request, context in
            let (id, caller) = try access(context, request)
            let session = try sessionID(context)
            try await service().delete(id, session, caller: caller)
            state.audit?.append("session", ["project": .string(id), "session": .string(session), "action": "deleted"])
            return Response(status: .noContent)
        }
        router.post("/v1/projects/:id/sessions/:session/restart") { request, context in
            let (id, caller) = try access(context, request)
            let body = try await request.jsonObject(limit: limits.maxJSONBytes)
            try body.finish("a restart request")
            let session = try sessionID(context)
            let info = try await service().restart(id, session, caller: caller)
            state.audit?.append(
                "session", ["project": .string(id), "session": .string(session), "action": "restarted"])
            return Response.json(JSON.from(info))
        }
        router.post("/v1/projects/:id/sessions/:session/run") { request, context in try await run(request, context) }
        router.get("/v1/projects/:id/sessions/:session/runs/:run") { request, context in
            let (id, caller) = try access(context, request)
            let wait = try request.query("wait", in: 0...limits.maxWaitSeconds) ?? 0
            let since = try request.queryInt("since", in: JobSnapshot.cursors) ?? 0
            let view = try await service().poll(
                id, try sessionID(context), run: try runID(context), wait: .milliseconds(Int(wait * 1000)),
                since: since, caller: caller)
            return Response.json(JSON.from(view))
        }
        router.get("/v1/projects/:id/sessions/:session/runs/:run/events") { request, context in
            try await events(request, context)
        }
        router.post("/v1/projects/:id/sessions/:session/runs/:run/cancel") { request, context in
            let (id, caller) = try access(context, request)
            var body = try await request.jsonObject(limit: limits.maxJSONBytes)
            let signal = try body.signal()
            try body.finish("a cancel request")
            let view = try await service().cancel(
                id, try sessionID(context), run: try runID(context), signal: signal, caller: caller)
            return Response.json(JSON.from(view))
        }
    }

    func service() throws(APIError) -> any SessionService {
        guard let sessions = state.sessions else {
            throw APIError(.notImplemented, "not_supported", "this server runs no sessions")
        }
        return sessions
    }

    /// Names, on a call an API node forwards, whose sessions it is for: the agent's name,
    /// percent-encoded (`ClusterSessions`), or `*` for an admin. Believed only from the
    /// worker token.
    static let callerHeader = HTTPField.Name(ClusterSessions.callerHeader)!

    /// The project and whose sessions the caller may touch: its own, every one for an admin
    /// (nil). On a worker, the API node says whom it forwards for.
    func access(_ context: APIContext, _ request: Request) throws -> (String, String?) {
        let id = try context.projectID()
        let principal = try context.authorize(project: id)
        if principal.forwarder, let named = request.headers[Self.callerHeader] {
            if named == "*" { return (id, nil) }
            guard let name = named.removingPercentEncoding, (1...128).contains(name.utf8.count) else {
                throw APIError.invalidArgument(ClusterSessions.callerHeader, "must name a token, percent-encoded")
            }
            return (id, name)
        }
        return (id, principal.admin ? nil : context.callerName)
    }

    func sessionID(_ context: APIContext) throws(APIError) -> String {
        let id = context.parameters.get("session") ?? ""
        guard (1...128).contains(id.utf8.count), id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw APIError(.notFound, "session_not_found", "no session \(id.prefix(128))")
        }
        return id
    }

    func runID(_ context: APIContext) throws(APIError) -> String {
        let id = context.parameters.get("run") ?? ""
        guard (1...64).contains(id.utf8.count), id.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw APIError(.notFound, "run_not_found", "no run \(id.prefix(64))")
        }
        return id
    }

    func create(_ request: Request, _ context: APIContext) async throws -> Response {
        let (id, caller) = try access(context, request)
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        let kindName = try body.string("kind", maxBytes: 32) ?? "shell"
        guard let kind = SessionKind(rawValue: kindName) else {
            throw APIError.invalidArgument(
                "kind", "must be one of \(SessionKind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let cwd = try body.string("cwd", maxBytes: 4096) ?? "/workspace"
        let environment = try body.stringMap("env") ?? [:]
        try CommandBody.check(environment: environment)
        let idle = try body.int("idle_timeout_s", in: 1...604_800)
        try body.finish("a session request")
        let info = try await service().create(
            id, SessionRequest(kind: kind, cwd: cwd, environment: environment, idleTimeoutSeconds: idle),
            caller: caller ?? context.callerName)
        state.audit?.append(
            "session",
            [
                "project": .string(id), "session": .string(info.sessionID), "action": "created",
                "kind": .string(kind.rawValue), "principal": .string(context.callerName),
            ])
        var headers = HTTPFields()
        headers[.location] = "/v1/projects/\(id)/sessions/\(info.sessionID)"
        return Response.json(JSON.from(info), status: .created, headers: headers)
    }

    func run(_ request: Request, _ context: APIContext) async throws -> Response {
        let (id, caller) = try access(context, request)
        let session = try sessionID(context)
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        let input = try body.requiredString("input", aliases: ["command", "code"], maxBytes: limits.maxCommandBytes)
        guard !input.utf8.contains(0) else { throw APIError.invalidArgument("input", "contains a NUL byte") }
        let stdin = try body.string("stdin", maxBytes: limits.maxJSONBytes)
        guard !(stdin?.utf8.contains(0) ?? false) else {
            throw APIError.invalidArgument("stdin", "contains a NUL byte, which a shell cannot pass on")
        }
        let timeout = try body.number("timeout_s", aliases: ["timeout"], in: 0.001...604_800)
        let wait = try body.number("wait_s", in: 0...limits.maxWaitSeconds) ?? limits.defaultWaitSeconds
        try body.finish("a session run")
        let view = try await service().run(
            id, session, SessionRunRequest(input: input, stdin: stdin, timeoutSeconds: timeout),
            budget: .milliseconds(Int(wait * 1000)), caller: caller)
        state.audit?.append(
            "session_run",
            [
                "project": .string(id), "session": .string(session), "run": .string(view.runID),
                "principal": .string(context.callerName), "input": .string(input),
                "input_bytes": .int(input.utf8.count),
                "status": .string(view.status.rawValue),
            ])
        return Response.json(JSON.from(view))
    }

    /// Server-Sent Events for a run: `output` chunks (id = cursor, so `Last-Event-ID`
    /// resumes), `status` on each change, and a final `exit` with the whole result.
    func events(_ request: Request, _ context: APIContext) async throws -> Response {
        let (id, caller) = try access(context, request)
        let session = try sessionID(context)
        let run = try runID(context)
        let service = try service()
        let resume = try request.headerInt(.lastEventID, in: JobSnapshot.cursors)
        let start = try resume ?? request.queryInt("since", in: JobSnapshot.cursors) ?? 0
        let first = try await service.poll(id, session, run: run, wait: .zero, since: start, caller: caller)
        return Response.eventStream { writer in
            var view = first
            var status: SessionRunStatus?
            while true {
                if !view.output.isEmpty {
                    try await writer.send(
                        "output", ["text": .string(view.output), "cursor": .int(view.cursor)], id: String(view.cursor))
                }
                if view.status != status {
                    status = view.status
                    try await writer.send("status", ["status": .string(view.status.rawValue)])
                }
                if view.status.isFinal {
                    var final = view
                    final.output = ""
                    try await writer.send("exit", JSON.from(final))
                    return
                }
                let next = try await service.poll(
                    id, session, run: run, wait: .seconds(15), since: view.cursor, caller: caller)
                if next.output.isEmpty && next.status == view.status { try await writer.keepAlive() }
                view = next
            }
        }
    }
}
