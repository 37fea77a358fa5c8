import Foundation
import Host
import Hummingbird

/// `/v1/projects/{id}/snapshots…`: named, immutable snapshots of a project's workspace,
/// and restoring one (docs/API.md, "Named snapshots"). Authorized like the project's other
/// write routes; each change goes to the audit log as a `snapshot` event.
struct NamedSnapshotRoutes {
    let state: APIState
    var backend: any HostBackend { state.backend }

    func add(to router: Router<APIContext>) {
        router.post("/v1/projects/:id/snapshots") { request, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            var body = try await request.jsonObject(limit: state.configuration.limits.maxJSONBytes)
            let name = try body.requiredString("name", maxBytes: 256)
            try body.finish("a snapshot request")
            try Self.check(name)
            let snapshot = try await backend.createSnapshot(id, name: name)
            audit("created", id, name, context, bytes: snapshot.bytes)
            return Response.json(JSON.from(snapshot), status: .created)
        }
        router.get("/v1/projects/:id/snapshots") { _, context in
            let id = try context.projectID()
            _ = try context.authorize(project: id)
            let list = NamedSnapshotList(project: id, snapshots: try await backend.snapshots(id))
            return Response.json(JSON.from(list))
        }
        router.get("/v1/projects/:id/snapshots/:name") { _, context in
            let (id, name) = try Self.target(context)
            return Response.json(JSON.from(try await backend.namedSnapshot(id, name: name)))
        }
        router.post("/v1/projects/:id/snapshots/:name/restore") { _, context in
            let (id, name) = try Self.target(context)
            let snapshot = try await backend.restoreSnapshot(id, name: name)
            audit("restored", id, name, context, bytes: snapshot.bytes)
            return Response.json(JSON.from(SnapshotRestoreReply(project: id, restored: snapshot)))
        }
        router.delete("/v1/projects/:id/snapshots/:name") { _, context in
            let (id, name) = try Self.target(context)
            try await backend.deleteSnapshot(id, name: name)
            audit("deleted", id, name, context, bytes: nil)
            return Response(status: .noContent)
        }
    }

    /// The project and snapshot name of the path, the caller authorized for the project.
    static func target(_ context: APIContext) throws -> (String, String) {
        let id = try context.projectID()
        _ = try context.authorize(project: id)
        let name = try context.parameters.require("name")
        try check(name)
        return (id, name)
    }

    /// A bad name is refused here, before anything is forwarded or looked up.
    static func check(_ name: String) throws(APIError) {
        guard NamedSnapshot.isValid(name) else {
            throw APIError(
                .badRequest, "invalid_snapshot_name", "invalid snapshot name \"\(name)\": use \(NamedSnapshot.rule)")
        }
    }

    func audit(_ action: String, _ id: String, _ name: String, _ context: APIContext, bytes: Int64?) {
        var fields: [String: JSON] = [
            "project": .string(id), "name": .string(name), "action": .string(action),
            "who": .string(context.callerName),
        ]
        if let bytes { fields["bytes"] = .int(Int(bytes)) }
        state.audit?.append("snapshot", fields)
    }
}
