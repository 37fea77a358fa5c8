import Foundation
import Host
import Hummingbird

/// `POST /v1/projects/{id}/fork`: a new project whose workspace starts as a copy-on-write
/// view of this one's (docs/API.md, "Forks"). The caller must be allowed to use the source
/// and to register the new id under the fork's policy, exactly as a registration would be;
/// each fork goes to the audit log as a `fork` event.
struct ForkRoutes {
    let state: APIState
    var backend: any HostBackend { state.backend }

    func add(to router: Router<APIContext>) {
        router.post("/v1/projects/:id/fork") { request, context in
            let source = try context.projectID()
            _ = try context.authorize(project: source)
            var body = try await request.jsonObject(limit: state.configuration.limits.maxJSONBytes)
            let id = try body.requiredString("id", maxBytes: 256)
            let snapshot = try body.string("snapshot", maxBytes: 256)
            let policy = try body.string("policy", maxBytes: 128)
            var requested: RequestedLimits?
            if var fields = try body.object("limits") {
                requested = try ProjectRoutes.limits(&fields)
                try fields.finish("limits")
            }
            try body.finish("a fork request")
            guard ProjectID.isValid(id) else {
                throw APIError(
                    .badRequest, "invalid_project", "invalid project id \"\(id)\": use 1-128 of A-Z a-z 0-9 . _ -")
            }
            if let snapshot { try NamedSnapshotRoutes.check(snapshot) }
            _ = try context.authorize(project: id)
            // The fork runs under the source's policy unless it names its own: either way the
            // caller must be one that may register a project under it.
            let inherited = policy == nil ? try await backend.project(source).policy : nil
            try context.authorize(policy: policy ?? inherited, defaultPolicy: backend.defaultPolicy)
            let info = try await backend.fork(
                source, into: id, snapshot: snapshot, policy: policy, limits: requested)
            var fields: [String: JSON] = [
                "project": .string(id), "from": .string(source), "who": .string(context.callerName),
            ]
            if let snapshot { fields["snapshot"] = .string(snapshot) }
            state.audit?.append("fork", fields)
            return Response.json(JSON.from(info), status: .created)
        }
    }
}
