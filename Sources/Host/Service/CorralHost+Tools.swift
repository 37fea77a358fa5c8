import Dispatch
import Foundation
import Sandbox

extension CorralHost {
    /// Runs a file tool (or one of its aliases) on the project's workspace: the fast lane,
    /// which never waits behind commands. Files the tools create belong to the project's job
    /// user, as if the job had written them.
    public func fileTool(project id: String, name: String, arguments: [String: JSONValue], caller: String?)
        async throws -> ToolResult
    {
        let resolved = try Self.resolve(id, settings: settings, policies: policies)
        let workspace = try await cache.acquire(id)
        defer { Task { try? await cache.release(id) } }
        let sandbox = try await pool.sandbox(id, workspace: workspace, policyDigest: resolved.policy.digest) {
            [configuration] in
            Self.sandboxConfiguration(resolved, workspace: $0, configuration: configuration)
        }
        let tools = try toolsFor(id, workspace: workspace, sandbox: sandbox, user: resolved.policy.user)
        return await withCheckedContinuation { continuation in
            Self.toolQueue.async {
                continuation.resume(returning: tools.call(name: name, arguments: arguments, caller: caller))
            }
        }
    }

    /// Blocking file I/O (grep may take seconds) runs here, never on the async pool.
    static let toolQueue = DispatchQueue(label: "corral.tools", attributes: .concurrent)

    /// FileTools hold the workspace's root descriptor: one per materialization and sandbox.
    private func toolsFor(_ id: String, workspace: Workspace, sandbox: ProjectSandbox, user: Policy.User) throws
        -> FileTools
    {
        let key = "\(workspace.path)|\(workspace.materializedAt.timeIntervalSince1970)|\(sandbox.hostIDBase)"
        if let cached = toolsCache[id], cached.key == key { return cached.tools }
        let tools = try FileTools(
            root: workspace.path, owner: (uid: sandbox.hostIDBase + user.uid, gid: sandbox.hostIDBase + user.gid))
        toolsCache[id] = (key, tools)
        return tools
    }
}
