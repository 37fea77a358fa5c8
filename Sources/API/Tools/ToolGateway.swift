import Foundation
import Host

/// A tool's answer, before it is wrapped for REST (`{content, structuredContent, isError}`)
/// or MCP (the same, inside a JSON-RPC result).
struct ToolOutcome: Sendable {
    var text: String
    var structured: JSON
    /// Only for mistakes the model can fix; a non-zero exit is not one.
    var isError: Bool
    var errorCode: String?
    /// Images for the model (a python run's figures): (MIME type, base64), after the text.
    var images: [(String, String)] = []

    /// An argument the model got wrong, as a result it can read and fix.
    static func invalid(_ error: APIError) -> ToolOutcome {
        ToolOutcome(
            text: "Error: \(error.message)",
            structured: ["error": ["code": .string(error.code), "message": .string(error.message)]], isError: true,
            errorCode: error.code)
    }

    /// The REST/MCP result envelope.
    var envelope: JSON {
        let pictures: [JSON] = images.map { ["type": "image", "data": .string($0.1), "mimeType": .string($0.0)] }
        var fields: [String: JSON] = [
            "content": .array([["type": "text", "text": .string(text)]] + pictures), "isError": .bool(isError),
        ]
        if case .object = structured { fields["structuredContent"] = structured }
        return .object(fields)
    }
}

/// Receives progress while a tool runs (MCP `notifications/progress`).
typealias ToolProgress = @Sendable (_ progress: Double, _ message: String) async -> Void

/// Dispatches tool calls by name: the command tools here, the file tools to the host's
/// ``FileToolBackend``. REST and MCP share it, so both see the same tools.
struct ToolGateway: Sendable {
    let backend: any HostBackend
    let jobs: any JobService
    let files: (any FileToolBackend)?
    let commands: Commands
    let limits: APILimits
    let metrics: APIMetrics
    /// Sessions for `python` and for `bash` in a session; nil on a server without them.
    let sessions: (any SessionService)?
    let defaults = DefaultSessions()

    static let commandTools = ["bash", "job_output", "job_kill", "project_info"]
    static let fileTools = ["read_file", "write_file", "edit_file", "list_dir", "glob", "grep", "file_info"]

    /// The tools offered to models (canonical names; aliases are accepted, not listed).
    var listed: [String] {
        let available = Set(files?.fileToolNames ?? [])
        return Self.commandTools + (sessions == nil ? [] : ["python"]) + Self.fileTools.filter(available.contains)
    }

    /// Every name a call may use.
    var accepted: [String] {
        (Self.commandTools + (sessions == nil ? [] : ["python"]) + (files?.fileToolNames ?? [])).sorted()
    }

    /// Runs `name`. Throws ``APIError`` for an unknown tool or bad arguments (`invalid_argument`,
    /// `limit_exceeded`: the caller turns them into a model-readable error) and host errors.
    func call(
        project: String, name: String, arguments: JSON, principal: Principal, caller: String?,
        progress: ToolProgress? = nil
    ) async throws -> ToolOutcome {
        guard case .object(let fields) = arguments else {
            throw APIError.invalidArgument("arguments", "must be a JSON object, got \(arguments.kindName)")
        }
        var args = Arguments(fields)
        let tools = CommandTools(
            backend: backend, jobs: jobs, commands: commands, limits: limits, project: project, principal: principal)
        let sessionTools = sessions.map {
            SessionTools(
                sessions: $0, defaults: defaults, limits: limits, project: project, principal: principal,
                caller: caller ?? principal.name)
        }
        let outcome: ToolOutcome
        do {
            switch name {
            case "bash"
            where sessionTools != nil && !args.isTrue("background") && !args.isTrue("run_in_background")
                && (sessionTools!.callerHasSession || args.has("session_id")):
                outcome = try await sessionTools!.bash(&args, progress: progress)
            case "python" where sessionTools != nil: outcome = try await sessionTools!.python(&args)
            case "bash": outcome = try await tools.bash(&args, progress: progress)
            case "job_output": outcome = try await tools.jobOutput(&args)
            case "job_kill": outcome = try await tools.jobKill(&args)
            case "project_info": outcome = try await tools.projectInfo(&args)
            default:
                guard let files, files.fileToolNames.contains(name) else {
                    throw APIError.unknownTool(name, known: accepted)
                }
                let reply = try await files.callFileTool(
                    project: project, name: name, arguments: fields, caller: caller)
                outcome = ToolOutcome(
                    text: reply.text, structured: reply.structured, isError: reply.isError, errorCode: reply.errorCode)
            }
        } catch {
            metrics.toolCall(name, outcome: APIError.from(error).code)
            throw error
        }
        metrics.toolCall(name, outcome: outcome.isError ? (outcome.errorCode ?? "error") : "ok")
        return outcome
    }
}

extension APIError {
    /// Errors the model made in its arguments (and can fix by calling again differently).
    var isModelFixable: Bool {
        status == .unprocessableContent || code == "job_not_found" || code == "invalid_argument"
    }
}
