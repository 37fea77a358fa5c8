import Foundation
import Sandbox

// MARK: - Deleting a project, replacing and patching its files

extension CorralHost {
    /// Deletes a project for good: its running and queued jobs are cancelled (they end
    /// `cancelled`), its sessions end, its sandbox is destroyed, and its registration,
    /// index row, workspace, volume, write-back snapshot and uploaded archive are removed.
    /// Nothing is written back. The id may be registered again afterwards, as a new project.
    ///
    /// From the start the project is hidden (``ProjectSettingsStore/close(_:)``), so no new
    /// job, session or file call can begin on it; if a step fails it is visible again and
    /// a retry finishes the deletion.
    public func delete(_ id: String) async throws {
        guard settings[id] != nil, settings.close(id) else { throw HostError.projectNotFound(id) }
        defer { settings.reopen(id) }
        try await endJobs(id)
        await sessions.endAll(project: id, reason: "the project was deleted")
        await pool.destroy(id)
        await setup.settle(id)
        // The file tools hold a descriptor of the workspace root (it would keep a volume busy).
        toolsCache[id] = nil
        // A session's process gives its pin back on a task of its own, just after it ends.
        for _ in 0..<250 {
            guard let pins = try? await cache.status(id).pins, pins > 0 else { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        do {
            try await cache.remove(id)
        } catch CacheError.unknownProject {
            // Registered here but never known to the cache: only the settings are left.
        }
        try settings.set(id, nil)
        logger.info("deleted", metadata: ["project": "\(id)"])
    }

    /// Cancels every queued and running job of the project with SIGKILL (the project is
    /// going, so nothing a job would save matters) and waits for each to end. Jobs submitted
    /// just before the project closed are caught by the next pass.
    func endJobs(_ id: String) async throws {
        for _ in 0..<5 {
            let active = try await jobs.list(project: id, limit: 1000).filter { !$0.state.isFinal }
            if active.isEmpty { return }
            await withTaskGroup(of: Void.self) { group in
                for record in active {
                    group.addTask { _ = try? await self.jobs.cancel(record.id, signal: .kill) }
                }
            }
        }
    }

    /// Refuses with ``CacheError/projectBusy(_:)`` while jobs of the project run, and with
    /// `sessionsToo` while its sessions live, naming how many and how to end them.
    func refuseWhileBusy(_ id: String, sessionsToo: Bool, doing what: String) async throws {
        let running = try await jobs.list(project: id, limit: 1000).filter { $0.state == .running }
        let live = sessionsToo ? await sessions.list(id, caller: nil).count : 0
        guard running.count + live > 0 else { return }
        var parts: [String] = []
        var how: [String] = []
        if !running.isEmpty {
            let ids = running.prefix(5).map(\.id).joined(separator: ", ")
            parts.append("\(running.count) running job\(running.count == 1 ? "" : "s") (\(ids))")
            how.append("wait for the jobs or cancel them (POST /v1/projects/\(id)/jobs/{job}/cancel)")
        }
        if live > 0 {
            parts.append("\(live) live session\(live == 1 ? "" : "s")")
            how.append("delete the sessions (DELETE /v1/projects/\(id)/sessions/{session})")
        }
        throw CacheError.projectBusy(
            "project \(id) has \(parts.joined(separator: " and ")); \(what) only when none run: \(how.joined(separator: ", and ")), then send it again; nothing was changed"
        )
    }

    /// Writes the archive over the project's workspace (materializing it first): its
    /// files replace those at the same paths, and `dir/.wh.name` entries delete `dir/name`.
    /// Refused while jobs of the project run; sessions may live and see the change at once
    /// (the sandbox mounts the same directory).
    public func patch(_ id: String, archive: [UInt8]) async throws -> PatchSummary {
        let resolved = try Self.resolve(id, settings: settings, policies: policies)
        try await refuseWhileBusy(id, sessionsToo: false, doing: "its files are patched")
        try await cache.setWorkspaceQuota(id, bytes: Self.quota(resolved.limits))
        return try await cache.patch(id, bytes: archive)
    }
}

// MARK: - Named snapshots (docs/CACHE.md, "Named snapshots")

extension CorralHost {
    /// Packs the project's workspace (materializing it first) into a new, immutable named
    /// snapshot. Refused while jobs of the project run, so the archive is one consistent
    /// tree; sessions may live, and what they write during the pack may or may not be in it.
    public func createSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        let resolved = try Self.resolve(id, settings: settings, policies: policies)
        guard NamedSnapshot.isValid(name) else { throw CacheError.invalidSnapshotName(name) }
        try await refuseWhileBusy(id, sessionsToo: false, doing: "a snapshot is taken")
        try await cache.setWorkspaceQuota(id, bytes: Self.quota(resolved.limits))
        return try await cache.createSnapshot(id, name: name)
    }

    /// The project's named snapshots, oldest first.
    public func snapshots(_ id: String) async throws -> [NamedSnapshot] {
        guard settings[id] != nil else { throw HostError.projectNotFound(id) }
        return try await cache.snapshots(id)
    }

    /// One named snapshot of the project.
    public func namedSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        guard settings[id] != nil else { throw HostError.projectNotFound(id) }
        return try await cache.snapshot(id, name: name)
    }

    /// Resets the workspace to the snapshot: the tree is swapped like a replacement's, only
    /// while no job runs and no session lives (``CacheError/projectBusy(_:)`` otherwise, and
    /// nothing changes), and the sandbox over the old tree is destroyed.
    public func restoreSnapshot(_ id: String, name: String) async throws -> NamedSnapshot {
        let resolved = try Self.resolve(id, settings: settings, policies: policies)
        guard NamedSnapshot.isValid(name) else { throw CacheError.invalidSnapshotName(name) }
        try await refuseWhileBusy(id, sessionsToo: true, doing: "it is restored")
        try await cache.setWorkspaceQuota(id, bytes: Self.quota(resolved.limits))
        // The file tools hold a descriptor of the old root; they are made again over the new.
        toolsCache[id] = nil
        let snapshot = try await cache.restoreSnapshot(id, name: name)
        if let workspace = try? await cache.currentWorkspace(id) {
            await pool.destroy(id, unlessOver: workspace)
        } else {
            await pool.destroy(id)
        }
        toolsCache[id] = nil
        return snapshot
    }

    /// Deletes a named snapshot: its archive and its record.
    public func deleteSnapshot(_ id: String, name: String) async throws {
        guard settings[id] != nil else { throw HostError.projectNotFound(id) }
        try await cache.deleteSnapshot(id, name: name)
    }
}

// MARK: - Forks (docs/ENVIRONMENTS.md, "Forks")

extension CorralHost {
    /// Makes `id` a new project whose workspace starts as a copy-on-write view of `source`'s
    /// named snapshot, or without `snapshot` of its current workspace. The fork gets its
    /// own settings record: `policy` and `limits`, or where nil the source's.
    ///
    /// Forking the current workspace freezes the source's tree into a read-only layer, and
    /// the source's sandbox binds the old tree: refused with ``CacheError/projectBusy(_:)``
    /// while its jobs run or sessions live, and its idle sandbox is destroyed (the next job
    /// makes a new one over the overlay).
    public func fork(
        _ source: String, into id: String, snapshot: String? = nil, policy: String? = nil,
        limits: RequestedLimits? = nil
    ) async throws -> ProjectInfo {
        guard let from = settings[source] else { throw HostError.projectNotFound(source) }
        try refuseWhileClosing(id)
        if settings[id] != nil || settings.projects.contains(id) { throw CacheError.projectExists(id) }
        if let snapshot, !NamedSnapshot.isValid(snapshot) { throw CacheError.invalidSnapshotName(snapshot) }
        let (chosen, effective) = try validatedSettings(
            policy: policy ?? from.policy, limits: limits ?? from.requested)
        if let snapshot {
            try await cache.fork(source, snapshot: snapshot, into: id, workspaceQuota: Self.quota(effective))
        } else {
            let resolved = try Self.resolve(source, settings: settings, policies: policies)
            try await refuseWhileBusy(source, sessionsToo: true, doing: "it is forked")
            try await cache.setWorkspaceQuota(source, bytes: Self.quota(resolved.limits))
            // The file tools hold a descriptor of the old root, the sandbox a mount of it.
            toolsCache[source] = nil
            await pool.destroy(source)
            try await cache.fork(source, into: id, workspaceQuota: Self.quota(effective))
            // A sandbox made over the frozen tree meanwhile (a job that started and ended)
            // goes too; one over the new overlay stays.
            if let workspace = try? await cache.currentWorkspace(source) {
                await pool.destroy(source, unlessOver: workspace)
            }
            toolsCache[source] = nil
        }
        do {
            try settings.set(id, chosen)
        } catch {
            try? await cache.remove(id)
            throw error
        }
        logIfLastGood(id, policy: chosen.policy)
        logger.info("forked", metadata: ["project": "\(id)", "from": "\(source)", "snapshot": "\(snapshot ?? "")"])
        return try await project(id)
    }
}
