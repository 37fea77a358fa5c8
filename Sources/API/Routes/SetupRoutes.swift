import Foundation
import Host
import Hummingbird

/// `/v1/projects/{id}/setup…`: a project's setup commands, run once per file set before
/// its other jobs (docs/ENVIRONMENTS.md, "Setup"). Authorized like the project's other write
/// routes; each change goes to the audit log as a `project` event.
struct SetupRoutes {
    let state: APIState
    var backend: any HostBackend { state.backend }

    func add(to router: Router<APIContext>) {
        router.put("/v1/projects/:id/setup") { request, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            var body = try await request.jsonObject(limit: state.configuration.limits.maxJSONBytes)
            guard let commands = try Self.commands(try body.stringArray("commands"), field: "commands") else {
                throw APIError.missingArgument("commands")
            }
            try body.finish("a setup request")
            let info = try await backend.setSetup(id, commands: commands)
            state.audit?.append(
                "project",
                [
                    "project": .string(id), "action": "setup_changed", "who": .string(context.callerName),
                    "commands": .array(commands.map(JSON.string)),
                ])
            return Response.json(JSON.from(info))
        }
        router.post("/v1/projects/:id/setup/run") { request, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            state.audit?.append(
                "project", ["project": .string(id), "action": "setup_run", "who": .string(context.callerName)])
            return try await ProjectRoutes.progressing(request, id, backend: backend) {
                try await backend.runSetup(id, progress: $0)
            }
        }
    }

    /// Setup commands as a caller sent them in `field`, checked (``SetupCommands``): nil
    /// when the field is absent, which keeps a project's commands.
    static func commands(_ commands: [String]?, field: String) throws(APIError) -> [String]? {
        guard let commands else { return nil }
        if let problem = SetupCommands.problem(commands) { throw .invalidArgument(field, problem) }
        return commands
    }

    /// The query parameter `name` form-decoded: `+` is a space, as `curl --url-query` and
    /// HTML forms write it (a plus is `%2B`); nil when absent. Commands hold spaces, and
    /// the router's decoding keeps a `+` as it is.
    static func formValue(_ name: String, in request: Request) -> String? {
        for pair in (request.uri.query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts[0] == name else { continue }
            let raw = parts.count > 1 ? parts[1].replacingOccurrences(of: "+", with: " ") : ""
            return raw.removingPercentEncoding ?? raw
        }
        return nil
    }

    /// An upload's `setup` query parameter: a JSON array (of strings, checked by the caller).
    static func queryArray(_ text: String) throws(APIError) -> JSON {
        guard let value = try? JSONValue.parse(json: Array(text.utf8)), case .array = value else {
            throw .invalidArgument(
                "setup", "must be a JSON array of command strings, e.g. [\"pip install -r requirements.txt\"]")
        }
        return value
    }
}
