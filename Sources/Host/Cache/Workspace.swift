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

/// What a snapshot contains.
public struct PackReport: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    /// FIFOs, sockets and device nodes left out.
    public var skipped = 0
    public var bytes: Int64 = 0
}

/// Packs a workspace into a pax tar compressed with zstd, for write-back.
///
/// Symlinks are stored as symlinks and never followed; regular files are opened with
/// `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat`, so a job that swaps a file for a
/// FIFO or a link mid-walk can neither hang the host nor leak a host file into the
/// snapshot. Special files are skipped. The manifest returned describes exactly the
/// metadata that was packed, so it becomes the new clean baseline.
enum Packer {
    static func pack(_ root: String, to archivePath: String) throws(CacheError) -> (ManifestSummary, PackReport) {
        let out = try sys("open(\(archivePath))") {
            open(archivePath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        }
        defer { close(out) }
        guard let a = archive_write_new() else { throw .system(SystemError("archive_write_new", errno: ENOMEM)) }
        defer { archive_write_free(a) }
        archive_write_set_format_pax_restricted(a)
        guard archive_write_add_filter_zstd(a) == ARCHIVE_OK, archive_write_open_fd(a, out) == ARCHIVE_OK else {
            throw .corruptArchive("cannot start snapshot: \(Extractor.errorString(a))")
        }
        guard let e = archive_entry_new() else { throw .system(SystemError("archive_entry_new", errno: ENOMEM)) }
        defer { archive_entry_free(e) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { buffer.deallocate() }
        var manifest = ManifestBuilder()
        var report = PackReport()

        try Walker.walk(root) { (entry: inout WalkEntry) throws(CacheError) in
            archive_entry_clear(e)
            archive_entry_set_pathname(e, entry.path.map { CChar(bitPattern: $0) } + [0])
            var fd: Int32 = -1
            defer { if fd >= 0 { close(fd) } }
            switch entry.st.st_mode & S_IFMT {
            case S_IFDIR:
                archive_entry_set_filetype(e, cor_ae_ifdir)
                report.directories += 1
            case S_IFLNK:
                guard let target = readLink(entry.parent, entry.name) else { return }
                archive_entry_set_filetype(e, cor_ae_iflnk)
                target.withUnsafeBufferPointer { archive_entry_set_symlink(e, $0.baseAddress) }
                report.symlinks += 1
            case S_IFREG:
                fd = openat(entry.parent, entry.name.cString, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
                guard fd >= 0, fstat(fd, &entry.st) == 0, entry.st.st_mode & S_IFMT == S_IFREG else { return }
                archive_entry_set_filetype(e, cor_ae_ifreg)
                archive_entry_set_size(e, la_int64_t(entry.st.st_size))
                report.files += 1
            default:
                report.skipped += 1
                return
            }
            archive_entry_set_perm(e, entry.st.st_mode & 0o777)
            archive_entry_set_mtime(e, time_t(entry.st.st_mtim.tv_sec), Int(entry.st.st_mtim.tv_nsec))
            guard archive_write_header(a, e) >= ARCHIVE_WARN else {
                throw .corruptArchive("snapshot of \(entry.displayPath): \(Extractor.errorString(a))")
            }
            manifest.add(entry.path, entry.st)
            if fd >= 0 {
                report.bytes += try copy(fd, size: Int64(entry.st.st_size), into: a, buffer, entry.displayPath)
            }
        }
        guard archive_write_close(a) == ARCHIVE_OK else {
            throw .corruptArchive("cannot finish snapshot: \(Extractor.errorString(a))")
        }
        try sys("fsync(\(archivePath))") { fsync(out) }
        return (manifest.finish(), report)
    }

    /// Copies at most `size` bytes (what the header promised). A file that shrank meanwhile
    /// is padded by libarchive; its changed ctime marks the workspace dirty again.
    private static func copy(
        _ fd: Int32, size: Int64, into a: OpaquePointer, _ buffer: UnsafeMutableRawBufferPointer, _ path: String
    ) throws(CacheError) -> Int64 {
        var done: Int64 = 0
        while done < size {
            let want = Int(min(Int64(buffer.count), size - done))
            let n = try sys("read(\(path))") { read(fd, buffer.baseAddress, want) }
            if n == 0 { break }
            guard archive_write_data(a, buffer.baseAddress, n) == n else {
                throw .corruptArchive("snapshot of \(path): \(Extractor.errorString(a))")
            }
            done += Int64(n)
        }
        return done
    }

    /// The raw, NUL-terminated target bytes (not necessarily UTF-8).
    private static func readLink(_ parent: Int32, _ name: FileName) -> [CChar]? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(parent, name.cString, &buffer, buffer.count - 1)
        guard n >= 0 else { return nil }
        return Array(buffer[0...n])
    }
}
