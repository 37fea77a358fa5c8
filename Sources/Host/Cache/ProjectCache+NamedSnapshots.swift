import Foundation
import Glibc
import Sandbox

// MARK: - Named snapshots (docs/CACHE.md, "Named snapshots")

extension ProjectCache {
    /// Packs the project's workspace (materializing it first) into a new, immutable named
    /// snapshot at `named/<id>/<name>.tar.zst` in the primary store.
    ///
    /// The archive is made by the write-back's ``Packer`` under the write-back's limits, so
    /// whatever it holds a restore accepts. The project is pinned while it is packed, so it
    /// cannot be evicted or replaced meanwhile; files a job or session writes during the
    /// pack may or may not be in it (the caller refuses while jobs run). A name in use is
    /// ``CacheError/snapshotExists(project:name:)``, whatever the archive would hold.
    public func createSnapshot(_ id: String, name: String) async throws(CacheError) -> NamedSnapshot {
        try Self.validate(id)
        guard NamedSnapshot.isValid(name) else { throw .invalidSnapshotName(name) }
        guard entries[id] != nil else { throw .unknownProject(id) }
        return try await inNamedQueue(id) { () async throws(CacheError) -> NamedSnapshot in
            try await self.runCreateSnapshot(id, name: name)
        }
    }

    private func runCreateSnapshot(_ id: String, name: String) async throws(CacheError) -> NamedSnapshot {
        try await refreshSnapshots(id)
        let key = NamedSnapshot.key(project: id, name: name)
        // The store is asked too: a blob under the name is never overwritten, known here or not.
        let stored = try await config.stores.primary.head(key)
        if named[id]?[name] != nil || stored != nil { throw .snapshotExists(project: id, name: name) }
        let workspace = try await acquire(id)
        defer { try? release(id) }
        let pack = layout.pack(id)
        defer { unlink(pack) }
        let limits = snapshotLimits(quota: entries[id].map { $0.record.volumeBytes ?? quota($0) } ?? nil)
        let maxArchive = config.maxDownloadBytes
        let (report, sha) = try await BlockingThread.run("corral-pack") {
            () throws(CacheError) -> (PackReport, String) in
            let (_, report) = try Packer.pack(workspace.path, to: pack, limits: limits, maxArchiveBytes: maxArchive)
            let fd = try sys("open(\(pack))") { Glibc.open(pack, O_RDONLY | O_CLOEXEC) }
            defer { close(fd) }
            return (report, try FileHash.sha256(fd: fd).1)
        }
        let info = try await config.stores.primary.put(key, from: pack)
        let snapshot = NamedSnapshot(
            name: name, project: id, createdAt: now(), bytes: info.size, files: report.files, sha256: sha)
        guard entries[id] != nil else {
            try? await config.stores.primary.delete(key)
            throw .unknownProject(id)
        }
        do throws(CacheError) {
            try await record(snapshot)
        } catch {
            // Not listed, so not kept: a blob nobody knows of would never be deleted.
            try? await config.stores.primary.delete(key)
            throw error
        }
        logger.info("named snapshot", metadata: ["project": "\(id)", "name": "\(name)", "bytes": "\(info.size)"])
        return snapshot
    }

    /// The project's named snapshots, oldest first.
    public func snapshots(_ id: String) async throws(CacheError) -> [NamedSnapshot] {
        try Self.validate(id)
        guard entries[id] != nil else { throw .unknownProject(id) }
        return try await inNamedQueue(id) { () async throws(CacheError) -> [NamedSnapshot] in
            try await self.refreshSnapshots(id)
            return await self.sortedSnapshots(id)
        }
    }

    /// One named snapshot.
    public func snapshot(_ id: String, name: String) async throws(CacheError) -> NamedSnapshot {
        guard NamedSnapshot.isValid(name) else { throw .invalidSnapshotName(name) }
        guard let found = try await snapshots(id).first(where: { $0.name == name }) else {
            throw .snapshotNotFound(project: id, name: name)
        }
        return found
    }

    /// Deletes a named snapshot: the archive first, then the catalog and the index row, so a
    /// failure leaves it listed (a retry finishes), never a blob nobody lists.
    public func deleteSnapshot(_ id: String, name: String) async throws(CacheError) {
        try Self.validate(id)
        guard NamedSnapshot.isValid(name) else { throw .invalidSnapshotName(name) }
        guard entries[id] != nil else { throw .unknownProject(id) }
        try await inNamedQueue(id) { () async throws(CacheError) in try await self.runDeleteSnapshot(id, name: name) }
        // Its layer, if forks were made of it, goes once no fork stands on it.
        await collectLayers()
    }

    private func runDeleteSnapshot(_ id: String, name: String) async throws(CacheError) {
        try await refreshSnapshots(id)
        guard named[id]?[name] != nil else { throw .snapshotNotFound(project: id, name: name) }
        try await config.stores.primary.delete(NamedSnapshot.key(project: id, name: name))
        try await forgetSnapshot(id, name: name)
        logger.info("named snapshot deleted", metadata: ["project": "\(id)", "name": "\(name)"])
    }

    /// Deletes every named snapshot of a project and its catalog (the project is being
    /// deleted).
    func removeSnapshots(_ id: String) async throws(CacheError) {
        try await inNamedQueue(id) { () async throws(CacheError) in try await self.runRemoveSnapshots(id) }
    }

    private func runRemoveSnapshots(_ id: String) async throws(CacheError) {
        try await refreshSnapshots(id)
        let primary = config.stores.primary
        for name in (named[id] ?? [:]).keys.sorted() {
            try await primary.delete(NamedSnapshot.key(project: id, name: name))
        }
        try await primary.delete(catalogKey(id))
        named[id] = nil
        do { try index.deleteSnapshots(project: id) } catch { throw .index(error.description) }
    }

    /// Archive bytes of a project's named snapshots.
    func namedBytes(_ id: String) -> Int64 { named[id]?.values.reduce(0) { $0 + $1.bytes } ?? 0 }

    /// Bytes of named snapshots that sit on this host's disk under the data directory (a
    /// ``LocalBlobStore`` primary store there): what the disk budget counts besides the
    /// workspaces. A remote or shared store is not this disk's to budget.
    public func localSnapshotBytes() -> Int64 {
        guard let local = config.stores.primary as? LocalBlobStore,
            local.directory.hasPrefix(layout.root + "/")
        else { return 0 }
        return named.values.reduce(0) { sum, byName in sum + byName.values.reduce(0) { $0 + $1.bytes } }
    }

    // MARK: - Restore

    /// Resets the project's workspace to a named snapshot exactly: content, modes, symlinks,
    /// hard links; files created since are gone and files deleted since come back.
    ///
    /// A cold project is materialized first. The archive is extracted under the snapshot
    /// limits into a staging tree on the workspace's own filesystem, then swapped in with
    /// the replacement's two renames while nothing holds the workspace
    /// (``CacheError/projectBusy(_:)`` otherwise, and nothing changes). The workspace is
    /// dirty afterwards, so the next write-back stores the restored tree; the project's
    /// source stays what it was.
    public func restoreSnapshot(_ id: String, name: String) async throws(CacheError) -> NamedSnapshot {
        try Self.validate(id)
        guard NamedSnapshot.isValid(name) else { throw .invalidSnapshotName(name) }
        guard entries[id] != nil else { throw .unknownProject(id) }
        return try await inNamedQueue(id) { () async throws(CacheError) -> NamedSnapshot in
            try await self.runRestore(id, name: name)
        }
    }

    private func runRestore(_ id: String, name: String) async throws(CacheError) -> NamedSnapshot {
        try await refreshSnapshots(id)
        guard let snapshot = named[id]?[name] else { throw .snapshotNotFound(project: id, name: name) }
        // An overlay workspace (a fork) is not swapped by renames: its tree goes (the
        // snapshot replaces every file anyway) and the project materializes as a whole tree.
        if let entry = entries[id], entry.record.ready, !entry.record.layers.isEmpty {
            guard entry.pins == 0 else {
                throw .projectBusy(
                    "project \(id) is in use (\(entry.pins) running job(s), live session(s) or file call(s)); it is restored only when nothing uses it; nothing was changed"
                )
            }
            try await evict(id, discard: true)
        }
        _ = try await materialize(id)
        while let changing = entries[id]?.changing { await changing.value }
        guard let record = entries[id]?.record, record.ready else {
            throw .busy("\(id) was evicted while the restore waited; send it again")
        }
        let volume = record.volumeBytes != nil ? layout.volume(id) : nil
        let staging = volume?.staging() ?? layout.staging(id)
        let download = layout.download(id)
        let limits = snapshotLimits(quota: record.volumeBytes ?? entries[id].flatMap { quota($0) })
        _ = try await config.stores.primary.get(snapshot.key, to: download, limit: config.maxDownloadBytes) { _ in }
        try await BlockingThread.run("corral-restore-extract") { () throws(CacheError) in
            defer { unlink(download) }
            do throws(CacheError) {
                let fd = try sys("open(\(download))") { Glibc.open(download, O_RDONLY | O_CLOEXEC) }
                let sha = try { () throws(CacheError) -> String in
                    defer { close(fd) }
                    return try FileHash.sha256(fd: fd).1
                }()
                guard sha == snapshot.sha256 else { throw .checksumMismatch(expected: snapshot.sha256, actual: sha) }
                try sys("mkdir(\(staging))") { mkdir(staging, 0o700) }
                _ = try Extractor.extract(archive: download, into: staging, limits: limits)
                try sys("chmod(\(staging))") { chmod(staging, 0o755) }
            } catch {
                try? SafeTree.remove(path: staging)
                if let bytes = record.volumeBytes, case .system(let e) = error, e.errno == ENOSPC {
                    throw .tooLarge(
                        "the snapshot does not fit beside the current workspace in its \(bytes)-byte cap (\(e.call): ENOSPC); evict the project first (DELETE /v1/projects/\(id)/workspace?discard=true) and restore again"
                    )
                }
                throw error
            }
        }
        // The check and the claim are one step of the actor: nothing starts using the old
        // tree between them, and a tree that changed meanwhile is not swapped blindly.
        guard let entry = entries[id], entry.record.ready, entry.record.materializedAt == record.materializedAt,
            entry.evicting == nil, entry.changing == nil
        else {
            await Self.discard(staging)
            throw .busy("\(id) changed while the snapshot was extracted; send it again")
        }
        guard entry.pins == 0 else {
            await Self.discard(staging)
            throw .projectBusy(
                "project \(id) is in use (\(entry.pins) running job(s), live session(s) or file call(s)); it is restored only when nothing uses it; nothing was changed"
            )
        }
        let work = Task {
            await self.swapIn(id, staging: staging, version: "named:\(snapshot.name):\(snapshot.sha256)")
        }
        entries[id]!.changing = Task { _ = await work.value }
        try await work.value.get()
        return snapshot
    }

    /// The two renames of a replacement, for a restored tree: the record keeps its source
    /// and write-back snapshot, and no manifest digest, so the workspace is dirty and the
    /// next write-back (or eviction) stores the restored tree.
    private func swapIn(_ id: String, staging: String, version: String) async -> Result<Void, CacheError> {
        defer { entries[id]?.changing = nil }
        let old: ProjectRecord
        let trash: String
        let summary: ManifestSummary?
        switch await swapWorkspace(id, staging: staging, doing: "restore") {
        case .success(let swapped): (old, trash, summary) = swapped
        case .failure(let error): return .failure(error)
        }
        var record = old
        record.sourceVersion = version
        record.materializedAt = now()
        record.lastUsed = max(record.lastUsed, now())
        record.manifestDigest = nil
        record.diskBytes = summary?.diskBytes ?? 0
        // Other files than setup prepared: it runs again before the next job.
        record.setup = nil
        entries[id]!.record = record
        entries[id]!.dirty = true
        entries[id]!.lastCheck = now()
        do throws(CacheError) { try persist(id) } catch { logger.error("index write failed: \(error)") }
        await Self.discard(trash)
        logger.info("restored the workspace", metadata: ["project": "\(id)", "version": "\(version)"])
        return .success(())
    }

    // MARK: - The catalog

    /// `named/<id>/catalog.json`: every named snapshot of the project, in the primary store
    /// beside the archives. Any host sharing the store (a cluster's next owner, this host
    /// after losing its index) lists the project's snapshots from it.
    func catalogKey(_ id: String) -> String { "named/\(id)/catalog.json" }

    /// Brings this host's list of the project's snapshots in line with the store's catalog:
    /// the catalog wins when there is one (another host may have added or deleted
    /// snapshots); without one the local list stands.
    func refreshSnapshots(_ id: String) async throws(CacheError) {
        let path = layout.download(id)
        defer { unlink(path) }
        guard try await config.stores.primary.head(catalogKey(id)) != nil else { return }
        let catalog: [NamedSnapshot]
        do throws(CacheError) {
            _ = try await config.stores.primary.get(catalogKey(id), to: path, limit: 64 << 20) { _ in }
            let bytes = try await BlockingThread.run("corral-catalog") { () throws(CacheError) -> [UInt8] in
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw .system(SystemError("read(\(path))", errno: EIO))
                }
                return Array(data)
            }
            do {
                catalog = try Wire.decode([NamedSnapshot].self, from: bytes).filter {
                    $0.project == id && NamedSnapshot.isValid($0.name)
                }
            } catch {
                throw .corruptArchive("the snapshot catalog \(catalogKey(id)) is not readable: \(error)")
            }
        } catch .notFound, .httpStatus(404, _) {
            return
        }
        let fresh = Dictionary(catalog.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let known = named[id] ?? [:]
        guard fresh != known else { return }
        do {
            for (name, _) in known where fresh[name] == nil { try index.deleteSnapshot(project: id, name: name) }
            for (name, snapshot) in fresh where known[name] != snapshot { try index.save(snapshot) }
        } catch {
            throw .index(error.description)
        }
        named[id] = fresh.isEmpty ? nil : fresh
    }

    /// Adds a snapshot to the catalog, then to the index.
    private func record(_ snapshot: NamedSnapshot) async throws(CacheError) {
        var byName = named[snapshot.project] ?? [:]
        byName[snapshot.name] = snapshot
        try await writeCatalog(snapshot.project, Array(byName.values))
        named[snapshot.project] = byName
        do { try index.save(snapshot) } catch { throw .index(error.description) }
    }

    /// Drops a snapshot from the catalog, then from the index.
    private func forgetSnapshot(_ id: String, name: String) async throws(CacheError) {
        var byName = named[id] ?? [:]
        byName[name] = nil
        // An empty catalog stays: it tells a host that still lists the snapshot that it is gone.
        try await writeCatalog(id, Array(byName.values))
        named[id] = byName.isEmpty ? nil : byName
        do { try index.deleteSnapshot(project: id, name: name) } catch { throw .index(error.description) }
    }

    private func writeCatalog(_ id: String, _ snapshots: [NamedSnapshot]) async throws(CacheError) {
        let sorted = snapshots.sorted { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) }
        let bytes: [UInt8]
        do { bytes = try Wire.encode(sorted) } catch { throw .index("cannot encode the snapshot catalog: \(error)") }
        let path = layout.download(id)
        try await Self.spool(bytes, to: path)
        defer { unlink(path) }
        _ = try await config.stores.primary.put(catalogKey(id), from: path)
    }

    func sortedSnapshots(_ id: String) -> [NamedSnapshot] {
        (named[id] ?? [:]).values.sorted { ($0.createdAt, $0.name) < ($1.createdAt, $1.name) }
    }

    /// Runs `body` after the project's previous named-snapshot operation: the catalog is
    /// read, changed and written by one at a time.
    func inNamedQueue<T: Sendable>(
        _ id: String, _ body: @escaping @Sendable () async throws(CacheError) -> T
    ) async throws(CacheError) -> T {
        let previous = namedQueue[id]
        let work = Task { () async -> Result<T, CacheError> in
            await previous?.value
            do throws(CacheError) { return .success(try await body()) } catch { return .failure(error) }
        }
        let done = Task { _ = await work.value }
        namedQueue[id] = done
        let result = await work.value
        if namedQueue[id] == done { namedQueue[id] = nil }
        return try result.get()
    }
}
