import Foundation
import Glibc
import Logging
import Sandbox

// MARK: - Forks of named snapshots

extension ProjectCache {
    /// Makes `id` a new project whose workspace starts as a copy-on-write view of `source`'s
    /// named snapshot `name`. The snapshot is extracted once into a layer of its own (on a
    /// volume of the source's cap), kept while the snapshot or any fork uses it: every later
    /// fork of the same snapshot only mounts an overlay over it. The source's workspace is
    /// neither touched nor materialized; any host that shares the primary store can do this.
    @discardableResult
    public func fork(_ source: String, snapshot name: String, into id: String, workspaceQuota: Int64?)
        async throws(CacheError) -> ProjectStatus
    {
        try Self.validate(source)
        try Self.validate(id)
        guard NamedSnapshot.isValid(name) else { throw .invalidSnapshotName(name) }
        if let workspaceQuota { try Self.validate(quota: workspaceQuota) }
        guard entries[source] != nil else { throw .unknownProject(source) }
        guard entries[id] == nil, !adopting.contains(id) else { throw .projectExists(id) }
        adopting.insert(id)
        defer { adopting.remove(id) }
        // One named-snapshot call per project at a time: two forks of one snapshot never
        // extract it twice, and a delete of it waits.
        let layerID = try await inNamedQueue(source) { () async throws(CacheError) -> String in
            try await self.snapshotLayer(source, name: name)
        }
        guard let layerBytes = layers[layerID]?.bytes else { throw .snapshotNotFound(project: source, name: name) }
        guard let forkBytes = workspaceQuota ?? quota(entries[source]!) ?? layerBytes as Int64? else {
            throw .forkUnsupported("no cap")
        }
        let stack = [layerID]
        try await makeForkVolume(id, bytes: forkBytes, over: stack)
        let origin = entries[source]?.record
        try await enterFork(
            id, source: origin?.source ?? "blob:\(NamedSnapshot.key(project: source, name: name))",
            sha256: origin?.sha256, version: "fork:\(source):named:\(name):\(layers[layerID]?.snapshot?.sha256 ?? "")",
            bytes: forkBytes, over: stack)
        logger.info("forked", metadata: ["project": "\(id)", "from": "\(source)", "snapshot": "\(name)"])
        return try status(id)
    }

    /// The layer holding the named snapshot's tree: the one made by an earlier fork, or a
    /// new one, extracted (checked against the snapshot's SHA-256, under the snapshot
    /// limits) into a fresh volume, handed to a new family identity and remounted read-only.
    private func snapshotLayer(_ source: String, name: String) async throws(CacheError) -> String {
        try await refreshSnapshots(source)
        guard let snapshot = named[source]?[name] else { throw .snapshotNotFound(project: source, name: name) }
        if let existing = layers.values.first(where: {
            $0.snapshot == .init(project: source, name: name, sha256: snapshot.sha256)
        }) {
            return existing.id
        }
        let quotaBytes = entries[source].flatMap { quota($0) } ?? config.workspaceQuotaBytes
        guard let bytes = quotaBytes else {
            throw .forkUnsupported(
                "project \(source) has no disk cap, so its snapshot has no filesystem size to be extracted into as a layer; give it a cap (limits.workspace)"
            )
        }
        let limits = snapshotLimits(quota: bytes)
        let download = layout.download(source)
        _ = try await config.stores.primary.get(snapshot.key, to: download, limit: config.maxDownloadBytes) { _ in }
        let id = UUID().uuidString.lowercased()
        let layer = layout.layer(id)
        let writable = Volume(image: layer.image, mountPoint: layer.mountPoint)
        let spare = takeSpare(bytes: bytes)
        let logger = logger
        let owner = try await BlockingThread.run("corral-layer") { () throws(CacheError) -> UInt32 in
            defer { unlink(download) }
            let fd = try sys("open(\(download))") { Glibc.open(download, O_RDONLY | O_CLOEXEC) }
            let sha = try { () throws(CacheError) -> String in
                defer { close(fd) }
                return try FileHash.sha256(fd: fd).1
            }()
            guard sha == snapshot.sha256 else { throw .checksumMismatch(expected: snapshot.sha256, actual: sha) }
            _ = try Self.extract(download, into: writable, bytes: bytes, spare: spare, limits: limits, logger: logger)
            do throws(CacheError) {
                let owner = try Self.own(writable.workspace, inherited: nil)
                let flags = UInt(MS_REMOUNT) | UInt(MS_NOSUID) | UInt(MS_NODEV) | UInt(MS_RDONLY)
                try sys("mount(MS_REMOUNT \(layer.mountPoint))") { Glibc.mount(nil, layer.mountPoint, nil, flags, nil) }
                return owner
            } catch {
                try? writable.remove()
                throw error
            }
        }
        IdentityRanges.shared.reserve(family: owner)
        let record = LayerRecord(
            id: id, tree: "workspace", lowers: [], owner: owner,
            snapshot: .init(project: source, name: name, sha256: snapshot.sha256), bytes: bytes, createdAt: now())
        layers[id] = record
        do { try index.save(record) } catch { throw .index(error.description) }
        logger.info(
            "extracted a snapshot layer", metadata: ["project": "\(source)", "snapshot": "\(name)", "layer": "\(id)"])
        return id
    }
}
