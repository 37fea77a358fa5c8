import Foundation
import Glibc
import Sandbox

// MARK: - Deleting, replacing and patching a project (docs/CACHE.md, "The project lifecycle")

extension ProjectCache {
    /// Deletes a project for good: its workspace (and its volume) without write-back, its
    /// write-back snapshot, its named snapshots (`named/<id>/…`), the archive uploaded for it
    /// (`uploads/<id>/…`) and its index rows.
    /// A project still pinned (a running job, a live session) is refused with
    /// ``CacheError/busy(_:)``, and the blobs are deleted before the row, so a failure leaves
    /// the project registered, to be deleted again, never blobs nobody knows of.
    public func remove(_ id: String) async throws(CacheError) {
        guard entries[id] != nil else { throw .unknownProject(id) }
        try await evict(id, discard: true)
        guard let entry = entries[id] else { return }
        if entry.pins > 0 { throw .busy("\(id) has \(entry.pins) running job(s) or session(s)") }
        let primary = config.stores.primary
        try await deleteWriteBack(id, key: entry.record.snapshotKey)
        if let upload = layout.ownedUpload(entry.record.source, of: id) { try await primary.delete(upload) }
        try await removeSnapshots(id)
        // Whatever materialized while the blobs went goes too (its source is gone anyway).
        try await evict(id, discard: true)
        guard let current = entries[id] else { return }
        if current.pins > 0 { throw .busy("\(id) has \(current.pins) running job(s) or session(s)") }
        try drop(id)
        // Layers made of its named snapshots go with them, unless a fork still stands on one.
        await collectLayers()
        logger.info("removed", metadata: ["project": "\(id)"])
    }

    /// Swaps a materialized project's workspace for `staging`, a tree extracted on the
    /// workspace's filesystem, and registers `source` as the project's new source.
    ///
    /// Only while nothing holds the workspace (no pin: no running job, live session or file
    /// call), checked and claimed in one step of the actor; from then on new users wait
    /// until the swap is done. Two renames inside one filesystem (the workspace to the
    /// trash, the staging tree to the workspace) make the swap; the old tree is removed
    /// after. The old write-back snapshot is deleted: the new archive is the new base. A
    /// project evicted meanwhile is simply registered with the new source (cold).
    func replace(_ id: String, staging: String, source: String, sha256: String, workspaceQuota: Int64?)
        async throws(CacheError)
    {
        while let changing = entries[id]?.changing { await changing.value }
        let inVolume = staging.hasPrefix(layout.mounts + "/")
        guard let entry = entries[id], entry.record.ready, entry.evicting == nil, entry.materializing == nil,
            (entry.record.volumeBytes != nil) == inVolume
        else {
            await Self.discard(staging)
            try await register(id, source: source, sha256: sha256, workspaceQuota: workspaceQuota)
            return
        }
        guard entry.pins == 0 else {
            await Self.discard(staging)
            // The archive just stored is nobody's source: it goes, unless it is the current one.
            if entry.record.source != source { try? await config.stores.primary.delete(String(source.dropFirst(5))) }
            throw .projectBusy(
                "project \(id) is in use (\(entry.pins) running job(s), live session(s) or file call(s)); its files are replaced only when nothing uses them; nothing was changed"
            )
        }
        let work = Task {
            await self.runReplace(id, staging: staging, source: source, sha256: sha256, quota: workspaceQuota)
        }
        entries[id]!.changing = Task { _ = await work.value }
        try await work.value.get()
    }

    /// The two renames that put `staging` in the place of the project's workspace (the old
    /// tree to the trash, staging to the workspace, undone if the second fails), after any
    /// write-back in progress, and a scan of the new tree (nil if it cannot be scanned). The
    /// caller updates the record and discards the trash. On failure staging is discarded
    /// and the workspace is as it was. Used by a replacement and a restore. With
    /// `keepingHome`, the project's home (`.corral/home`) moves from the old tree into the
    /// new one, in place of any the new one brought: a replacement changes the files, not the
    /// agent's home; a restore brings back the snapshot's home with everything else.
    func swapWorkspace(_ id: String, staging: String, doing what: String, keepingHome: Bool = false) async
        -> Result<(old: ProjectRecord, trash: String, summary: ManifestSummary?), CacheError>
    {
        if let snapshotting = entries[id]?.snapshotting { _ = await snapshotting.value }
        let old = entries[id]!.record
        let workspace = workspacePath(old)
        let trash = old.volumeBytes != nil ? layout.volume(id).trash() : layout.trash(id)
        do throws(CacheError) {
            let summary = try await BlockingThread.run("corral-swap") { () throws(CacheError) -> ManifestSummary? in
                try sys("rename(\(workspace))") { rename(workspace, trash) }
                var carried = false
                do throws(CacheError) {
                    if keepingHome {
                        do {
                            carried = try ProjectHome.carry(from: trash, to: staging, discard: trash)
                        } catch {
                            throw .system(error as? SystemError ?? SystemError("carry home", errno: EIO))
                        }
                    }
                    try sys("rename(\(staging))") { rename(staging, workspace) }
                } catch {
                    if carried { _ = try? ProjectHome.carry(from: staging, to: trash, discard: staging) }
                    _ = rename(trash, workspace)
                    throw error
                }
                return try? Manifest.scan(workspace)
            }
            return .success((old, trash, summary))
        } catch {
            await Self.discard(staging)
            logger.error("\(what) kept the workspace", metadata: ["project": "\(id)", "error": "\(error)"])
            return .failure(error)
        }
    }

    private func runReplace(_ id: String, staging: String, source: String, sha256: String, quota: Int64?) async
        -> Result<Void, CacheError>
    {
        defer { entries[id]?.changing = nil }
        let old: ProjectRecord
        let trash: String
        let summary: ManifestSummary?
        switch await swapWorkspace(id, staging: staging, doing: "replacement", keepingHome: true) {
        case .success(let swapped): (old, trash, summary) = swapped
        case .failure(let error): return .failure(error)
        }
        var record = old
        record.source = source
        record.sha256 = sha256
        record.sourceVersion = "sha256:\(sha256)"
        record.materializedAt = now()
        record.lastUsed = max(record.lastUsed, now())
        record.manifestDigest = summary?.digest
        record.diskBytes = summary?.diskBytes ?? 0
        record.snapshotKey = nil
        record.snapshotVersion = nil
        record.snapshotAt = nil
        record.quotaBytes = quota ?? record.quotaBytes
        record.baseVersion = record.sourceVersion
        record.setup = nil
        entries[id]!.record = record
        // A tree that could not be scanned is never reported clean.
        entries[id]!.dirty = summary == nil
        entries[id]!.lastCheck = now()
        do throws(CacheError) { try persist(id) } catch { logger.error("index write failed: \(error)") }
        await Self.discard(trash)
        try? await deleteWriteBack(id, key: old.snapshotKey)
        if old.source != source, let upload = layout.ownedUpload(old.source, of: id) {
            try? await config.stores.primary.delete(upload)
        }
        logger.info("replaced the workspace", metadata: ["project": "\(id)", "version": "sha256:\(sha256)"])
        return .success(())
    }

    /// Writes the archive at `path` over the project's workspace, materializing it first;
    /// `dir/.wh.name` entries delete `dir/name` (see ``WorkspacePatch``).
    ///
    /// The archive is extracted under the upload rules into a staging tree on the
    /// workspace's filesystem and planned whole against the workspace before anything in it
    /// changes: a hostile entry or a conflict fails with nothing changed. Then each path is
    /// one rename; a failure then is ``CacheError/patchIncomplete(applied:failed:reason:)``
    /// naming what was applied. Jobs and file calls that start meanwhile wait for the patch.
    /// The workspace is dirty afterwards, so the write-back keeps the change.
    public func patch(_ id: String, archive path: String) async throws(CacheError) -> PatchSummary {
        _ = try await acquire(id)
        defer { try? unpin(id) }
        while let changing = entries[id]?.changing { await changing.value }
        guard let record = entries[id]?.record, record.ready else {
            throw .busy("\(id) was evicted while the patch waited; send it again")
        }
        let work = Task { await self.runPatch(record, archive: path) }
        entries[id]!.changing = Task { _ = await work.value }
        defer { entries[id]?.changing = nil }
        let result = await work.value
        switch result {
        case .success, .failure(.patchIncomplete): entries[id]?.dirty = true
        case .failure: break
        }
        return try result.get()
    }

    private func runPatch(_ record: ProjectRecord, archive: String) async -> Result<PatchSummary, CacheError> {
        let id = record.id
        let volume = record.volumeBytes != nil ? layout.volume(id) : nil
        let workspace = workspacePath(record)
        // Each path is one rename into the workspace, so staging and trash must be on its
        // filesystem: for an overlay (a fork) that is the merged tree itself, in hidden
        // directories that go when the patch is done.
        let hidden = record.layers.isEmpty ? nil : "\(workspace)/.corral-patch.\(UUID().uuidString)"
        let staging = hidden.map { $0 + ".staging" } ?? volume?.staging() ?? layout.staging(id)
        let trash = hidden.map { $0 + ".trash" } ?? volume?.trash() ?? layout.trash(id)
        let limits = extractionLimits(quota: record.volumeBytes ?? record.quotaBytes ?? config.workspaceQuotaBytes)
        let result = await BlockingThread.run("corral-patch") { () -> Result<PatchSummary, CacheError> in
            defer {
                try? SafeTree.remove(path: staging)
                try? SafeTree.remove(path: trash)
            }
            do throws(CacheError) {
                try sys("mkdir(\(staging))") { mkdir(staging, 0o700) }
                _ = try Extractor.extract(archive: archive, into: staging, limits: limits)
                return .success(try WorkspacePatch.apply(staging: staging, to: workspace, trash: trash, project: id))
            } catch {
                if let bytes = record.volumeBytes, case .system(let e) = error, e.errno == ENOSPC {
                    return .failure(
                        .tooLarge(
                            "the patch does not fit the project's \(bytes)-byte workspace cap (\(e.call): ENOSPC)"))
                }
                return .failure(error)
            }
        }
        switch result {
        case .success(let summary):
            logger.info(
                "patched the workspace",
                metadata: [
                    "project": "\(id)", "files": "\(summary.filesWritten)", "deleted": "\(summary.pathsDeleted)",
                ])
        case .failure(let error):
            logger.warning("patch failed", metadata: ["project": "\(id)", "error": "\(error)"])
        }
        return result
    }

    /// ``patch(_:archive:)`` for archive bytes already in memory.
    public func patch(_ id: String, bytes: [UInt8]) async throws(CacheError) -> PatchSummary {
        try Self.validate(id)
        guard entries[id] != nil else { throw .unknownProject(id) }
        let path = layout.download(id)
        try await Self.spool(bytes, to: path)
        defer { unlink(path) }
        return try await patch(id, archive: path)
    }

    /// Removes a tree of the cache's own (a staging or trash directory), off the async pool.
    static func discard(_ path: String) async {
        await BlockingThread.run("corral-remove") { () -> Void in try? SafeTree.remove(path: path) }
    }

    /// Writes `bytes` to a new file at `path`, off the async pool.
    static func spool(_ bytes: [UInt8], to path: String) async throws(CacheError) {
        try await BlockingThread.run("corral-upload-spool") { () throws(CacheError) in
            let fd = try sys("open(\(path))") {
                Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            }
            defer { close(fd) }
            var done = 0
            do throws(CacheError) {
                while done < bytes.count {
                    done += try sys("write(\(path))") {
                        bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
                    }
                }
            } catch {
                // A full disk leaves no partial file behind for the caller to find.
                unlink(path)
                throw error
            }
        }
    }
}
