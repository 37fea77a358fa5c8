import Foundation
import Glibc
import Sandbox

/// A read-only, immutable workspace tree that forked projects stack their own changes on
/// (docs/CACHE.md, "Forks").
///
/// A layer is the volume a project's tree lived in when it was forked (frozen where it was,
/// remounted read-only, never written again), or a named snapshot extracted once. It lives
/// as long as something references it: a ready project whose stack holds it, or, for a
/// snapshot's layer, the snapshot itself. The cache index keeps one row per layer; the
/// projects' stacks are the references.
struct LayerRecord: Sendable, Equatable {
    /// Where a layer made from a named snapshot came from: a second fork of the same
    /// snapshot takes this layer instead of extracting it again.
    struct SnapshotOrigin: Sendable, Equatable {
        var project: String
        var name: String
        var sha256: String
    }

    /// A random id (a UUID): never a project id, never holds a colon.
    var id: String
    /// The directory inside the layer's volume that holds its tree: `workspace` (a project's
    /// own tree, or an extracted snapshot) or `upper` (an overlay project's changes, with
    /// overlayfs whiteouts for what it deleted from the layers below).
    var tree: String
    /// The layers this one's tree is read over, top first; empty for a whole tree.
    var lowers: [String]
    /// The first host id of the identity range that owns the files (``IdentityRanges``), if
    /// they belong to one: the sandboxes over this layer share that range.
    var owner: UInt32?
    var snapshot: SnapshotOrigin?
    /// The size of the layer's filesystem.
    var bytes: Int64
    var createdAt: Date
}

extension DataLayout {
    /// Images of layers, `<layer>.img`.
    var layerImages: String { "\(root)/layers" }
    /// Where they are mounted read-only, `<layer>/`.
    var layerMounts: String { "\(root)/layer-mounts" }

    func layer(_ id: String) -> Volume {
        Volume(image: "\(layerImages)/\(id).img", mountPoint: "\(layerMounts)/\(id)", readOnly: true)
    }

    func layerTree(_ layer: LayerRecord) -> String { "\(layerMounts)/\(layer.id)/\(layer.tree)" }
}

/// The overlay mount that makes a forked project's workspace: its layers read-only below,
/// its own changes in `upper/` of its own volume (its cap), merged at `workspace/`, where a
/// plain project's tree would be, so everything that reads the workspace path (sandbox,
/// file tools, write-back) works unchanged.
enum Overlay {
    /// The deepest stack one overlay mount takes: the lower paths must fit the mount options
    /// (one page), and each fork of a fork with changes adds one layer.
    static let maxLayers = 32

    static func upper(_ volume: Volume) -> String { volume.mountPoint + "/upper" }
    static func work(_ volume: Volume) -> String { volume.mountPoint + "/work" }

    /// Makes `upper/`, `work/` and the empty `workspace/` mount point in a freshly mounted
    /// volume, then mounts the overlay. Blocking.
    static func prepare(_ volume: Volume, lowers: [String]) throws(CacheError) {
        for dir in [upper(volume), work(volume), volume.workspace] {
            try sys("mkdir(\(dir))") { mkdir(dir, 0o755) }
        }
        try mount(volume, lowers: lowers)
    }

    /// Mounts the overlay of `lowers` (layer trees, top first) and the volume's upper tree
    /// at its `workspace/`. `nosuid,nodev`, and none of the features that would make the
    /// kernel trust more of the upper tree's xattrs than whiteouts and opaque directories:
    /// no `metacopy`, no `redirect_dir`, no index. Blocking.
    static func mount(_ volume: Volume, lowers: [String]) throws(CacheError) {
        guard !lowers.isEmpty, lowers.count <= maxLayers else {
            throw .volume("an overlay takes 1 to \(maxLayers) layers, not \(lowers.count)")
        }
        for path in lowers + [volume.mountPoint] where path.contains(where: { ":,\\".contains($0) }) {
            throw .volume("\(path) holds a character overlay options cannot carry (: , \\)")
        }
        let options =
            "lowerdir=\(lowers.joined(separator: ":")),upperdir=\(upper(volume)),workdir=\(work(volume)),"
            + "redirect_dir=off,metacopy=off,index=off,xino=off"
        let flags = UInt(MS_NOSUID) | UInt(MS_NODEV)
        try sys("mount(overlay \(volume.workspace))") {
            Glibc.mount("overlay", volume.workspace, "overlay", flags, options)
        }
    }

    /// Unmounts the overlay at the volume's `workspace/` if one is there. Never lazily: a
    /// file open on it fails with ``CacheError/busy(_:)`` and the overlay stays. Blocking.
    static func unmount(_ volume: Volume) throws(CacheError) {
        guard isMounted(volume) else { return }
        if umount2(volume.workspace, Int32(UMOUNT_NOFOLLOW)) != 0 {
            let e = errno
            if e == EBUSY { throw .busy("the forked workspace at \(volume.workspace) is in use on the host") }
            throw .volume("\(SystemError("umount(\(volume.workspace))", errno: e))")
        }
    }

    /// Whether an overlay is mounted at the volume's `workspace/`.
    static func isMounted(_ volume: Volume) -> Bool {
        let target = MountTable.realPath(volume.workspace)
        return ((try? MountTable.read()) ?? []).contains { $0.mountPoint == target && $0.fstype == "overlay" }
    }

    /// Whether the volume's upper tree is empty: nothing was changed over the layers since
    /// the overlay was made, so a fork can share the same stack without freezing anything.
    static func upperIsEmpty(_ volume: Volume) -> Bool {
        guard let dir = opendir(upper(volume)) else { return false }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { return false }
        }
        return true
    }
}
