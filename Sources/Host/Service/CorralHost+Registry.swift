import Foundation

// MARK: - Cluster registration

extension CorralHost {
    /// Brings this host's copy of a project in line with the cluster's registry, before any
    /// call touches it. Without a registry (`corral serve`) it does nothing.
    ///
    /// A project registered elsewhere is registered here from the registry; a local copy
    /// from an older ownership epoch (another host owned the project since) is dropped
    /// without write-back first, so the project materializes from the latest snapshot in
    /// the shared store. Concurrent calls for one project share one adoption.
    func adopt(_ id: String) async throws {
        guard let registry = configuration.registry else { return }
        adoptedAt[id] = .now
        if let running = adopting[id] { return try await running.value }
        let task = Task { try await self.runAdoption(id, registry: registry) }
        adopting[id] = task
        defer { adopting[id] = nil }
        try await task.value
    }

    private func runAdoption(_ id: String, registry: any ProjectRegistry) async throws {
        // Not registered in the cluster: whatever is known here answers (usually "no such project").
        guard let claim = try await registry.load(id) else { return }
        if let local = settings[id], local.epoch == claim.epoch { return }
        try await dropLocalCopy(id)
        let registration = claim.registration
        let (_, effective) = try validatedSettings(
            policy: registration.policy, limits: registration.settings(epoch: claim.epoch).requested)
        try await cache.register(
            id, source: registration.source, sha256: registration.sha256, workspaceQuota: Self.quota(effective))
        try settings.set(id, registration.settings(epoch: claim.epoch))
        logger.info("adopted project from the cluster", metadata: ["project": "\(id)", "epoch": "\(claim.epoch)"])
    }

    /// Records a registration made on this host in the cluster's registry, and stamps the
    /// local settings with the epoch it belongs to.
    func publish(_ id: String) async throws {
        guard let registry = configuration.registry, let chosen = settings[id] else { return }
        let status = try await cache.registration(id)
        let epoch = try await registry.save(
            id, ProjectRegistration(source: status.source, sha256: status.sha256, settings: chosen))
        var stamped = chosen
        stamped.epoch = epoch
        try settings.set(id, stamped)
    }

    /// Drops the local copies of cluster projects this host no longer holds a lease for
    /// (`held`, as of a renewal sent at `asOf`): another host owns them now, or will, and
    /// a copy left here could be written back over its newer snapshot. Projects adopted
    /// after the renewal was sent are kept: the renewal could not know of them.
    public func forgetProjects(notIn held: Set<String>, asOf: ContinuousClock.Instant) async {
        guard configuration.registry != nil else { return }
        for id in settings.projects where !held.contains(id) && settings[id]?.epoch != nil {
            if let used = adoptedAt[id], used >= asOf { continue }
            if adopting[id] != nil { continue }
            do {
                try await dropLocalCopy(id)
                logger.info("dropped the local copy of a project another host owns", metadata: ["project": "\(id)"])
            } catch {
                logger.warning("cannot drop the local copy of \(id) yet: \(error)")
            }
        }
    }

    /// Stops the project's sandbox and forgets its workspace and settings here, leaving
    /// its snapshot in the store.
    private func dropLocalCopy(_ id: String) async throws {
        await pool.destroy(id)
        toolsCache[id] = nil
        try await cache.forget(id)
        try settings.set(id, nil)
        adoptedAt[id] = nil
    }
}
