import Foundation
import Host

extension ClusterHost {
    /// Brings this host's copy of a project in line with the cluster's registry. Concurrent
    /// calls for one project share one adoption.
    func adopt(_ id: String) async throws {
        if deleting.contains(id) { throw HostError.projectNotFound(id) }
        adoptedAt[id] = .now
        if let running = adopting[id] { return try await running.value }
        let task = Task { try await self.runAdoption(id) }
        adopting[id] = task
        defer { adopting[id] = nil }
        try await task.value
    }

    private func runAdoption(_ id: String) async throws {
        // Not registered in the cluster: whatever is known here answers (usually "no such project").
        guard let claim = try await registry.load(id) else { return }
        if await host.hasLocalCopy(id, epoch: claim.epoch) { return }
        try await dropLocalCopy(id)
        let registration = claim.registration
        try await host.install(
            id, source: registration.source, sha256: registration.sha256, policy: registration.policy,
            limits: registration.limits, setup: registration.setup, epoch: claim.epoch)
        logger.info("adopted project from the cluster", metadata: ["project": "\(id)", "epoch": "\(claim.epoch)"])
    }

    /// Records a registration made on this host in the cluster's registry, and stamps the
    /// local settings with the epoch it belongs to.
    func publish(_ id: String) async throws {
        guard let local = try await host.registration(of: id) else { return }
        let epoch = try await registry.save(
            id,
            ProjectRegistration(
                source: local.source, sha256: local.sha256, policy: local.policy, limits: local.limits,
                setup: local.setup))
        try await host.stamp(id, epoch: epoch)
    }

    /// Drops the local copies of cluster projects this host no longer holds a lease for
    /// (`held`, as of a renewal sent at `asOf`): another host owns them now, or will, and
    /// a copy left here could be written back over its newer snapshot. Projects adopted
    /// after the renewal was sent are kept: the renewal could not know of them.
    public func forgetProjects(notIn held: Set<String>, asOf: ContinuousClock.Instant) async {
        for id in await host.clusterProjectIDs() where !held.contains(id) {
            if let used = adoptedAt[id], used >= asOf { continue }
            if adopting[id] != nil || deleting.contains(id) { continue }
            do {
                try await dropLocalCopy(id)
                logger.info("dropped the local copy of a project another host owns", metadata: ["project": "\(id)"])
            } catch {
                logger.warning("cannot drop the local copy of \(id) yet: \(error)")
            }
        }
    }

    private func dropLocalCopy(_ id: String) async throws {
        try await host.dropLocalCopy(id)
        adoptedAt[id] = nil
    }

    // MARK: - The worker's hooks

    /// What the worker calls on this host: adopt a project before its job is queued, drop
    /// the copies of projects no longer held after each renewal.
    nonisolated var hooks: ClusterWorker.Hooks {
        ClusterWorker.Hooks(
            prepare: { project in
                do {
                    try await self.adopt(project)
                } catch {
                    // The job still runs and fails with the reason (e.g. no such project).
                    self.logger.warning("cannot adopt \(project) from the registry: \(error)")
                }
            },
            leasesRenewed: { held, asOf in await self.forgetProjects(notIn: held, asOf: asOf) })
    }

    /// Before a lease is given up on a graceful shutdown: the workspace goes back to the
    /// store. Only a dirty workspace is uploaded; a project never materialized here has
    /// nothing to write.
    nonisolated func writeBack(_ project: String) async {
        do {
            _ = try await host.cache.snapshot(project)
        } catch CacheError.unknownProject {
        } catch {
            logger.error("write-back of \(project) before hand-over failed: \(error)")
        }
    }
}
