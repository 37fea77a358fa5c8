import Foundation
import Glibc
import Logging
import Sandbox

// MARK: - Restart: layers and overlays

extension ProjectCache {
    /// Mounts every layer the index lists read-only again (after a reboot; a layer still
    /// mounted from the previous run is kept), unmounts whatever else is mounted under
    /// `layer-mounts/` and moves images no row names to `orphans/`. Returns the layers
    /// mounted. Blocking; runs before the projects' volumes are adopted.
    static func recoverLayers(
        _ layout: DataLayout, _ layers: [LayerRecord], _ report: inout RecoveryReport, logger: Logger
    ) -> Set<String> {
        var mounted: Set<String> = []
        for layer in layers {
            let volume = layout.layer(layer.id)
            let live = MountTable.loopName(mountedAt: volume.mountPoint).flatMap(MountTable.backingFile)
            do throws(CacheError) {
                if live != MountTable.realPath(volume.image) {
                    try volume.unmount()
                    try volume.check()
                    try volume.mount()
                }
                mounted.insert(layer.id)
            } catch {
                logger.error("cannot mount a layer again", metadata: ["layer": "\(layer.id)", "error": "\(error)"])
            }
        }
        let root = MountTable.realPath(layout.layerMounts) + "/"
        let keep = Set(mounted.map { MountTable.realPath(layout.layer($0).mountPoint) })
        let stale = ((try? MountTable.read()) ?? []).map(\.mountPoint).filter {
            $0.hasPrefix(root) && !keep.contains($0)
        }
        for point in Set(stale).sorted(by: { $0.utf8.count > $1.utf8.count }) {
            do throws(CacheError) {
                try Volume(image: point, mountPoint: point).unmount()
                report.unmounted += 1
            } catch {
                logger.error(
                    "cannot release a stale layer mount", metadata: ["mount": "\(point)", "error": "\(error)"])
            }
        }
        let known = Set(layers.map(\.id))
        for name in (try? FileManager.default.contentsOfDirectory(atPath: layout.layerImages)) ?? [] {
            guard !(name.hasSuffix(".img") && known.contains(String(name.dropLast(4)))) else { continue }
            try? SafeTree.makeDirectories(layout.orphans, mode: 0o700)
            if rename("\(layout.layerImages)/\(name)", "\(layout.orphans)/layer-\(name).\(UUID().uuidString.prefix(8))")
                == 0
            {
                report.orphaned.append("layer-\(name)")
            }
        }
        for name in (try? FileManager.default.contentsOfDirectory(atPath: layout.layerMounts)) ?? []
        where !known.contains(name) && !MountTable.isMountPoint("\(layout.layerMounts)/\(name)") {
            try? SafeTree.remove(path: "\(layout.layerMounts)/\(name)")
        }
        return mounted
    }

    /// Mounts the overlays of the ready overlay projects whose upper volume was adopted
    /// (the stale-mount sweep unmounted any left from before). A project whose layers or
    /// overlay cannot be mounted turns cold; its upper volume goes to `orphans/`, never
    /// deleted. Returns the ready set without those. Blocking.
    static func recoverOverlays(
        _ layout: DataLayout, _ records: [ProjectRecord], layers: [LayerRecord], mounted: Set<String>,
        ready: Set<String>, _ report: inout RecoveryReport, logger: Logger
    ) throws(CacheError) -> Set<String> {
        let byID = Dictionary(layers.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        var ready = ready
        for record in records where !record.layers.isEmpty && ready.contains(record.id) {
            let volume = layout.volume(record.id)
            do throws(CacheError) {
                guard record.layers.allSatisfy(mounted.contains) else {
                    throw .volume("a layer of \(record.id) is missing or could not be mounted")
                }
                try Overlay.unmount(volume)
                try Overlay.mount(volume, lowers: record.layers.map { layout.layerTree(byID[$0]!) })
            } catch {
                logger.error("cannot mount a fork again", metadata: ["project": "\(record.id)", "error": "\(error)"])
                ready.remove(record.id)
                report.adopted.removeAll { $0 == record.id }
                try? volume.unmount()
                try SafeTree.makeDirectories(layout.orphans, mode: 0o700)
                _ = rename(volume.image, "\(layout.orphans)/\(record.id).img.\(UUID().uuidString.prefix(8))")
                report.orphaned.append("\(record.id).img")
            }
        }
        return ready
    }
}
