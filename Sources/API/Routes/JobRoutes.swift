import Foundation
import HTTPTypes
import Host
import Hummingbird

/// `/v1/projects/{id}/exec` and `/jobs…`: run commands, wait on them, stream and cancel them.
struct JobRoutes {
    let state: APIState
    var jobs: any JobService { state.jobs }
    var limits: APILimits { state.configuration.limits }

    func add(to router: Router<APIContext>) {
        router.post("/v1/projects/:id/exec") { request, context in try await exec(request, context) }
        router.post("/v1/projects/:id/jobs") { request, context in try await submit(request, context) }
        router.get("/v1/projects/:id/jobs") { request, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            let limit = try request.queryInt("limit", in: 1...1000) ?? 50
            let records = try await jobs.list(project: id, limit: limit)
            return Response.json(["jobs": .array(records.map { JobSummary(record: $0).json })])
        }
        router.get("/v1/projects/:id/jobs/:job") { request, context in try await poll(request, context) }
        router.get("/v1/projects/:id/jobs/:job/events") { request, context in try await events(request, context) }
        router.post("/v1/projects/:id/jobs/:job/cancel") { request, context in
            let (_, job) = try await ownedJob(context)
            var body = try await request.jsonObject(limit: limits.maxJSONBytes)
            let signal = try body.signal()
            try body.finish("a cancel request")
            let snapshot = try await jobs.cancel(job, signal: signal)
            return Response.json(JobView(snapshot: snapshot).json)
        }
    }

    func exec(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        let principal = try context.authorize(project: id)
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        var job = try await CommandBody.parse(&body, project: id, principal: principal, state: state)
        let wait = try body.number("wait_s", in: 0...limits.maxWaitSeconds) ?? limits.defaultWaitSeconds
        try body.finish("an exec request")
        job.idempotencyKey = try Self.idempotencyKey(request)
        let snapshot = try await state.commands.run(job, budget: .milliseconds(Int(wait * 1000)), via: "exec")
        return Response.json(JobView(snapshot: snapshot, waited: wait).json)
    }

    func submit(_ request: Request, _ context: APIContext) async throws -> Response {
        let id = try context.projectID()
        let principal = try context.authorize(project: id)
        var body = try await request.jsonObject(limit: limits.maxJSONBytes)
        var job = try await CommandBody.parse(&body, project: id, principal: principal, state: state)
        job.background = try body.bool("background") ?? true
        try body.finish("a job submission")
        job.idempotencyKey = try Self.idempotencyKey(request)
        let record = try await state.commands.launch(job, via: "jobs")
        let snapshot = try await jobs.snapshot(record.id, since: 0)
        var headers = HTTPFields()
        headers[.location] = "/v1/projects/\(id)/jobs/\(record.id)"
        return Response.json(JobView(snapshot: snapshot).json, status: .accepted, headers: headers)
    }

    /// Long-poll: answers when there is output after `since`, the job ends, or `wait` passes.
    func poll(_ request: Request, _ context: APIContext) async throws -> Response {
        let (_, job) = try await ownedJob(context)
        let wait = try request.query("wait", in: 0...limits.maxWaitSeconds) ?? 0
        let since = try request.queryInt("since", in: JobSnapshot.cursors) ?? 0
        let snapshot = try await jobs.wait(
            job, timeout: .milliseconds(Int(wait * 1000)), since: since, untilFinished: false)
        return Response.json(JobView(snapshot: snapshot).json)
    }

    /// Server-Sent Events: `output` chunks (id = cursor, so `Last-Event-ID` resumes),
    /// `status` on each change, and a final `exit` with the whole result.
    func events(_ request: Request, _ context: APIContext) async throws -> Response {
        let (_, job) = try await ownedJob(context)
        let resume = try request.headerInt(.lastEventID, in: JobSnapshot.cursors)
        let start = try resume ?? request.queryInt("since", in: JobSnapshot.cursors) ?? 0
        let first = try await jobs.snapshot(job, since: start)
        return Response.eventStream { [jobs] writer in
            var status: JobState?
            var snapshot = first
            var cursor = start
            while true {
                if !snapshot.output.isEmpty {
                    try await writer.send(
                        "output", ["text": .string(snapshot.output), "cursor": .int(snapshot.cursor)],
                        id: String(snapshot.cursor))
                }
                cursor = snapshot.cursor
                if snapshot.record.state != status {
                    status = snapshot.record.state
                    try await writer.send("status", ["status": .string(snapshot.record.state.rawValue)])
                }
                if snapshot.record.state.isFinal {
                    var final = snapshot
                    final.output = ""
                    try await writer.send("exit", JobView(snapshot: final).json)
                    return
                }
                let next = try await jobs.wait(job, timeout: .seconds(15), since: cursor, untilFinished: false)
                if next == snapshot { try await writer.keepAlive() }
                snapshot = next
            }
        }
    }

    /// The `{job}` of the path, which must belong to the `{id}` project: the job system
    /// itself does not check, and a token for project A must not reach B's jobs.
    func ownedJob(_ context: APIContext) async throws -> (String, String) {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        let job = try context.parameters.require("job")
        guard job.utf8.count <= 128,
            let snapshot = try? await jobs.snapshot(job, since: Int.max / 2),
            snapshot.record.request.project == id
        else { throw APIError.jobNotFound(job, project: id) }
        return (id, job)
    }

    static func idempotencyKey(_ request: Request) throws(APIError) -> String? {
        guard let key = request.headers[.idempotencyKey] else { return nil }
        guard (1...255).contains(key.utf8.count), key.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            throw .invalidArgument("Idempotency-Key", "must be 1-255 printable ASCII characters")
        }
        return key
    }
}

/// The fields every way of running a command shares: `command`, `shell`, `timeout_s`, `cwd`,
/// `env`, `stdin`.
enum CommandBody {
    static func parse(_ body: inout Arguments, project: String, principal: Principal, state: APIState) async throws
        -> JobRequest
    {
        let limits = state.configuration.limits
        let command = try body.requiredString("command", maxBytes: limits.maxCommandBytes)
        guard !command.allSatisfy(\.isWhitespace) else { throw APIError.invalidArgument("command", "is empty") }
        let shell = try Self.shell(&body) ?? .sh
        let timeout = try body.number("timeout_s", aliases: ["timeout"], in: 0.001...604_800)
        let cwd = try Self.cwd(&body)
        let environment = try Self.environment(&body)
        let stdin = try body.string("stdin", maxBytes: limits.maxJSONBytes)
        return JobRequest(
            project: project, command: command, shell: shell, cwd: cwd, environment: environment, stdin: stdin,
            timeoutSeconds: try await resolvedTimeout(timeout, project: project, state: state),
            submitter: principal.name,
            submitterCap: principal.jobCap(limits))
    }

    /// `shell`: `sh` or `bash` (bash where the project's image has it, else sh); nil when absent.
    static func shell(_ body: inout Arguments) throws(APIError) -> JobShell? {
        guard let name = try body.string("shell", maxBytes: 64) else { return nil }
        guard let shell = JobShell(rawValue: name) else {
            let names = JobShell.allCases.map(\.rawValue).joined(separator: ", ")
            throw .invalidArgument("shell", "must be one of \(names), got \"\(name)\"")
        }
        return shell
    }

    /// `cwd`, absolute, relative to `/workspace` (`sub`), or absent (`/workspace`). Whether
    /// it stays inside the workspace is checked where the job starts, on the resolved path.
    static func cwd(_ body: inout Arguments) throws(APIError) -> String {
        JobRequest.workingDirectory(try body.string("cwd", maxBytes: 4096) ?? "/workspace")
    }

    /// `env`: an object of strings, with valid variable names.
    static func environment(_ body: inout Arguments) throws(APIError) -> [String: String] {
        let environment = try body.stringMap("env") ?? [:]
        try check(environment: environment)
        return environment
    }

    static func resolvedTimeout(_ requested: Double?, project: String, state: APIState) async throws -> Double {
        if let requested { return requested }
        return try await state.commands.defaultTimeout(project: project)
    }

    static func check(environment: [String: String]) throws(APIError) {
        guard environment.count <= 256 else {
            throw .invalidArgument("env", "has \(environment.count) variables; the most is 256")
        }
        for name in environment.keys {
            let bytes = Array(name.utf8)
            let valid =
                !bytes.isEmpty && bytes.count <= 256 && !(bytes[0] >= 0x30 && bytes[0] <= 0x39)
                && bytes.allSatisfy {
                    ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F
                }
            guard valid else { throw .invalidArgument("env", "has an invalid variable name \"\(name)\"") }
        }
    }
}
