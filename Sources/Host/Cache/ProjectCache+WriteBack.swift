import Foundation
import Glibc
import Sandbox

// MARK: - Write-back, eviction and the sweep

extension ProjectCache {
    /// Whether the workspace changed since it was materialized or last written back
    /// (a fresh manifest scan compared with the stored digest). Cold projects are clean.
    public func isDirty(_ id: String) async throws(CacheError) -> Bool {
        guard let entry = entries[id] else { throw .unknownProject(id) }
        guard entry.record.ready else { return false }
        let path = workspacePath(entry.record)
        let summary: ManifestSummary
        do throws(CacheError) {
            summary = try await BlockingThread.run("corral-scan") { () throws(CacheError) in try Manifest.scan(path) }
        } catch {
            // Unknown is not clean: a workspace that cannot be checked reports dirty.
            if entries[id]?.record.ready == true { entries[id]!.dirty = true }
            throw error
        }
        guard entries[id]?.record.ready == true else { return false }
        let dirty = summary.digest != entries[id]!.record.manifestDigest
        entries[id]!.dirty = dirty
        entries[id]!.record.diskBytes = summary.diskBytes
        return dirty
    }

    /// ``status(_:)`` with `dirty` as the workspace is now: a ready project used since it
    /// was last scanned (a job, a file write, a session run), or in use now, is scanned
    /// again (metadata only, as ``isDirty(_:)``), so an edit shows at once rather than at
    /// the next sweep, and an idle project costs nothing.
    public func currentStatus(_ id: String) async throws(CacheError) -> ProjectStatus {
        guard let entry = entries[id] else { throw .unknownProject(id) }
        let scanned = [entry.lastScan, entry.lastCheck].compactMap { $0 }.max()
        if entry.record.ready, entry.pins > 0 || scanned.map({ entry.record.lastUsed >= $0 }) ?? true {
            let started = now()
            if (try? await isDirty(id)) != nil { entries[id]?.lastScan = started }
        }
        return try status(id)
    }

    /// Writes the workspace back to the primary store if it changed (or always, with
    /// `force`), as `snapshots/<id>.tar.zst`. Returns nil when there was nothing to write.
    ///
    /// Single flight per project. Jobs may keep running meanwhile: the snapshot is then a
    /// point-in-time-per-file copy, and any file changed during packing keeps the
    /// workspace dirty for the next write-back.
    @discardableResult
    public func snapshot(_ id: String, force: Bool = false) async throws(CacheError) -> SnapshotResult? {
        // A tree being swapped or patched is written back once that is done.
        if let changing = entries[id]?.changing { await changing.value }
        guard let entry = entries[id] else { throw .unknownProject(id) }
        if let running = entry.snapshotting { return try await running.value.get() }
        let task = Task { await self.runSnapshot(id, force: force) }
        entries[id]!.snapshotting = task
        return try await task.value.get()
    }

    private func runSnapshot(_ id: String, force: Bool) async -> Result<SnapshotResult?, CacheError> {
        defer { entries[id]?.snapshotting = nil }
        guard entries[id]?.record.ready == true else { return .success(nil) }
        do throws(CacheError) {
            if !force, try await !isDirty(id) {
                entries[id]?.lastCheck = now()
                return .success(nil)
            }
            return .success(try await writeBack(id, from: workspacePath(entries[id]!.record)))
        } catch {
            logger.warning("write-back failed", metadata: ["project": "\(id)", "error": "\(error)"])
            // A forced write-back skipped the check: what `dirty` says must be true now.
            if force { _ = try? await isDirty(id) }
            return .failure(error)
        }
    }

    /// Packs the tree at `path` and uploads it as the project's snapshot.
    ///
    /// Packed under the limits the next materialization restores it under (the project's
    /// cap as it will be then, and the download limit), so a snapshot that would not come
    /// back fails here, as ``CacheError/tooLarge(_:)`` or ``CacheError/unsafeEntry(path:reason:)``,
    /// and the workspace stays, dirty, instead.
    func writeBack(_ id: String, from path: String) async throws(CacheError) -> SnapshotResult {
        let pack = layout.pack(id)
        defer { unlink(pack) }
        // The setup as it is when packing starts is what the sidecar says of this tree; one
        // that ends meanwhile is stored by the next write-back.
        let (baseVersion, setup) = (entries[id]!.record.baseVersion, entries[id]!.record.setup)
        let limits = snapshotLimits(quota: quota(entries[id]!))
        let maxArchive = config.maxDownloadBytes
        let (summary, report) = try await BlockingThread.run("corral-pack") {
            () throws(CacheError) -> (ManifestSummary, PackReport) in
            try Packer.pack(path, to: pack, limits: limits, maxArchiveBytes: maxArchive)
        }
        let key = layout.snapshotKey(id)
        // The index learns what the store is about to hold before the put: a host killed
        // between the store's rename and the index's update is settled on restart.
        let packed = try await BlockingThread.run("corral-pack-hash") { () throws(CacheError) -> String in
            try Self.version(ofFile: pack)
        }
        let keptWhilePacking = entries[id]!.record.setup == setup
        entries[id]!.record.pendingSnapshot = PendingSnapshot(
            version: packed, digest: keptWhilePacking ? summary.digest : nil, diskBytes: summary.diskBytes)
        try persist(id)
        let info: BlobInfo
        do {
            info = try await config.stores.primary.put(key, from: pack)
        } catch {
            // Nothing was renamed into place (or the store refused it whole): the old
            // snapshot stands, and the index says so again.
            if entries[id] != nil {
                entries[id]!.record.pendingSnapshot = nil
                try? persist(id)
            }
            throw error
        }
        guard entries[id] != nil else { throw .unknownProject(id) }
        entries[id]!.record.pendingSnapshot = nil
        entries[id]!.record.snapshotKey = key
        entries[id]!.record.snapshotVersion = info.version
        entries[id]!.record.snapshotAt = now()
        let setupKept = entries[id]!.record.setup == setup
        entries[id]!.record.manifestDigest = setupKept ? summary.digest : nil
        entries[id]!.record.diskBytes = summary.diskBytes
        entries[id]!.dirty = !setupKept
        entries[id]!.lastCheck = now()
        try persist(id)
        // Without a setup there is nothing to say: a sidecar left by an older write-back names
        // another snapshot, so it is ignored, and a project without setup costs no more puts.
        if setup != nil {
            await writeSetupSidecar(id, snapshotVersion: info.version, baseVersion: baseVersion, setup: setup)
        }
        logger.info("written back", metadata: ["project": "\(id)", "bytes": "\(info.size)"])
        return SnapshotResult(
            key: key, version: info.version, bytes: info.size, files: report.files, skipped: report.skipped)
    }

    /// Removes the workspace, writing it back first if it changed (unless `discard`).
    ///
    /// The workspace is first renamed out of the way (one atomic step, after which no path
    /// leads into it), then compared with its last clean manifest and uploaded if needed.
    /// If that upload fails the rename is undone and the error thrown: nothing is lost.
    /// A pinned project is never evicted (``CacheError/busy(_:)``). A capped workspace's
    /// filesystem is then unmounted, its loop device detached and its image deleted; if it
    /// is still in use (a file open on the host, or a sandbox still mounting it) the
    /// eviction fails with ``CacheError/busy(_:)`` and the workspace stays as it was.
    public func evict(_ id: String, discard: Bool = false) async throws(CacheError) {
        if let changing = entries[id]?.changing { await changing.value }
        guard let entry = entries[id] else { throw .unknownProject(id) }
        if let evicting = entry.evicting { return try await evicting.value.get() }
        if let materializing = entry.materializing { _ = await materializing.value }
        if let snapshotting = entries[id]?.snapshotting { _ = await snapshotting.value }
        guard let current = entries[id], current.record.ready, current.evicting == nil else { return }
        guard current.pins == 0 else { throw .busy("\(id) has \(current.pins) running job(s)") }
        let task = Task { await self.runEvict(id, discard: discard) }
        entries[id]!.evicting = task
        try await task.value.get()
    }

    private func runEvict(_ id: String, discard: Bool) async -> Result<Void, CacheError> {
        defer { entries[id]?.evicting = nil }
        if !entries[id]!.record.layers.isEmpty { return await runEvictLayered(id, discard: discard) }
        let record = entries[id]!.record
        let volume = record.volumeBytes != nil ? layout.volume(id) : nil
        let workspace = workspacePath(record)
        // Inside the volume, so the rename stays within one filesystem.
        let trash = volume?.trash() ?? layout.trash(id)
        var moved = true
        if rename(workspace, trash) != 0 {
            // Already gone (removed behind the cache's back): nothing left to write back.
            guard errno == ENOENT else { return .failure(.system(SystemError("rename(\(workspace))", errno: errno))) }
            moved = false
        }
        if !discard && moved {
            do throws(CacheError) {
                let summary = try await BlockingThread.run("corral-scan") { () throws(CacheError) in
                    try Manifest.scan(trash)
                }
                if summary.digest != entries[id]?.record.manifestDigest {
                    _ = try await writeBack(id, from: trash)
                }
            } catch {
                _ = rename(trash, workspace)
                entries[id]?.dirty = true
                logger.error("eviction kept the workspace", metadata: ["project": "\(id)", "error": "\(error)"])
                return .failure(error)
            }
        }
        if let volume {
            do throws(CacheError) {
                try await BlockingThread.run("corral-unmount") { () throws(CacheError) in try volume.unmount() }
            } catch {
                if moved { _ = rename(trash, workspace) }
                logger.error("eviction kept the workspace", metadata: ["project": "\(id)", "error": "\(error)"])
                return .failure(error)
            }
        }
        entries[id]!.record.ready = false
        entries[id]!.record.diskBytes = 0
        entries[id]!.record.volumeBytes = nil
        entries[id]!.dirty = nil
        do throws(CacheError) { try persist(id) } catch { logger.error("index write failed: \(error)") }
        let removal = await BlockingThread.run("corral-remove") { () -> CacheError? in
            do throws(CacheError) {
                // Unmounted already: this deletes the image and the empty mount point.
                if let volume { try volume.remove() } else { try SafeTree.remove(path: trash) }
                return nil
            } catch {
                return error
            }
        }
        if let removal {
            logger.error("evicted workspace not removed", metadata: ["project": "\(id)", "error": "\(removal)"])
        }
        logger.info("evicted", metadata: ["project": "\(id)", "discard": "\(discard)"])
        return .success(())
    }

    /// Forgets this host's copy of a project: evicts it without write-back and drops it
    /// from the index, leaving its snapshot in the store. A cluster worker does this when
    /// another host owned the project since this copy was made: the store's snapshot is
    /// then newer than anything here, and must not be overwritten by a stale write-back.
    public func forget(_ id: String) async throws(CacheError) {
        guard entries[id] != nil else { return }
        try await evict(id, discard: true)
        if let pins = entries[id]?.pins, pins > 0 { throw .busy("\(id) has \(pins) running job(s)") }
        try drop(id)
    }

    func drop(_ id: String) throws(CacheError) {
        entries[id] = nil
        // The index rows go; the archives stay in the store, listed in its catalog.
        named[id] = nil
        do { try index.delete(id) } catch { throw .index(error.description) }
    }

    /// One maintenance pass: periodic write-back of dirty workspaces, eviction of expired
    /// ones, then least-recently-used eviction until the disk budget holds. Pinned projects
    /// are written back but never evicted. Failures are reported and the workspace kept.
    @discardableResult
    public func sweep(now: Date? = nil) async -> SweepReport {
        let now = now ?? self.now()
        var report = SweepReport()
        if let interval = config.snapshotInterval?.timeInterval {
            for id in entries.keys.sorted() {
                guard let e = entries[id], e.record.ready,
                    (e.lastCheck ?? .distantPast).addingTimeInterval(interval) <= now
                else { continue }
                do throws(CacheError) {
                    if try await snapshot(id) != nil { report.snapshotted.append(id) }
                    entries[id]?.lastCheck = now
                } catch { report.failed[id] = error }
            }
        }
        let ttl = config.ttl.timeInterval
        for id in entries.keys.sorted() {
            guard let e = entries[id], e.record.ready, e.pins == 0, e.record.lastUsed.addingTimeInterval(ttl) <= now
            else { continue }
            do throws(CacheError) {
                try await evict(id)
                report.expired.append(id)
            } catch { report.failed[id] = error }
        }
        if let budget = config.diskBudget {
            // Named snapshots on this disk are never evicted: they leave less room for workspaces.
            let stored = localSnapshotBytes()
            while true {
                let ready = entries.values.filter { $0.record.ready }
                guard ready.reduce(stored, { $0 + $1.record.diskBytes }) > budget,
                    let victim = ready.filter({
                        $0.pins == 0 && report.failed[$0.record.id] == nil && !report.overBudget.contains($0.record.id)
                    })
                    .min(by: { ($0.record.lastUsed, $0.record.id) < ($1.record.lastUsed, $1.record.id) })
                else { break }
                let id = victim.record.id
                do throws(CacheError) {
                    try await evict(id)
                    report.overBudget.append(id)
                } catch { report.failed[id] = error }
            }
        }
        flushLastUsed()
        return report
    }

    /// Persists `last_used` of projects touched since the last write, in one transaction.
    func flushLastUsed() {
        let changed = entries.values.filter { $0.record.lastUsed != $0.persistedUse }.map(\.record)
        guard !changed.isEmpty else { return }
        do {
            try index.save(changed)
            for r in changed { entries[r.id]?.persistedUse = r.lastUsed }
        } catch {
            logger.error("index write failed: \(error)")
        }
    }

    /// Runs ``sweep(now:)`` every `interval` until the calling task is cancelled.
    public func runMaintenance(every interval: Duration = .seconds(60)) async {
        while !Task.isCancelled {
            do { try await Task.sleep(for: interval) } catch { return }
            let report = await sweep()
            for (id, error) in report.failed {
                logger.error("maintenance", metadata: ["project": "\(id)", "error": "\(error)"])
            }
        }
    }
}

extension ProjectCache {
    /// ``BlobInfo/version`` of a file: the SHA-256 of its bytes, as a store's put reports it.
    nonisolated static func version(ofFile path: String) throws(CacheError) -> String {
        let fd = try sys("open(\(path))") { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var hasher = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try sys("read(\(path))") { read(fd, buffer.baseAddress, buffer.count) }
            if n == 0 { break }
            hasher.update(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return BlobInfo(size: 0, sha256: hasher.finalize().hexString).version
    }

    /// Settles write-backs a killed host left between the store's put and the index's update
    /// (``ProjectRecord/pendingSnapshot``): the store's object is read and hashed; if it is
    /// the packed archive, the index takes its version, digest and size, else the previous
    /// snapshot stands. Either way the index and the store agree again. Rare (only after a
    /// crash in that window), so reading the object back costs nothing in normal starts.
    func settlePendingSnapshots() async {
        for id in entries.keys.sorted() {
            guard let pending = entries[id]?.record.pendingSnapshot else { continue }
            let key = layout.snapshotKey(id)
            let copy = layout.pack(id)
            defer { unlink(copy) }
            let stored = try? await config.stores.primary.get(key, to: copy, limit: nil, progress: nil)
            let landed = stored.map { $0.sha256 != nil ? $0.version : (try? Self.version(ofFile: copy)) } ?? nil
            if landed == pending.version {
                entries[id]!.record.snapshotKey = key
                entries[id]!.record.snapshotVersion = pending.version
                entries[id]!.record.snapshotAt = now()
                entries[id]!.record.manifestDigest = pending.digest
                entries[id]!.record.diskBytes = pending.diskBytes
            }
            entries[id]!.record.pendingSnapshot = nil
            logger.warning(
                "settled a write-back the host was stopped in",
                metadata: ["project": "\(id)", "stored": "\(landed == pending.version ? "new" : "previous")"])
            try? persist(id)
        }
    }
}
