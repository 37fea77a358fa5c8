import CArchive
import Glibc
import Sandbox

/// A fingerprint of a workspace's metadata, used to tell whether an agent changed it.
///
/// Every entry contributes its path, type, size, mode, inode, mtime and **ctime**. ctime is
/// what makes this reliable: the kernel sets it on every content, mode, link or rename
/// change and no unprivileged call can set it back, so a `touch -d` that restores an old
/// mtime still shows up. Cost: one `fstatat` per entry, no file content read.
public struct ManifestSummary: Sendable, Equatable {
    /// Hex SHA-256 over the sorted entry lines.
    public var digest: String
    public var entries: Int
    /// Allocated bytes (hardlinked inodes counted once).
    public var diskBytes: Int64
}

/// One entry met while walking a workspace.
struct WalkEntry {
    /// Relative path bytes (`/`-separated, no NUL), exactly as on disk.
    let path: [UInt8]
    let parent: Int32
    let name: FileName
    var st: stat

    var displayPath: String { String(decoding: path, as: UTF8.self) }
}

/// Walks a tree in sorted order without following symlinks, at any depth (``WorkspaceWalk``).
///
/// The manifest scan (dirty detection, disk use) and the packer share this walk, so a tree
/// that can be fingerprinted can be packed, and the other way round.
enum Walker {
    static func walk(_ root: String, _ visit: (inout WalkEntry) throws(CacheError) -> Void) throws(CacheError) {
        let fd = try sys("open(\(root))") { open(root, SafeTree.dirFlags) }
        defer { close(fd) }
        try WorkspaceWalk.run(root: fd) { (parent, name, path) throws(CacheError) -> WorkspaceWalk.Step in
            var st = stat()
            // Entries a running job deletes mid-walk are simply not there any more.
            if fstatat(parent, name.cString, &st, AT_SYMLINK_NOFOLLOW) != 0 { return .skip }
            var entry = WalkEntry(path: path, parent: parent, name: name, st: st)
            try visit(&entry)
            return entry.st.st_mode & S_IFMT == S_IFDIR ? .descend : .skip
        }
    }
}

/// Accumulates a ``ManifestSummary`` entry by entry.
struct ManifestBuilder {
    private var hasher = SHA256()
    private var entries = 0
    private var disk: Int64 = 0
    private var seen: Set<UInt64> = []

    mutating func add(_ path: [UInt8], _ st: stat) {
        let line =
            "\u{0}\(st.st_mode)\u{0}\(st.st_size)\u{0}\(st.st_ino)\u{0}"
            + "\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)\u{0}\(st.st_ctim.tv_sec).\(st.st_ctim.tv_nsec)\n"
        hasher.update(path)
        hasher.update(Array(line.utf8))
        entries += 1
        if st.st_nlink <= 1 || seen.insert(UInt64(st.st_ino)).inserted { disk += Int64(st.st_blocks) * 512 }
    }

    mutating func finish() -> ManifestSummary {
        ManifestSummary(digest: hasher.finalize().hexString, entries: entries, diskBytes: disk)
    }
}

enum Manifest {
    /// Fingerprints the tree at `root`. Blocking.
    static func scan(_ root: String) throws(CacheError) -> ManifestSummary {
        var builder = ManifestBuilder()
        try Walker.walk(root) { (entry: inout WalkEntry) throws(CacheError) in builder.add(entry.path, entry.st) }
        return builder.finish()
    }
}
