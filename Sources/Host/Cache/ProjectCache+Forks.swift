import Foundation
import Glibc
import Logging
import Sandbox

// MARK: - Forks (docs/CACHE.md, "Forks")

extension ProjectCache {
    /// Makes `id` a new project whose workspace starts as a copy-on-write view of `source`'s
    /// workspace as it is now, without copying it: time and disk independent of its size.
    ///
    /// The source's tree is frozen into a read-only layer where it lies (its volume is
    /// moved under `layer-mounts/` and remounted read-only), and both projects get an
    /// overlay workspace over it, each with its own upper tree on a new volume of its own
    /// cap. A source that is already an overlay with no change of its own since is not
    /// frozen again: the fork shares its stack. Only while nothing holds the source's
    /// workspace (``CacheError/projectBusy(_:)`` otherwise, and nothing changes); a cold
    /// source is materialized first. A source without a cap (a plain directory) cannot be
    /// frozen: ``CacheError/forkUnsupported(_:)``.
    ///
    /// The fork's source (what it is materialized from before its first write-back) is the
    /// source's; it has no manifest digest, so its first eviction always writes it back.
    @discardableResult
    public func fork(_ source: String, into id: String, workspaceQuota: Int64?) async throws(CacheError)
        -> ProjectStatus
    {
        try Self.validate(source)
        try Self.validate(id)
        if let workspaceQuota { try Self.validate(quota: workspaceQuota) }
        guard entries[source] != nil else { throw .unknownProject(source) }
        guard entries[id] == nil, !adopting.contains(id) else { throw .projectExists(id) }
        adopting.insert(id)
        defer { adopting.remove(id) }
        _ = try await materialize(source)
        while let changing = entries[source]?.changing { await changing.value }
        guard let entry = entries[source], entry.record.ready, entry.evicting == nil, entry.materializing == nil
        else { throw .busy("\(source) was evicted while the fork waited; send it again") }
        guard let sourceBytes = entry.record.volumeBytes else {
            throw .forkUnsupported(
                "project \(source) has no disk cap, so its workspace is a plain directory that cannot be frozen into a layer; give it a cap (limits.workspace) and evict it, then fork again"
            )
        }
        guard entry.record.layers.count < Overlay.maxLayers else {
            throw .forkUnsupported(
                "project \(source) stands on \(entry.record.layers.count) layers, the most an overlay takes is \(Overlay.maxLayers); evict it (its write-back makes it a whole tree again), then fork again"
            )
        }
        guard entry.pins == 0 else {
            throw .projectBusy(
                "project \(source) is in use (\(entry.pins) running job(s), live session(s) or file call(s)); it is forked only when nothing uses it; nothing was changed"
            )
        }
        guard let forkBytes = workspaceQuota ?? sourceBytes as Int64? else { throw .forkUnsupported("no cap") }
        let work = Task { await self.runFork(source, into: id, sourceBytes: sourceBytes, forkBytes: forkBytes) }
        entries[source]!.changing = Task { _ = await work.value }
        try await work.value.get()
        return try status(id)
    }

    private func runFork(_ source: String, into id: String, sourceBytes: Int64, forkBytes: Int64) async
        -> Result<Void, CacheError>
    {
        defer { entries[source]?.changing = nil }
        if let snapshotting = entries[source]?.snapshotting { _ = await snapshotting.value }
        do throws(CacheError) {
            var stack = entries[source]!.record.layers
            let sourceVolume = layout.volume(source)
            if stack.isEmpty || !Overlay.upperIsEmpty(sourceVolume) {
                stack = try await freeze(source, bytes: sourceBytes)
            }
            try await makeForkVolume(id, bytes: forkBytes, over: stack)
            guard entries[id] == nil else {
                // Registered meanwhile by another call (an upload of the same id): it wins.
                await removeForkVolume(id)
                throw CacheError.projectExists(id)
            }
            let origin = entries[source]!.record
            try await enterFork(
                id, source: origin.source, sha256: origin.sha256,
                version: "fork:\(source):\(origin.sourceVersion ?? "")",
                bytes: forkBytes, over: stack, diskBytes: origin.diskBytes)
            logger.info("forked", metadata: ["project": "\(id)", "from": "\(source)", "layers": "\(stack.count)"])
            return .success(())
        } catch {
            logger.warning("fork failed", metadata: ["project": "\(source)", "fork": "\(id)", "error": "\(error)"])
            return .failure(error)
        }
    }

    /// Makes the fork's own volume of `bytes` (a spare one when there is) and mounts its
    /// overlay over the layers of `stack`, top first. The index has no such project yet, so
    /// anything at its volume's place is a crash's leftover and goes first; a failure leaves
    /// nothing behind.
    func makeForkVolume(_ id: String, bytes: Int64, over stack: [String]) async throws(CacheError) {
        let trees = stack.map { layout.layerTree(layers[$0]!) }
        let spare = takeSpare(bytes: bytes)
        let (volume, logger) = (layout.volume(id), logger)
        try await BlockingThread.run("corral-fork") { () throws(CacheError) in
            try? Overlay.unmount(volume)
            try volume.remove()
            if let spare { try volume.adopt(spare: spare) } else { try volume.create(bytes: bytes) }
            do throws(CacheError) {
                try Overlay.prepare(volume, lowers: trees)
            } catch {
                do throws(CacheError) { try volume.remove() } catch let cleanup {
                    logger.error("cannot remove a failed fork's volume", metadata: ["error": "\(cleanup)"])
                }
                throw error
            }
        }
    }

    /// Records `id`, whose volume ``makeForkVolume(_:bytes:over:)`` made, as a ready fork
    /// over `stack`: dirty, since its tree is stored nowhere of its own yet, so its first
    /// write-back or eviction packs it. If the index cannot be written, the fork's volume
    /// goes, layers nothing uses any more are collected, and the error is thrown.
    func enterFork(
        _ id: String, source: String, sha256: String?, version: String, bytes: Int64, over stack: [String],
        diskBytes: Int64 = 0
    ) async throws(CacheError) {
        var record = ProjectRecord(id: id, source: source, sha256: sha256, lastUsed: now(), quotaBytes: bytes)
        record.ready = true
        record.sourceVersion = version
        record.materializedAt = now()
        record.volumeBytes = bytes
        record.layers = stack
        record.diskBytes = diskBytes
        entries[id] = Entry(record: record, persistedUse: record.lastUsed)
        entries[id]!.dirty = true
        entries[id]!.lastCheck = now()
        do throws(CacheError) {
            try persist(id)
        } catch {
            entries[id] = nil
            await removeForkVolume(id)
            await collectLayers()
            throw error
        }
    }

    /// Unmounts and removes a fork's volume that no record names.
    func removeForkVolume(_ id: String) async {
        let volume = layout.volume(id)
        await BlockingThread.run("corral-cleanup") { () -> Void in
            try? Overlay.unmount(volume)
            try? volume.remove()
        }
    }

    /// Freezes the source's current tree into a new layer and puts the source on an overlay
    /// over it; returns the source's new stack. The tree is not copied: its volume becomes
    /// the layer's (the mount moved to `layer-mounts/`, the image renamed to `layers/`, then
    /// remounted read-only), and the source's changes from now on go to the upper tree of a
    /// new volume of its cap. On failure the source is as it was.
    private func freeze(_ source: String, bytes: Int64) async throws(CacheError) -> [String] {
        let old = entries[source]!.record
        let layout = layout
        let volume = layout.volume(source)
        let id = UUID().uuidString.lowercased()
        let layer = layout.layer(id)
        let lowers = old.layers
        let lowerTrees = lowers.map { layout.layerTree(layers[$0]!) }
        let inherited = lowers.lazy.compactMap { self.layers[$0]?.owner }.first
        let spare = takeSpare(bytes: bytes)
        let tree = lowers.isEmpty ? "workspace" : "upper"
        let owner = try await BlockingThread.run("corral-freeze") { () throws(CacheError) -> UInt32 in
            if !lowers.isEmpty { try Overlay.unmount(volume) }
            let owner: UInt32
            do throws(CacheError) {
                owner = try Self.own("\(volume.mountPoint)/\(tree)", inherited: inherited)
                try Self.move(volume, to: layer)
            } catch {
                if !lowers.isEmpty { try? Overlay.mount(volume, lowers: lowerTrees) }
                throw error
            }
            do throws(CacheError) {
                if let spare { try volume.adopt(spare: spare) } else { try volume.create(bytes: bytes) }
                try Overlay.prepare(volume, lowers: ["\(layer.mountPoint)/\(tree)"] + lowerTrees)
            } catch {
                try? Overlay.unmount(volume)
                try? volume.remove()
                try? Self.move(layer, to: volume)
                if !lowers.isEmpty { try? Overlay.mount(volume, lowers: lowerTrees) }
                throw error
            }
            return owner
        }
        IdentityRanges.shared.reserve(family: owner)
        let record = LayerRecord(
            id: id, tree: tree, lowers: lowers, owner: owner, snapshot: nil, bytes: old.volumeBytes ?? bytes,
            createdAt: now())
        layers[id] = record
        do { try index.save(record) } catch { throw .index(error.description) }
        entries[source]!.record.layers = [id] + lowers
        // A new workspace for the pool (the old sandbox bound the frozen tree) and for the
        // dirty check (the overlay's metadata is not the plain tree's).
        entries[source]!.record.materializedAt = now()
        entries[source]!.dirty = true
        try persist(source)
        logger.info("froze a layer", metadata: ["project": "\(source)", "layer": "\(id)"])
        return [id] + lowers
    }

    /// The identity range that owns the tree at `path` (and will own the layer made of it):
    /// the range of the layers below, or the range of the job user owning the tree's root
    /// (a sandbox ran over it), or a fresh family range; a tree not owned by that range's job
    /// user yet is handed to it once (a chown walk, never a copy). Blocking.
    static func own(_ path: String, inherited: UInt32?) throws(CacheError) -> UInt32 {
        var st = stat()
        try sys("lstat(\(path))") { lstat(path, &st) }
        let fromRoot =
            st.st_uid >= IdentityRanges.workspaceOwner
            ? IdentityRanges.range(of: st.st_uid).flatMap { st.st_uid == $0 + IdentityRanges.workspaceOwner ? $0 : nil }
            : nil
        let owner: UInt32
        if let inherited {
            owner = inherited
        } else if let fromRoot {
            owner = fromRoot
        } else {
            do { owner = try IdentityRanges.shared.reserveFamily() } catch { throw .volume("\(error)") }
        }
        let user = owner + IdentityRanges.workspaceOwner
        if st.st_uid != user || st.st_gid != user {
            do {
                try Ownership.chownTree(path, uid: user, gid: user)
            } catch let error as SystemError {
                throw .system(error)
            } catch {
                throw .volume("\(error)")
            }
        }
        return owner
    }

    /// Moves a mounted volume to another place (mount point and image) and sets it
    /// read-only or writable as `target` says. Blocking.
    static func move(_ volume: Volume, to target: Volume) throws(CacheError) {
        try SafeTree.makeDirectories(SafeTree.split(target.image).0, mode: 0o700)
        try SafeTree.makeDirectories(target.mountPoint, mode: 0o700)
        try sys("rename(\(volume.image))") { rename(volume.image, target.image) }
        if Glibc.mount(volume.mountPoint, target.mountPoint, nil, UInt(MS_MOVE), nil) != 0 {
            let e = errno
            _ = rename(target.image, volume.image)
            throw .volume("\(SystemError("mount(MS_MOVE \(volume.mountPoint))", errno: e))")
        }
        let flags = UInt(MS_REMOUNT) | UInt(MS_NOSUID) | UInt(MS_NODEV) | (target.readOnly ? UInt(MS_RDONLY) : 0)
        if Glibc.mount(nil, target.mountPoint, nil, flags, nil) != 0 {
            let e = errno
            _ = Glibc.mount(target.mountPoint, volume.mountPoint, nil, UInt(MS_MOVE), nil)
            _ = rename(target.image, volume.image)
            if e == EBUSY {
                throw .busy("a file in \(volume.mountPoint) is open for writing on the host; nothing was changed")
            }
            throw .volume("\(SystemError("mount(MS_REMOUNT \(target.mountPoint))", errno: e))")
        }
    }

    // MARK: - Releasing layers

    /// Removes every layer nothing references any more (no ready project stands on it, and
    /// for a snapshot's layer, the snapshot is gone): unmounted, loop device detached, image
    /// deleted, row dropped. A layer still mounted by something else (a busy unmount) stays
    /// for the next call.
    func collectLayers() async {
        var live: Set<String> = []
        for entry in entries.values where entry.record.ready { live.formUnion(entry.record.layers) }
        for layer in layers.values {
            if let origin = layer.snapshot, let kept = named[origin.project]?[origin.name], kept.sha256 == origin.sha256
            {
                live.insert(layer.id)
            }
        }
        // Lower layers of live layers are live (each stack holds its full depth already;
        // this keeps the rule true for any row as well).
        var queue = Array(live)
        while let next = queue.popLast() {
            for lower in layers[next]?.lowers ?? [] where live.insert(lower).inserted { queue.append(lower) }
        }
        // Top layers first, so a layer goes only after those stacked on it.
        let dead = layers.values.filter { !live.contains($0.id) }.sorted { $0.lowers.count > $1.lowers.count }
        let layout = layout
        for layer in dead {
            let volume = layout.layer(layer.id)
            let failure = await BlockingThread.run("corral-layer-remove") { () -> CacheError? in
                do throws(CacheError) {
                    try volume.remove()
                    return nil
                } catch { return error }
            }
            if let failure {
                logger.error("cannot remove a layer", metadata: ["layer": "\(layer.id)", "error": "\(failure)"])
                continue
            }
            layers[layer.id] = nil
            do { try index.deleteLayer(layer.id) } catch { logger.error("index write failed: \(error)") }
            if let owner = layer.owner, !layers.values.contains(where: { $0.owner == owner }) {
                IdentityRanges.shared.release(family: owner)
            }
            logger.info("removed a layer", metadata: ["layer": "\(layer.id)"])
        }
    }

    /// The layers on this host, for status and tests: id → the projects standing on it.
    public func layerUsers() -> [String: [String]] {
        var users: [String: [String]] = [:]
        for id in layers.keys { users[id] = [] }
        for entry in entries.values where entry.record.ready {
            for id in entry.record.layers { users[id, default: []].append(entry.record.id) }
        }
        return users.mapValues { $0.sorted() }
    }

    // MARK: - Evicting an overlay workspace

    /// ``evict(_:discard:)`` of an overlay workspace: the merged tree is written back if it
    /// changed (unless `discard`), the overlay unmounted, the upper volume removed and the
    /// layers released. Re-materializing it is then a plain extraction of its write-back.
    func runEvictLayered(_ id: String, discard: Bool) async -> Result<Void, CacheError> {
        let record = entries[id]!.record
        let volume = layout.volume(id)
        if !discard {
            do throws(CacheError) {
                let path = volume.workspace
                let summary = try await BlockingThread.run("corral-scan") { () throws(CacheError) in
                    try Manifest.scan(path)
                }
                if summary.digest != entries[id]?.record.manifestDigest {
                    _ = try await writeBack(id, from: path)
                }
            } catch {
                entries[id]?.dirty = true
                logger.error("eviction kept the workspace", metadata: ["project": "\(id)", "error": "\(error)"])
                return .failure(error)
            }
        }
        let trees = record.layers.compactMap { layers[$0].map(layout.layerTree) }
        do throws(CacheError) {
            try await BlockingThread.run("corral-unmount") { () throws(CacheError) in
                try Overlay.unmount(volume)
                do throws(CacheError) {
                    try volume.unmount()
                } catch {
                    try? Overlay.mount(volume, lowers: trees)
                    throw error
                }
            }
        } catch {
            logger.error("eviction kept the workspace", metadata: ["project": "\(id)", "error": "\(error)"])
            return .failure(error)
        }
        entries[id]!.record.ready = false
        entries[id]!.record.diskBytes = 0
        entries[id]!.record.volumeBytes = nil
        entries[id]!.record.layers = []
        entries[id]!.dirty = nil
        do throws(CacheError) { try persist(id) } catch { logger.error("index write failed: \(error)") }
        let removal = await BlockingThread.run("corral-remove") { () -> CacheError? in
            do throws(CacheError) {
                try volume.remove()
                return nil
            } catch { return error }
        }
        if let removal {
            logger.error("evicted workspace not removed", metadata: ["project": "\(id)", "error": "\(removal)"])
        }
        await collectLayers()
        logger.info("evicted", metadata: ["project": "\(id)", "discard": "\(discard)", "layered": "true"])
        return .success(())
    }
}
