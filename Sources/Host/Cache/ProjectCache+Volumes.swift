import Glibc
import Logging
import Sandbox

// MARK: - Disk caps (docs/CACHE.md, "Disk cap")

extension ProjectCache {
    /// Sets the project's own disk cap (`bytes`), or with nil returns it to
    /// ``CacheConfiguration/workspaceQuotaBytes``.
    ///
    /// A cap is the size of the filesystem the workspace is materialized into, so it takes
    /// effect at the next materialization: a ready workspace keeps the filesystem it has
    /// until it is evicted (``ProjectStatus/quotaBytes`` says which size is in force).
    public func setWorkspaceQuota(_ id: String, bytes: Int64?) throws(CacheError) {
        guard entries[id] != nil else { throw .unknownProject(id) }
        if let bytes { try Self.validate(quota: bytes) }
        guard entries[id]!.record.quotaBytes != bytes else { return }
        entries[id]!.record.quotaBytes = bytes
        try persist(id)
    }

    static func validate(quota bytes: Int64) throws(CacheError) {
        guard (Volume.minimumBytes...Volume.maximumBytes).contains(bytes) else {
            throw .invalidQuota(
                "\(bytes) bytes is outside \(Volume.minimumBytes)...\(Volume.maximumBytes) (4 MiB to 16 TiB)")
        }
    }

    /// The cap the project's next materialization gets; nil: a plain directory.
    func quota(_ e: Entry) -> Int64? { e.record.quotaBytes ?? config.workspaceQuotaBytes }

    /// The extraction limits under a cap: an archive that cannot fit is refused by the
    /// extractor's byte count, before the filesystem runs out of room.
    func extractionLimits(quota: Int64?) -> ExtractionLimits {
        var limits = config.extraction
        if let quota { limits.maxBytes = min(limits.maxBytes, quota) }
        return limits
    }

    /// The limits of the project's own snapshots: the packer applies them at write-back and
    /// the extractor at restore, so a snapshot that could be written can always be restored.
    ///
    /// The bytes cap is the workspace's cap (what the agent may write), counting file data
    /// (not holes) and names. No compression-ratio check: that guards against bombs in
    /// archives from elsewhere, and a snapshot's size is already bounded by the bytes cap,
    /// while a workspace of zeros would trip it. No depth rule either: an agent decides how
    /// deep its tree is, and the bytes of names, which grow with depth, are capped instead.
    func snapshotLimits(quota: Int64?) -> ExtractionLimits {
        var limits = extractionLimits(quota: quota)
        limits.maxCompressionRatio = .infinity
        limits.maxDepth = .max
        return limits
    }

    /// Where the project's tree is: inside its volume, or a directory under `workspaces/`.
    func workspacePath(_ r: ProjectRecord) -> String {
        r.volumeBytes != nil ? layout.volume(r.id).workspace : layout.workspace(r.id)
    }

    /// Materializes `archive` into a fresh volume of `bytes`: create and mount the image,
    /// extract into a staging tree inside it, rename that to `workspace` (one filesystem,
    /// so the rename is atomic) and fingerprint it. On any failure the whole volume goes
    /// (unmounted, loop device detached, image deleted): nothing half-extracted remains.
    /// Blocking.
    static func extract(
        _ archive: String, into volume: Volume, bytes: Int64, spare: String? = nil, limits: ExtractionLimits,
        logger: Logger
    ) throws(CacheError) -> ManifestSummary {
        // The index says cold, so anything already there is a crash leftover nobody uses.
        try volume.remove()
        if let spare {
            try volume.adopt(spare: spare)
        } else {
            try volume.create(bytes: bytes)
        }
        do throws(CacheError) {
            let staging = volume.staging()
            try sys("mkdir(\(staging))") { mkdir(staging, 0o700) }
            _ = try Extractor.extract(archive: archive, into: staging, limits: limits)
            try sys("chmod(\(staging))") { chmod(staging, 0o755) }
            try sys("rename(\(staging))") { rename(staging, volume.workspace) }
            return try Manifest.scan(volume.workspace)
        } catch {
            do throws(CacheError) {
                try volume.remove()
            } catch let cleanup {
                // The next materialization or start removes it; say so rather than hide it.
                logger.error(
                    "cannot remove a failed volume", metadata: ["image": "\(volume.image)", "error": "\(cleanup)"])
            }
            // Metadata also takes room, so a project just under the cap can still not fit.
            if case .system(let e) = error, e.errno == ENOSPC {
                throw .tooLarge("the project does not fit its \(bytes)-byte workspace cap (\(e.call): ENOSPC)")
            }
            throw error
        }
    }
}
