import Foundation
import Host
import Hummingbird
import Synchronization

/// `/v1/projects…`: register, upload, inspect, warm, snapshot and evict projects.
struct ProjectRoutes {
    let state: APIState
    var backend: any HostBackend { state.backend }
    var limits: APILimits { state.configuration.limits }

    func add(to router: Router<APIContext>) {
        router.get("/v1/projects") { _, context in try await list(context) }
        router.put("/v1/projects/:id") { request, context in try await register(request, context) }
        router.put("/v1/projects/:id/archive") { request, context in try await upload(request, context) }
        router.patch("/v1/projects/:id/archive") { request, context in try await patch(request, context) }
        router.delete("/v1/projects/:id") { _, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            try await backend.delete(id)
            state.audit?.append(
                "project", ["project": .string(id), "action": "deleted", "who": .string(context.callerName)])
            return Response(status: .noContent)
        }
        router.get("/v1/projects/:id") { _, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            return Response.json(JSON.from(try await backend.project(id)))
        }
        router.post("/v1/projects/:id/warm") { request, context in try await warm(request, context) }
        router.post("/v1/projects/:id/snapshot") { _, context in try await snapshot(context) }
        NamedSnapshotRoutes(state: state).add(to: router)
        SetupRoutes(state: state).add(to: router)
        ForkRoutes(state: state).add(to: router)
        router.delete("/v1/projects/:id/workspace") { request, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            let discard = try request.queryBool("discard") ?? false
            try await backend.evict(id, discard: discard)
            return Response.json(["project": .string(id), "evicted": true, "discarded": .bool(discard)])
        }
    }

    /// Only the projects the caller's token may touch.
    func list(_ context: APIContext) async throws -> Response {
        let principal = try context.caller()
        let visible = await backend.projects().filter { principal.may(project: $0.id) }
        return Response.json(["projects": .array(visible.map { JSON.from($0) })])
    }

    func register(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        let source = try body.requiredString("source", maxBytes: 8192)
        let sha256 = try body.string("sha256", maxBytes: 64)
        if let sha256, sha256.count != 64 || !sha256.allSatisfy(\.isHexDigit) {
            throw APIError.invalidArgument("sha256", "must be 64 hexadecimal digits")
        }
        let policy = try body.string("policy", maxBytes: 128)
        var requested = RequestedLimits()
        if var fields = try body.object("limits") {
            requested = try Self.limits(&fields)
            try fields.finish("limits")
        }
        let setup = try SetupRoutes.commands(try body.stringArray("setup"), field: "setup")
        try body.finish("a project registration")
        try context.authorize(policy: policy, defaultPolicy: backend.defaultPolicy)
        let existed = (try? await backend.project(id)) != nil
        let info = try await backend.register(
            id, source: source, sha256: sha256, policy: policy, limits: requested, setup: setup)
        return Response.json(JSON.from(info), status: existed ? .ok : .created)
    }

    func upload(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        // The query carries the settings, since the body is the archive itself; `setup` is a
        // JSON array of command strings.
        var query: [String: JSON] = [:]
        for (key, value) in request.uri.queryParameters {
            let key = String(key)
            query[key] =
                key == "policy"
                ? .string(String(value))
                : key == "setup"
                    ? try SetupRoutes.queryArray(SetupRoutes.formValue("setup", in: request) ?? "")
                    : Double(value).map(JSON.number) ?? .string(String(value))
        }
        var fields = Arguments(query)
        let policy = try fields.string("policy", maxBytes: 128)
        let requested = try Self.limits(&fields)
        let setup = try SetupRoutes.commands(try fields.stringArray("setup"), field: "setup")
        try fields.finish("an archive upload's query")
        try context.authorize(policy: policy, defaultPolicy: backend.defaultPolicy)
        return try await withArchive(request) { archive in
            let existed = (try? await backend.project(id)) != nil
            let info = try await backend.upload(id, archive: archive, policy: policy, limits: requested, setup: setup)
            return Response.json(JSON.from(info), status: existed ? .ok : .created)
        }
    }

    /// Runs `body` with the request's archive, in one of the upload slots. Archives are held
    /// in memory while the host checks them: a few at a time, so uploads can never add up
    /// to more than maxConcurrentUploads × maxArchiveBytes.
    private func withArchive(_ request: Request, _ body: ([UInt8]) async throws -> Response) async throws
        -> Response
    {
        guard state.uploads.acquire(limit: limits.maxConcurrentUploads) else {
            throw APIError(
                .serviceUnavailable, "overloaded",
                "\(limits.maxConcurrentUploads) uploads are in progress; retry shortly",
                retryAfter: 5)
        }
        defer { state.uploads.release() }
        let archive = try await request.collect(limit: limits.maxArchiveBytes, what: "the archive")
        guard !archive.isEmpty else { throw APIError.invalidArgument("body", "is empty; send the archive's bytes") }
        return try await body(archive)
    }

    /// `PATCH /v1/projects/{id}/archive`: the archive's entries written over the workspace,
    /// under the same body limits and upload slots as a full upload.
    func patch(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        return try await withArchive(request) { archive in
            let summary = try await backend.patch(id, archive: archive)
            state.audit?.append(
                "project",
                [
                    "project": .string(id), "action": "patched", "who": .string(context.callerName),
                    "files_written": .int(summary.filesWritten), "paths_deleted": .int(summary.pathsDeleted),
                ])
            return Response.json(JSON.from(summary))
        }
    }

    func warm(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        return try await Self.progressing(request, id, backend: backend) { try await backend.warm(id, progress: $0) }
    }

    /// The answer of a route that prepares a project (a warm-up, a setup run): the project
    /// once `work` is done, or with `Accept: text/event-stream` its progress as `progress`
    /// events, then a `project` event (or an `error` event with the refusal's code).
    static func progressing(
        _ request: Request, _ id: String, backend: any HostBackend,
        _ work: @escaping @Sendable ((@Sendable (CacheProgress) -> Void)?) async throws -> ProjectInfo
    ) async throws -> Response {
        guard request.wantsEventStream else { return Response.json(JSON.from(try await work(nil))) }
        _ = try await backend.project(id)
        // Setup output can come faster than a slow client reads: the oldest events go first,
        // never the result.
        let (events, sink) = AsyncStream.makeStream(of: CacheProgress.self, bufferingPolicy: .bufferingNewest(256))
        let task = Task {
            defer { sink.finish() }
            return try await work { sink.yield($0) }
        }
        return Response.eventStream { writer in
            for await progress in events { try await writer.send("progress", JSON.from(progress)) }
            do {
                try await writer.send("project", JSON.from(try await task.value))
            } catch {
                let mapped = APIError.from(error)
                try await writer.send("error", JSON.from(ErrorReply(code: mapped.code, message: mapped.message)))
            }
        }
    }

    func snapshot(_ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        return Response.json(JSON.from(SnapshotReply(project: id, snapshot: try await backend.snapshot(id))))
    }

    /// Limits a project asks for; each may only lower its policy's (the host checks). The
    /// names are the wire's (``RequestedLimits/CodingKeys``), which an API node also sends.
    static func limits(_ fields: inout Arguments) throws(APIError) -> RequestedLimits {
        typealias Key = RequestedLimits.CodingKeys
        let bytes: ClosedRange<Int> = 1...(1 << 50)
        func size(_ key: Key) throws(APIError) -> UInt64? {
            try fields.int(key.stringValue, in: bytes).map(UInt64.init)
        }
        return RequestedLimits(
            cpus: try fields.number(Key.cpus.stringValue, in: 0.01...4096),
            memoryBytes: try size(.memoryBytes),
            pids: try fields.int(Key.pids.stringValue, in: 1...(1 << 22)),
            tmpfsBytes: try size(.tmpfsBytes),
            workspaceBytes: try size(.workspaceBytes),
            timeoutSeconds: try fields.int(Key.timeoutSeconds.stringValue, in: 1...604_800),
            stdoutBytes: try size(.stdoutBytes),
            stderrBytes: try size(.stderrBytes))
    }
}

/// A count of uploads in progress.
final class UploadSlots: Sendable {
    private let used = Atomic<Int>(0)

    func acquire(limit: Int) -> Bool {
        if used.wrappingAdd(1, ordering: .relaxed).newValue <= limit { return true }
        used.wrappingSubtract(1, ordering: .relaxed)
        return false
    }

    func release() { used.wrappingSubtract(1, ordering: .relaxed) }
}
