import Foundation
import Glibc
import Sandbox

/// Where a cache keeps things under its data directory.
struct DataLayout: Sendable {
    let root: String

    init(_ root: String) { self.root = root.hasSuffix("/") ? String(root.dropLast()) : root }

    var index: String { "\(root)/index.sqlite" }
    var workspaces: String { "\(root)/workspaces" }
    /// Images of capped workspaces, `<id>.img`.
    var volumes: String { "\(root)/volumes" }
    /// Spare formatted images, `<uuid>.img`: empty filesystems, removed at start and stop.
    var spares: String { "\(root)/spares" }
    /// Where those images are mounted, `<id>/`.
    var mounts: String { "\(root)/mounts" }
    /// Extractions in progress; everything here is half-finished by definition.
    var stagingDirectory: String { "\(root)/staging" }
    var downloads: String { "\(root)/downloads" }
    var snapshots: String { "\(root)/snapshots" }
    var trashDirectory: String { "\(root)/trash" }
    var orphans: String { "\(root)/orphans" }
    /// Directories whose whole content a restart removes.
    var scratch: [String] { [stagingDirectory, downloads, snapshots, trashDirectory] }

    func workspace(_ id: String) -> String { "\(workspaces)/\(id)" }
    func volume(_ id: String) -> Volume { Volume(image: "\(volumes)/\(id).img", mountPoint: "\(mounts)/\(id)") }
    func staging(_ id: String) -> String { "\(stagingDirectory)/\(id).\(UUID().uuidString)" }
    func download(_ id: String) -> String { "\(downloads)/\(id).\(UUID().uuidString)" }
    func pack(_ id: String) -> String { "\(snapshots)/\(id).\(UUID().uuidString).tar.zst" }
    func trash(_ id: String) -> String { "\(trashDirectory)/\(id).\(UUID().uuidString)" }
    /// The key of a project's latest write-back in the primary store.
    func snapshotKey(_ id: String) -> String { "snapshots/\(id).tar.zst" }
    /// The key of the archive `source` names when it is one uploaded for project `id`
    /// (`blob:uploads/<id>/…`), which the project owns and takes with it; nil otherwise.
    func ownedUpload(_ source: String, of id: String) -> String? {
        let prefix = "blob:uploads/\(id)/"
        return source.hasPrefix(prefix) ? String(source.dropFirst("blob:".count)) : nil
    }
}

extension ProjectCache {
    /// Opens the cache on `config.dataDirectory`, creating it if needed.
    ///
    /// A restart re-adopts every workspace the index lists as ready and finds intact on
    /// disk (its dirty state is re-checked against the stored manifest on the next sweep),
    /// removes everything half-finished (staging, downloads, temporary snapshots, trash),
    /// marks ready-but-missing workspaces cold, removes workspace directories the index
    /// says are cold (leftovers of a crash mid-materialization or mid-eviction, never
    /// handed to anyone), and moves directories of unknown projects to `orphans/`.
    ///
    /// Capped workspaces are re-adopted the same way: a volume still mounted from the
    /// previous run is kept as it is, an intact image that is not mounted (after a reboot)
    /// is checked with `e2fsck -p` and mounted again. Mounts and loop devices of a crashed
    /// run that belong to no ready project are released (``RecoveryReport/unmounted``,
    /// ``RecoveryReport/detached``) and their images removed.
    public static func open(_ config: CacheConfiguration) async throws(CacheError) -> ProjectCache {
        let layout = DataLayout(config.dataDirectory)
        let index: CacheIndex
        var records: [ProjectRecord]
        let snapshots: [NamedSnapshot]
        let layers: [LayerRecord]
        do {
            try SafeTree.makeDirectories(layout.root, mode: 0o700)
            index = try CacheIndex(path: layout.index)
            records = try index.load()
            snapshots = try index.loadSnapshots()
            layers = try index.loadLayers()
        } catch let error as SQLiteError {
            throw .index(error.description)
        } catch let error as CacheError {
            throw error
        } catch {
            throw .index("\(error)")
        }
        let known = records
        let logger = config.logger
        let (recovery, ready) = try await BlockingThread.run("corral-recover") {
            () throws(CacheError) -> (RecoveryReport, Set<String>) in
            // Spares hold nothing: whatever a previous run left is remade when needed.
            try SafeTree.remove(path: layout.spares)
            var (report, ready) = try recover(layout, known)
            let mounted = recoverLayers(layout, layers, &report, logger: logger)
            ready.formUnion(try recoverVolumes(layout, known, &report, logger: logger))
            ready = try recoverOverlays(
                layout, known, layers: layers, mounted: mounted, ready: ready, &report, logger: logger)
            report.adopted.sort()
            report.lost = known.filter { $0.ready && !ready.contains($0.id) }.map(\.id).sorted()
            return (report, ready)
        }
        for i in records.indices where records[i].ready && !ready.contains(records[i].id) {
            records[i].ready = false
            records[i].diskBytes = 0
            records[i].volumeBytes = nil
            records[i].layers = []
            do { try index.save(records[i]) } catch { throw .index(error.description) }
        }
        for layer in layers { if let owner = layer.owner { IdentityRanges.shared.reserve(family: owner) } }
        config.logger.info(
            "cache opened",
            metadata: [
                "adopted": "\(recovery.adopted.count)", "swept": "\(recovery.swept)", "lost": "\(recovery.lost)",
                "orphaned": "\(recovery.orphaned)", "unmounted": "\(recovery.unmounted)",
                "detached": "\(recovery.detached)",
            ])
        let cache = ProjectCache(
            config: config, index: index, records: records, snapshots: snapshots, layers: layers, recovery: recovery)
        // A killed host may have left a put unrenamed, or a write-back the index never heard of.
        if let local = config.stores.primary as? LocalBlobStore {
            let removed = local.removeTemporaries()
            if removed > 0 { config.logger.info("removed unfinished puts", metadata: ["files": "\(removed)"]) }
        }
        await cache.settlePendingSnapshots()
        // Layers of projects gone cold while the host was down, and of deleted snapshots.
        await cache.collectLayers()
        return cache
    }

    /// The file-system half of ``open(_:)``: returns the report and the ids found intact.
    private static func recover(_ layout: DataLayout, _ records: [ProjectRecord]) throws(CacheError)
        -> (RecoveryReport, Set<String>)
    {
        var report = RecoveryReport()
        for dir in layout.scratch + [layout.workspaces] { try SafeTree.makeDirectories(dir, mode: 0o700) }
        for dir in layout.scratch {
            let fd = try sys("open(\(dir))") { Glibc.open(dir, SafeTree.dirFlags) }
            defer { close(fd) }
            for name in try SafeTree.list(fd) {
                try SafeTree.remove(fd, name)
                report.swept += 1
            }
        }
        let byID = Dictionary(records.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let fd = try sys("open(\(layout.workspaces))") { Glibc.open(layout.workspaces, SafeTree.dirFlags) }
        defer { close(fd) }
        var present: Set<String> = []
        for raw in try SafeTree.list(fd) {
            let name = raw.description
            var st = stat()
            let isDirectory = fstatat(fd, raw.cString, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mode & S_IFMT == S_IFDIR
            if let record = byID[name], record.ready, record.volumeBytes == nil, isDirectory, FileName(name) == raw {
                present.insert(name)
                report.adopted.append(name)
            } else if byID[name] != nil, FileName(name) == raw {
                try SafeTree.remove(fd, raw)
                report.swept += 1
            } else {
                try SafeTree.makeDirectories(layout.orphans, mode: 0o700)
                let label = FileName(name) == raw ? name : "unreadable-name"
                let target = "\(layout.orphans)/\(label).\(UUID().uuidString.prefix(8))"
                try sys("renameat(\(name))") { renameat(fd, raw.cString, AT_FDCWD, target) }
                report.orphaned.append(name)
            }
        }
        return (report, present)
    }
}
