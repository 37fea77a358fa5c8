import Foundation
import Host

/// Answers JSON-RPC messages for one caller: a session's, or a stateless POST's. Holds
/// nothing between requests; a session's state is its read-state key, ``caller``.
struct MCPHandler: Sendable {
    let state: APIState
    let project: String
    let principal: Principal
    /// The file tools' read-state key: the session's (``MCPSession/caller``) or, without a
    /// session, the token's and its `X-Session-Id` (``ToolRoutes/caller(_:_:)``).
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
                caller: Self.caller(caller, meta: params["_meta"]), progress: progress)
            return RPC.result(id, outcome.envelope)
        } catch {
            // Every failure is a result the model can read; the code says what kind it was.
            let mapped = APIError.from(error)
            return RPC.result(id, ToolOutcome.invalid(mapped).envelope)
        }
    }
}

extension MCPHandler {
    /// The caller a tool call runs for: the request's, narrowed by a session the call names
    /// in `_meta.sessionId` (for a client without MCP sessions that runs several agents), so
    /// each gets its own shell and read-state.
    static func caller(_ caller: String, meta: JSON?) -> String {
        guard let named = meta?["sessionId"]?.stringValue, let sane = RequestIDMiddleware.sane(named) else {
            return caller
        }
        return caller + "/" + sane
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
