import Foundation

// MARK: - Ownership by another module

/// What a decorator of the host needs to keep its projects in line with a registry of its
/// own (the cluster's `ClusterHost`): the host never reads a registry itself, and its
/// callers outside this package never see these.
extension CorralHost {
    /// Refuses a policy or limits the host would refuse on register, without registering.
    package func checkSettings(policy: String?, limits: RequestedLimits) throws {
        _ = try validatedSettings(policy: policy, limits: limits)
    }

    /// Whether the project is registered here with settings of ownership epoch `epoch`.
    package func hasLocalCopy(_ id: String, epoch: Int) -> Bool { settings[id]?.epoch == epoch }

    /// Registers a project as another host registered it, stamped with `epoch`.
    package func install(
        _ id: String, source: String, sha256: String?, policy: String, limits: RequestedLimits, setup: [String]?,
        epoch: Int
    ) async throws {
        var (chosen, effective) = try validatedSettings(policy: policy, limits: limits)
        try await cache.register(id, source: source, sha256: sha256, workspaceQuota: Self.quota(effective))
        chosen.setup = setup?.isEmpty == true ? nil : setup
        chosen.epoch = epoch
        try settings.set(id, chosen)
    }

    /// The project as registered here: its source and checksum, its policy, the limits it
    /// asked for and its setup commands; nil when it is not registered.
    package func registration(of id: String) async throws -> (
        source: String, sha256: String?, policy: String, limits: RequestedLimits, setup: [String]?
    )? {
        guard let chosen = settings[id] else { return nil }
        let status = try await cache.registration(id)
        return (status.source, status.sha256, chosen.policy, chosen.requested, chosen.setup)
    }

    /// Records the ownership epoch the local settings of a project belong to.
    package func stamp(_ id: String, epoch: Int) throws {
        guard var chosen = settings[id] else { return }
        chosen.epoch = epoch
        try settings.set(id, chosen)
    }

    /// Projects registered here with an ownership epoch (taken from or given to a registry).
    package func clusterProjectIDs() -> [String] { settings.projects.filter { settings[$0]?.epoch != nil } }

    /// Every project the cache knows.
    package func projectIDs() async -> [String] { await cache.list().map(\.id) }

    /// Ends the project's sessions (reported lost from then on), stops its sandbox and
    /// forgets its workspace and settings here, leaving its snapshot in the store. The
    /// sessions end first: each pins the workspace until its process is gone.
    package func dropLocalCopy(_ id: String) async throws {
        await sessions.depart(project: id)
        await pool.destroy(id)
        await setup.settle(id)
        toolsCache[id] = nil
        try await cache.forget(id)
        try settings.set(id, nil)
    }
}
