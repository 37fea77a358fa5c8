import CShim
import Foundation
import Glibc
import Logging
import Sandbox

// MARK: - Restart: capped workspaces

extension ProjectCache {
    /// The volume half of ``open(_:)``, after the directory half. Returns the ids whose
    /// volume was re-adopted. Blocking.
    ///
    /// Order matters: ready volumes are adopted first, so everything still mounted or bound
    /// under this data directory afterwards is, by elimination, a crashed run's leftover.
    static func recoverVolumes(
        _ layout: DataLayout, _ records: [ProjectRecord], _ report: inout RecoveryReport, logger: Logger
    ) throws(CacheError) -> Set<String> {
        // Both directories appear with the first capped workspace; a cache that never had one
        // looks exactly as it always did.
        var adopted: Set<String> = []
        var loopsInUse: Set<String> = []
        for record in records where record.ready && record.volumeBytes != nil {
            let volume = layout.volume(record.id)
            var st = stat()
            guard lstat(volume.image, &st) == 0, st.st_mode & S_IFMT == S_IFREG else { continue }  // lost
            do throws(CacheError) {
                try adopt(volume, &report)
                adopted.insert(record.id)
                if let loop = MountTable.loopName(mountedAt: volume.mountPoint) { loopsInUse.insert(loop) }
            } catch {
                // Never delete what may hold unsaved edits: keep the image for an admin.
                logger.error(
                    "cannot re-adopt a capped workspace", metadata: ["project": "\(record.id)", "error": "\(error)"])
                try? volume.unmount()
                try orphan(volume.image, label: "\(record.id).img", layout, &report)
            }
        }
        releaseStaleMounts(layout, keeping: adopted, &report, logger: logger)
        try removeStaleImages(layout, keeping: adopted, known: Set(records.map(\.id)), &report)
        detachStaleLoops(layout, keeping: loopsInUse, &report, logger: logger)
        // Empty mount points of volumes that are gone.
        guard let fd = try openIfPresent(layout.mounts) else { return adopted }
        defer { close(fd) }
        for name in try SafeTree.list(fd)
        where !(adopted.contains(name.description) && FileName(name.description) == name) {
            if !MountTable.isMountPoint("\(layout.mounts)/\(name.description)") { try SafeTree.remove(fd, name) }
        }
        return adopted
    }

    /// Keeps a volume still mounted from the previous run (the process restarted, the
    /// machine did not), or checks and mounts its image again (after a reboot).
    private static func adopt(_ volume: Volume, _ report: inout RecoveryReport) throws(CacheError) {
        let live = MountTable.loopName(mountedAt: volume.mountPoint).flatMap(MountTable.backingFile)
        if live != MountTable.realPath(volume.image) {
            try volume.unmount()
            // No journal: an image a crash left unclean is repaired before it is used.
            try volume.check()
            try volume.mount()
        }
        let fd = try sys("open(\(volume.mountPoint))") { Glibc.open(volume.mountPoint, SafeTree.dirFlags) }
        defer { close(fd) }
        let names = try SafeTree.list(fd).map(\.description)
        var st = stat()
        if fstatat(fd, "workspace", &st, AT_SYMLINK_NOFOLLOW) != 0,
            let trash = names.first(where: { $0.hasPrefix("trash.") })
        {
            // A crash mid-eviction: its write-back may not have finished, so the tree comes
            // back rather than going away.
            try sys("renameat(\(trash))") { renameat(fd, trash, fd, "workspace") }
        }
        for name in names where name.hasPrefix("staging.") || name.hasPrefix("trash.") {
            guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
            try SafeTree.remove(fd, FileName(name))
            report.swept += 1
        }
        guard fstatat(fd, "workspace", &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFDIR else {
            throw .volume("\(volume.image) holds no workspace")
        }
        report.adopted.append(String(volume.mountPoint.split(separator: "/").last ?? ""))
    }

    /// Unmounts everything under `mounts/` but the adopted volumes, deepest first.
    private static func releaseStaleMounts(
        _ layout: DataLayout, keeping adopted: Set<String>, _ report: inout RecoveryReport, logger: Logger
    ) {
        let root = MountTable.realPath(layout.mounts) + "/"
        let keep = Set(adopted.map { MountTable.realPath(layout.volume($0).mountPoint) })
        let stale = ((try? MountTable.read()) ?? []).map(\.mountPoint).filter {
            $0.hasPrefix(root) && !keep.contains($0)
        }
        for point in Set(stale).sorted(by: { $0.utf8.count > $1.utf8.count }) {
            do throws(CacheError) {
                try Volume(image: point, mountPoint: point).unmount()
                report.unmounted += stale.filter { $0 == point }.count
            } catch {
                logger.error("cannot release a stale mount", metadata: ["mount": "\(point)", "error": "\(error)"])
            }
        }
    }

    /// Images that belong to no adopted volume: a known project's are leftovers of a crash
    /// mid-materialization or mid-eviction (the index calls it cold) and go; an unknown
    /// project's are moved to `orphans/`.
    private static func removeStaleImages(
        _ layout: DataLayout, keeping adopted: Set<String>, known: Set<String>, _ report: inout RecoveryReport
    ) throws(CacheError) {
        guard let fd = try openIfPresent(layout.volumes) else { return }
        defer { close(fd) }
        for raw in try SafeTree.list(fd) {
            let name = raw.description
            let id = name.hasSuffix(".img") && FileName(name) == raw ? String(name.dropLast(4)) : nil
            if let id, adopted.contains(id) { continue }
            if let id, known.contains(id) {
                try SafeTree.remove(fd, raw)
                report.swept += 1
            } else {
                try orphan(raw, in: fd, layout, &report)
            }
        }
    }

    /// Detaches loop devices bound to this cache's images that no adopted volume uses (a
    /// crash between binding and mounting, or a device bound by hand).
    private static func detachStaleLoops(
        _ layout: DataLayout, keeping inUse: Set<String>, _ report: inout RecoveryReport, logger: Logger
    ) {
        let roots = [layout.volumes, layout.orphans].map { MountTable.realPath($0) + "/" }
        for (name, backing) in MountTable.boundLoops()
        where !inUse.contains(name) && roots.contains(where: { backing.hasPrefix($0) }) {
            let fd = Glibc.open("/dev/\(name)", O_RDWR | O_CLOEXEC)
            guard fd >= 0 else { continue }
            // ENXIO: it detached by itself meanwhile (LO_FLAGS_AUTOCLEAR on our close).
            if cor_loop_detach(fd) == 0 || errno == ENXIO {
                report.detached += 1
            } else {
                logger.error(
                    "cannot detach \(name)", metadata: ["error": "\(SystemError("LOOP_CLR_FD", errno: errno))"])
            }
            close(fd)
        }
    }

    private static func openIfPresent(_ dir: String) throws(CacheError) -> Int32? {
        let fd = Glibc.open(dir, SafeTree.dirFlags)
        if fd >= 0 { return fd }
        if errno == ENOENT { return nil }
        throw .system(SystemError("open(\(dir))", errno: errno))
    }

    private static func orphan(_ path: String, label: String, _ layout: DataLayout, _ report: inout RecoveryReport)
        throws(CacheError)
    {
        try SafeTree.makeDirectories(layout.orphans, mode: 0o700)
        let target = "\(layout.orphans)/\(label).\(UUID().uuidString.prefix(8))"
        try sys("rename(\(path))") { rename(path, target) }
        report.orphaned.append(label)
    }

    private static func orphan(_ raw: FileName, in fd: Int32, _ layout: DataLayout, _ report: inout RecoveryReport)
        throws(CacheError)
    {
        try SafeTree.makeDirectories(layout.orphans, mode: 0o700)
        let label = FileName(raw.description) == raw ? raw.description : "unreadable-name"
        let target = "\(layout.orphans)/\(label).\(UUID().uuidString.prefix(8))"
        try sys("renameat(\(label))") { renameat(fd, raw.cString, AT_FDCWD, target) }
        report.orphaned.append(label)
    }
}
