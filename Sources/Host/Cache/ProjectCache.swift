import Foundation
import Glibc
import Logging
import Sandbox

/// The project cache: registers projects, materializes them once (single flight), keeps
/// them warm for a sliding TTL, and writes agents' changes back before anything is lost.
///
/// The job system uses ``acquire(_:progress:)`` / ``release(_:)`` around each job (a pinned
/// project is never evicted) and ``touch(_:)`` on every call; the API maps the rest 1:1 to
/// the `/v1/projects` routes. All blocking work (curl, libarchive, tree walks) runs on
/// dedicated threads; the actor only holds state.
public actor ProjectCache {
    struct Entry {
        var record: ProjectRecord
        var pins = 0
        var materializing: Task<Result<Workspace, CacheError>, Never>?
        var fanout: ProgressFanout?
        var snapshotting: Task<Result<SnapshotResult?, CacheError>, Never>?
        var evicting: Task<Result<Void, CacheError>, Never>?
        /// A replacement or patch of the workspace in progress: new users wait for it.
        var changing: Task<Void, Never>?
        var dirty: Bool?
        /// Last scan made for a reader of ``ProjectCache/currentStatus(_:)`` (not a
        /// write-back check, so polling never postpones the periodic write-back).
        var lastScan: Date?
        /// Last dirty check or write-back, for the periodic write-back.
        var lastCheck: Date?
        var persistedUse: Date
    }

    let config: CacheConfiguration
    let index: CacheIndex
    let layout: DataLayout
    var entries: [String: Entry] = [:]
    /// New projects whose upload is making their workspace right now (see
    /// ``upload(_:archive:workspaceQuota:)``): a second upload of the same id meanwhile
    /// takes the ordinary path.
    var adopting: Set<String> = []
    /// Spare formatted images by size, and the sizes to keep them for (most recent first).
    var spares: [Int64: [String]] = [:]
    var spareSizes: [Int64] = []
    var spareRefill: Task<Void, Never>?
    var sparesStopped = false
    /// Named snapshots per project and name (docs/CACHE.md, "Named snapshots").
    var named: [String: [String: NamedSnapshot]] = [:]
    /// The last named-snapshot operation of each project: the next one waits for it.
    var namedQueue: [String: Task<Void, Never>] = [:]
    /// Read-only layers under forked workspaces, by id (docs/CACHE.md, "Forks").
    var layers: [String: LayerRecord] = [:]
    /// Hits, misses and bytes fetched since the cache opened.
    public private(set) var counters = CacheCounters()
    /// What the start found on disk.
    public nonisolated let recovery: RecoveryReport
    var logger: Logger { config.logger }

    init(
        config: CacheConfiguration, index: sending CacheIndex, records: [ProjectRecord], snapshots: [NamedSnapshot],
        layers: [LayerRecord], recovery: RecoveryReport
    ) {
        self.config = config
        self.index = index
        self.layout = DataLayout(config.dataDirectory)
        self.recovery = recovery
        for r in records { entries[r.id] = Entry(record: r, persistedUse: r.lastUsed) }
        for s in snapshots where entries[s.project] != nil { named[s.project, default: [:]][s.name] = s }
        for l in layers { self.layers[l.id] = l }
    }

    func now() -> Date { config.clock() }

    // MARK: - Registration

    /// Registers `id` with a source URL (`file://`, `blob:`, `http(s)://`, `s3://`, `azure://`)
    /// and optionally the archive's hex SHA-256, verified on every download.
    ///
    /// Re-registering the same source is a no-op. Changing the source of a materialized
    /// project fails with ``CacheError/busy(_:)``: evict it first, so no edit is dropped silently.
    /// A `workspaceQuota` sets the project's disk cap as ``setWorkspaceQuota(_:bytes:)`` does;
    /// nil leaves it as it is.
    public func register(_ id: String, source: String, sha256: String? = nil, workspaceQuota: Int64? = nil)
        async throws(CacheError)
    {
        try Self.validate(id)
        if let workspaceQuota { try Self.validate(quota: workspaceQuota) }
        let parsed = try ProjectSource(parsing: source)
        try await config.stores.check(parsed)
        if var entry = entries[id] {
            if entry.record.source == source && entry.record.sha256 == sha256 {
                if let workspaceQuota { try setWorkspaceQuota(id, bytes: workspaceQuota) }
                return
            }
            if entry.record.ready || entry.materializing != nil {
                throw .busy("\(id) is materialized; evict it before changing its source")
            }
            let oldSnapshot = entry.record.snapshotKey
            let oldSource = entry.record.source
            entry.record.source = source
            entry.record.sha256 = sha256?.lowercased()
            entry.record.snapshotKey = nil
            entry.record.snapshotVersion = nil
            entry.record.snapshotAt = nil
            entry.record.quotaBytes = workspaceQuota ?? entry.record.quotaBytes
            // New files: whatever setup ran, it ran on the old ones.
            entry.record.baseVersion = nil
            entry.record.setup = nil
            entries[id] = entry
            try persist(id)
            // The old snapshot belongs to the old source; a new source starts from scratch.
            try? await deleteWriteBack(id, key: oldSnapshot)
            // So does an archive uploaded for this project: nothing refers to it any more.
            if let upload = layout.ownedUpload(oldSource, of: id) { try? await config.stores.primary.delete(upload) }
        } else {
            let record = ProjectRecord(
                id: id, source: source, sha256: sha256?.lowercased(), lastUsed: now(), quotaBytes: workspaceQuota)
            entries[id] = Entry(record: record, persistedUse: record.lastUsed)
            try persist(id)
        }
    }

    /// Creates (or replaces the source of) a project from an archive file: the archive is
    /// test-extracted under the limits (a bad archive is refused before it is stored),
    /// stored in the primary store and registered as `blob:uploads/<id>/<sha256>.archive`.
    /// An archive that expands past the project's disk cap is refused here too.
    ///
    /// A materialized project's workspace is replaced by the new tree (see
    /// ``replace(_:staging:source:sha256:workspaceQuota:)``): the test extraction is made on
    /// the workspace's own filesystem and renamed into its place, only while nothing uses
    /// the workspace (``CacheError/projectBusy(_:)`` otherwise, and nothing changes).
    @discardableResult
    public func upload(_ id: String, archive path: String, workspaceQuota: Int64? = nil) async throws(CacheError)
        -> ProjectStatus
    {
        try Self.validate(id)
        if let workspaceQuota { try Self.validate(quota: workspaceQuota) }
        if entries[id] == nil, !adopting.contains(id) {
            return try await uploadNew(id, archive: path, workspaceQuota: workspaceQuota)
        }
        if let materializing = entries[id]?.materializing { _ = await materializing.value }
        // An overlay workspace (a fork) is not swapped by renames: the new archive replaces
        // every file, so its tree goes (nothing written back) and the project is registered
        // with the new source, cold.
        if let entry = entries[id], entry.record.ready, !entry.record.layers.isEmpty {
            guard entry.pins == 0 else {
                throw .projectBusy(
                    "project \(id) is in use (\(entry.pins) running job(s), live session(s) or file call(s)); its files are replaced only when nothing uses them; nothing was changed"
                )
            }
            try await evict(id, discard: true)
        }
        let ready = entries[id].flatMap { $0.record.ready ? $0.record : nil }
        // A replacement is staged where the workspace lives (its volume, or beside
        // `workspaces/`), so it can be renamed into place; the test extraction is that tree.
        let volume = ready?.volumeBytes != nil ? layout.volume(id) : nil
        let probe = volume?.staging() ?? layout.staging(id)
        let keep = ready != nil
        // The test extraction runs on the host's disk: the cap bounds what it may write.
        let limits = extractionLimits(
            quota: ready?.volumeBytes ?? workspaceQuota ?? entries[id]?.record.quotaBytes ?? config.workspaceQuotaBytes)
        let sha = try await BlockingThread.run("corral-upload-check") { () throws(CacheError) -> String in
            do throws(CacheError) {
                try sys("mkdir(\(probe))") { mkdir(probe, 0o700) }
                _ = try Extractor.extract(archive: path, into: probe, limits: limits)
                try sys("chmod(\(probe))") { chmod(probe, 0o755) }
                if !keep { try SafeTree.remove(path: probe) }
                let fd = try sys("open(\(path))") { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
                defer { close(fd) }
                return try FileHash.sha256(fd: fd).1
            } catch {
                try? SafeTree.remove(path: probe)
                if let volume, case .system(let e) = error, e.errno == ENOSPC {
                    throw .tooLarge(
                        "the new archive does not fit beside the current workspace in its \(ready?.volumeBytes ?? 0)-byte cap (\(e.call): ENOSPC); evict the project first (DELETE /v1/projects/\(id)/workspace?discard=true) and upload again: \(volume.mountPoint)"
                    )
                }
                throw error
            }
        }
        let key = "uploads/\(id)/\(sha).archive"
        do throws(CacheError) {
            _ = try await config.stores.primary.put(key, from: path)
        } catch {
            if keep { await Self.discard(probe) }
            throw error
        }
        if keep {
            try await replace(id, staging: probe, source: "blob:\(key)", sha256: sha, workspaceQuota: workspaceQuota)
        } else {
            try await register(id, source: "blob:\(key)", sha256: sha, workspaceQuota: workspaceQuota)
        }
        return try status(id)
    }

    /// The upload of a project this cache does not know yet, which also materializes it: the
    /// test extraction is made where the workspace lives (in its new volume under a cap) and
    /// becomes the workspace, so the project is warm when the upload answers. Extracting
    /// twice (a test on the host's disk, thrown away, then again into the volume at the
    /// first job) was most of a new project's cold start (docs/BENCHMARKS.md, "Cold start").
    private func uploadNew(_ id: String, archive path: String, workspaceQuota: Int64?) async throws(CacheError)
        -> ProjectStatus
    {
        adopting.insert(id)
        defer { adopting.remove(id) }
        let quotaBytes = workspaceQuota ?? config.workspaceQuotaBytes
        let limits = extractionLimits(quota: quotaBytes)
        let (volume, target, staging, logger) = (layout.volume(id), layout.workspace(id), layout.staging(id), logger)
        let spare = quotaBytes.flatMap { takeSpare(bytes: $0) }
        // Removes the tree made here (and its volume), leaving nothing behind.
        let discard = { () async -> Void in
            await BlockingThread.run("corral-cleanup") { () -> Void in
                if quotaBytes != nil { try? volume.remove() } else { try? SafeTree.remove(path: target) }
            }
        }
        let (sha, summary) = try await BlockingThread.run("corral-upload") {
            () throws(CacheError) -> (String, ManifestSummary) in
            let summary: ManifestSummary
            if let quotaBytes {
                summary = try Self.extract(
                    path, into: volume, bytes: quotaBytes, spare: spare, limits: limits, logger: logger)
            } else {
                summary = try Self.extract(path, into: target, staging: staging, limits: limits)
            }
            let fd = try sys("open(\(path))") { Glibc.open(path, O_RDONLY | O_CLOEXEC) }
            defer { close(fd) }
            return (try FileHash.sha256(fd: fd).1, summary)
        }
        let key = "uploads/\(id)/\(sha).archive"
        do throws(CacheError) {
            _ = try await config.stores.primary.put(key, from: path)
        } catch {
            await discard()
            throw error
        }
        guard entries[id] == nil else {
            // Registered meanwhile by another call: the last registration wins, as it would
            // have without this shortcut; the tree made here goes.
            await discard()
            try await register(id, source: "blob:\(key)", sha256: sha, workspaceQuota: workspaceQuota)
            return try status(id)
        }
        var record = ProjectRecord(
            id: id, source: "blob:\(key)", sha256: sha, lastUsed: now(), quotaBytes: workspaceQuota)
        record.ready = true
        record.sourceVersion = "sha256:\(sha)"
        record.baseVersion = record.sourceVersion
        record.materializedAt = now()
        record.manifestDigest = summary.digest
        record.diskBytes = summary.diskBytes
        record.volumeBytes = quotaBytes
        entries[id] = Entry(record: record, persistedUse: record.lastUsed)
        entries[id]!.dirty = false
        entries[id]!.lastCheck = now()
        do throws(CacheError) {
            try persist(id)
        } catch {
            entries[id] = nil
            await discard()
            try? await config.stores.primary.delete(key)
            throw error
        }
        logger.info("materialized", metadata: ["project": "\(id)", "version": "sha256:\(sha)", "by": "upload"])
        return try status(id)
    }

    /// Extracts `archive` into `staging` and renames it to `target`, a workspace without a
    /// cap; returns the new tree's scan. On failure staging is removed. Blocking.
    static func extract(_ archive: String, into target: String, staging: String, limits: ExtractionLimits)
        throws(CacheError) -> ManifestSummary
    {
        do throws(CacheError) {
            try sys("mkdir(\(staging))") { mkdir(staging, 0o700) }
            _ = try Extractor.extract(archive: archive, into: staging, limits: limits)
            try sys("chmod(\(staging))") { chmod(staging, 0o755) }
            // Anything already at the target is a leftover of a crash during an earlier
            // eviction or materialization: the index says cold, so nothing there is live.
            try SafeTree.remove(path: target)
            try sys("rename(\(staging))") { rename(staging, target) }
        } catch {
            try? SafeTree.remove(path: staging)
            throw error
        }
        return try Manifest.scan(target)
    }

    /// ``upload(_:archive:workspaceQuota:)`` for archive bytes already in memory.
    @discardableResult
    public func upload(_ id: String, bytes: [UInt8], workspaceQuota: Int64? = nil) async throws(CacheError)
        -> ProjectStatus
    {
        try Self.validate(id)
        let path = layout.download(id)
        try await Self.spool(bytes, to: path)
        defer { unlink(path) }
        return try await upload(id, archive: path, workspaceQuota: workspaceQuota)
    }

    // MARK: - Materialization

    /// The project's workspace, downloading and extracting it first if it is cold.
    ///
    /// Single flight: concurrent callers for a cold project share one download and one
    /// extraction, and each receives progress. A caller that is cancelled stops waiting;
    /// the shared work continues for the others.
    public func materialize(_ id: String, progress: (@Sendable (CacheProgress) -> Void)? = nil)
        async throws(CacheError) -> Workspace
    {
        while true {
            guard let entry = entries[id] else { throw .unknownProject(id) }
            entries[id]!.record.lastUsed = max(entry.record.lastUsed, now())
            if let evicting = entry.evicting {
                _ = await evicting.value
                continue
            }
            if let changing = entry.changing {
                await changing.value
                continue
            }
            if entry.record.ready {
                counters.hits += 1
                return workspace(entry.record)
            }
            counters.misses += 1
            if let task = entry.materializing {
                entry.fanout?.add(progress)
                return try await task.value.get()
            }
            let fanout = ProgressFanout()
            fanout.add(progress)
            let task = Task { await self.runMaterialize(id, fanout) }
            entries[id]!.materializing = task
            entries[id]!.fanout = fanout
            return try await task.value.get()
        }
    }

    private func runMaterialize(_ id: String, _ fanout: ProgressFanout) async -> Result<Workspace, CacheError> {
        defer {
            entries[id]?.materializing = nil
            entries[id]?.fanout = nil
        }
        let download = layout.download(id)
        let staging = layout.staging(id)
        do throws(CacheError) {
            let (store, key, expected, fromSnapshot) = try await plan(id)
            fanout.send(.downloading(TransferProgress(bytes: 0, total: nil, bytesPerSecond: 0)))
            let info = try await store.get(key, to: download, limit: config.maxDownloadBytes) {
                fanout.send(.downloading($0))
            }
            counters.downloadedBytes += info.size
            if let expected, info.sha256 != expected {
                throw .checksumMismatch(expected: expected, actual: info.sha256 ?? "unknown")
            }
            fanout.send(.extracting)
            let target = layout.workspace(id)
            let quotaBytes = quota(entries[id]!)
            // A snapshot is restored under exactly the limits it was packed under.
            let limits = fromSnapshot ? snapshotLimits(quota: quotaBytes) : extractionLimits(quota: quotaBytes)
            let (volume, logger) = (layout.volume(id), logger)
            let spare = quotaBytes.flatMap { takeSpare(bytes: $0) }
            let summary = try await BlockingThread.run("corral-extract") { () throws(CacheError) -> ManifestSummary in
                defer { unlink(download) }
                if let quotaBytes {
                    return try Self.extract(
                        download, into: volume, bytes: quotaBytes, spare: spare, limits: limits, logger: logger)
                }
                return try Self.extract(download, into: target, staging: staging, limits: limits)
            }
            // The setup of the tree: none on fresh files from the source; what the snapshot's
            // sidecar says on a restored one, which descends from the same source.
            let sidecar = fromSnapshot ? await readSetupSidecar(id, snapshotVersion: info.version) : nil
            var record = entries[id]!.record
            if fromSnapshot {
                record.baseVersion =
                    sidecar?.baseVersion ?? record.baseVersion ?? record.sha256.map { "sha256:\($0)" }
                    ?? "source:\(record.source)"
            } else {
                record.baseVersion = info.version
            }
            record.setup = sidecar?.setup
            record.ready = true
            record.sourceVersion = fromSnapshot ? "snapshot:\(info.version)" : info.version
            record.materializedAt = now()
            record.manifestDigest = summary.digest
            record.diskBytes = summary.diskBytes
            record.volumeBytes = quotaBytes
            entries[id]!.record = record
            entries[id]!.dirty = false
            entries[id]!.lastCheck = now()
            try persist(id)
            logger.info("materialized", metadata: ["project": "\(id)", "version": "\(record.sourceVersion ?? "")"])
            fanout.send(.ready)
            return .success(workspace(record))
        } catch {
            await BlockingThread.run("corral-cleanup") { () -> Void in
                try? SafeTree.remove(path: staging)
                unlink(download)
            }
            logger.warning("materialize failed", metadata: ["project": "\(id)", "error": "\(error)"])
            return .failure(error)
        }
    }

    /// The blob to materialize from: the latest write-back snapshot if there is one, else
    /// the registered source with its expected checksum.
    private func plan(_ id: String) async throws(CacheError) -> (any BlobStore, String, String?, Bool) {
        let record = entries[id]!.record
        let primary = config.stores.primary
        if let key = record.snapshotKey { return (primary, key, nil, true) }
        // A snapshot the index does not know (index lost, or written by another host).
        if try await primary.head(layout.snapshotKey(id)) != nil { return (primary, layout.snapshotKey(id), nil, true) }
        let (store, key) = try config.stores.resolve(ProjectSource(parsing: record.source))
        return (store, key, record.sha256, false)
    }

    // MARK: - Use, pins and status

    /// The project's source as registered (credentials and SAS query included, unlike
    /// ``status(_:)``) and its expected checksum: what a cluster registry records.
    public func registration(_ id: String) throws(CacheError) -> (source: String, sha256: String?) {
        guard let record = entries[id]?.record else { throw .unknownProject(id) }
        return (record.source, record.sha256)
    }

    /// Refreshes the sliding TTL: the project counts as used now.
    public func touch(_ id: String) throws(CacheError) {
        guard entries[id] != nil else { throw .unknownProject(id) }
        entries[id]!.record.lastUsed = max(entries[id]!.record.lastUsed, now())
    }

    /// Keeps the project from eviction until a matching ``unpin(_:)`` (a running job).
    public func pin(_ id: String) throws(CacheError) {
        try touch(id)
        entries[id]!.pins += 1
    }

    /// Releases one ``pin(_:)``; the TTL restarts from now.
    public func unpin(_ id: String) throws(CacheError) {
        try touch(id)
        entries[id]!.pins = max(0, entries[id]!.pins - 1)
    }

    /// Pins, then materializes: what a job does before it starts. Pair with ``release(_:)``.
    public func acquire(_ id: String, progress: (@Sendable (CacheProgress) -> Void)? = nil)
        async throws(CacheError) -> Workspace
    {
        try pin(id)
        do throws(CacheError) {
            return try await materialize(id, progress: progress)
        } catch {
            try? unpin(id)
            throw error
        }
    }

    /// Ends an ``acquire(_:progress:)``.
    public func release(_ id: String) throws(CacheError) { try unpin(id) }

    /// The project's workspace as it is now if it is materialized; nil when it is cold.
    public func currentWorkspace(_ id: String) throws(CacheError) -> Workspace? {
        guard let entry = entries[id] else { throw .unknownProject(id) }
        return entry.record.ready ? workspace(entry.record) : nil
    }

    /// The status of one project.
    public func status(_ id: String) throws(CacheError) -> ProjectStatus {
        guard let entry = entries[id] else { throw .unknownProject(id) }
        return status(entry)
    }

    /// Every registered project, sorted by id.
    public func list() -> [ProjectStatus] {
        entries.keys.sorted().map { status(entries[$0]!) }
    }

    func status(_ e: Entry) -> ProjectStatus {
        let r = e.record
        let state: ProjectState = r.ready ? .ready : (e.materializing != nil ? .fetching : .cold)
        let source = (try? ProjectSource(parsing: r.source).description) ?? r.source
        return ProjectStatus(
            id: r.id, source: source, state: state, sourceVersion: r.ready ? r.sourceVersion : nil,
            dirty: r.ready ? e.dirty : nil, diskBytes: r.ready ? r.diskBytes : 0,
            quotaBytes: r.ready ? r.volumeBytes : quota(e), pins: e.pins, lastUsed: r.lastUsed,
            expiresAt: r.lastUsed.addingTimeInterval(config.ttl.timeInterval), snapshotVersion: r.snapshotVersion,
            snapshotAt: r.snapshotAt, snapshotBytes: namedBytes(r.id))
    }

    func workspace(_ r: ProjectRecord) -> Workspace {
        Workspace(
            project: r.id, path: workspacePath(r), sourceVersion: r.sourceVersion ?? "",
            materializedAt: r.materializedAt ?? r.lastUsed,
            sharedIdentity: r.layers.lazy.compactMap { self.layers[$0]?.owner }.first)
    }

    func persist(_ id: String) throws(CacheError) {
        guard let record = entries[id]?.record else { return }
        do {
            try index.save(record)
            entries[id]!.persistedUse = record.lastUsed
        } catch {
            throw .index(error.description)
        }
    }

    static func validate(_ id: String) throws(CacheError) {
        if !ProjectID.isValid(id) { throw .invalidProject(id) }
    }
}
