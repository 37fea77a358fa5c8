import CArchive
import Glibc
import Sandbox

/// Caps that stop a hostile or broken archive before it fills the disk.
///
/// A project's own snapshots are packed and restored under one value of these (see
/// `ProjectCache.snapshotLimits(quota:)`), so whatever write-back saves, restore accepts.
public struct ExtractionLimits: Sendable, Equatable {
    /// Bytes of file data written (holes of sparse files excluded) plus the bytes of every
    /// entry's path and link target.
    public var maxBytes: Int64
    /// Number of archive entries (files, directories, links).
    public var maxEntries: Int
    /// Extracted bytes per archive byte; checked once ``ratioAllowance`` bytes are out, so
    /// a small, very compressible project is never mistaken for a bomb. `.infinity`: off.
    public var maxCompressionRatio: Double
    public var ratioAllowance: Int64
    /// Path components per entry.
    public var maxDepth: Int
    /// Bytes of one entry's path, and of one link target. libarchive refuses a tar header
    /// over 1 MiB when reading, so the packer must never write one: path and target
    /// together stay well under it.
    public var maxPathBytes: Int

    public init(
        maxBytes: Int64 = 16 << 30, maxEntries: Int = 1_000_000, maxCompressionRatio: Double = 200,
        ratioAllowance: Int64 = 64 << 20, maxDepth: Int = 256, maxPathBytes: Int = 256 << 10
    ) {
        self.maxBytes = maxBytes
        self.maxEntries = maxEntries
        self.maxCompressionRatio = maxCompressionRatio
        self.ratioAllowance = ratioAllowance
        self.maxDepth = maxDepth
        self.maxPathBytes = maxPathBytes
    }
}

/// What an extraction produced.
public struct ExtractionReport: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    public var hardlinks = 0
    /// Bytes of file content written (holes of sparse files are not written).
    public var bytes: Int64 = 0
    /// Entries whose setuid, setgid or sticky bits were dropped.
    public var strippedModes = 0

    public init() {}
}

/// Hardened archive extraction with libarchive: zip, tar (ustar, pax, GNU), each raw or
/// compressed with gzip, bzip2, xz or zstd.
///
/// The rules (docs/THREATS.md, "Bad archives, paths and snapshots"):
/// - absolute paths and `..` components are rejected, never rewritten;
/// - every directory is entered with `openat(O_NOFOLLOW | O_DIRECTORY)` and every file is
///   created with `O_CREAT | O_EXCL | O_NOFOLLOW`, so a symlink the archive planted earlier
///   is never followed (a later entry at the same name replaces the link itself);
/// - symlinks are recreated as they are (the sandbox resolves them inside its own root, and
///   host code never follows them); hardlinks must point at a regular file extracted earlier;
/// - sparse files get their holes back (`ftruncate` and writes at offsets), and only the
///   data written counts against the byte cap;
/// - device nodes, FIFOs and sockets are rejected; setuid, setgid and sticky bits are dropped;
///   ownership is never taken from the archive;
/// - only the tar and zip readers and in-process decompressors are enabled: libarchive's
///   other readers include mtree, whose entries can name host files, and some filters
///   fall back to running external programs.
///
/// Extraction goes into a fresh directory the caller renames into place on success and
/// removes on failure, so nothing half-extracted is ever visible.
public enum Extractor {
    /// Extracts `archive` into the empty directory `directory`. Blocking: call it from a
    /// dedicated thread.
    public static func extract(archive: String, into directory: String, limits: ExtractionLimits = .init())
        throws(CacheError) -> ExtractionReport
    {
        var st = stat()
        try sys("stat(\(archive))") { stat(archive, &st) }
        let root = try sys("open(\(directory))") { open(directory, SafeTree.dirFlags) }
        defer { close(root) }
        guard let a = archive_read_new() else { throw .system(SystemError("archive_read_new", errno: ENOMEM)) }
        defer { archive_read_free(a) }
        archive_read_support_format_tar(a)
        archive_read_support_format_zip(a)
        archive_read_support_filter_gzip(a)
        archive_read_support_filter_bzip2(a)
        archive_read_support_filter_xz(a)
        archive_read_support_filter_zstd(a)
        if archive_read_open_filename(a, archive, 1 << 16) != ARCHIVE_OK {
            throw .corruptArchive(errorString(a))
        }
        let run = ExtractionRun(archive: a, root: root, limits: limits, archiveSize: Int64(st.st_size))
        defer { run.closeAll() }
        try run.entries()
        try run.finishDirectories()
        return run.report
    }

    static func errorString(_ a: OpaquePointer) -> String {
        archive_error_string(a).map { String(cString: $0) } ?? "unreadable archive"
    }

    /// A failed archive write as the error it is: the disk (or the volume) was full or the
    /// file could not be written, which is the host's condition, not a bad archive.
    static func writeError(_ a: OpaquePointer, _ what: String) -> CacheError {
        let code = archive_errno(a)
        guard [ENOSPC, EDQUOT, EFBIG, EIO, EROFS].contains(code) else {
            return .corruptArchive("\(what): \(errorString(a))")
        }
        return .system(SystemError(what, errno: code))
    }

    /// The components of an entry path (raw bytes, see ``FileName``), or why it is unsafe.
    static func components(_ raw: [UInt8], limits: ExtractionLimits, role: String = "path") throws(CacheError)
        -> [FileName]
    {
        let shown = String(decoding: raw, as: UTF8.self)
        if raw.first == 0x2f { throw .unsafeEntry(path: shown, reason: "absolute \(role)") }
        let parts = raw.split(separator: 0x2f).filter { $0.elementsEqual([0x2e]) == false }.map { FileName(Array($0)) }
        if parts.contains(FileName([0x2e, 0x2e])) { throw .unsafeEntry(path: shown, reason: "\(role) contains '..'") }
        if parts.contains(where: { $0.bytes.count > 255 }) { throw .unsafeEntry(path: shown, reason: "name too long") }
        if parts.count > limits.maxDepth { throw .unsafeEntry(path: shown, reason: "nested too deeply") }
        return parts
    }
}

/// The bytes of a C string from libarchive.
private func bytes(_ c: UnsafePointer<CChar>) -> [UInt8] {
    Array(UnsafeRawBufferPointer(start: c, count: strlen(c)))
}

private let typeMask: UInt32 = 0o170_000
private let typeRegular: UInt32 = 0o100_000
private let typeDirectory: UInt32 = 0o040_000
private let typeSymlink: UInt32 = 0o120_000
private let typeCharDevice: UInt32 = 0o020_000
private let typeBlockDevice: UInt32 = 0o060_000
private let typeFIFO: UInt32 = 0o010_000
private let typeSocket: UInt32 = 0o140_000

/// The state of one extraction: open directories, counters, deferred directory metadata.
private final class ExtractionRun {
    let a: OpaquePointer
    let limits: ExtractionLimits
    let archiveSize: Int64
    var report = ExtractionReport()
    var budget: ArchiveBudget
    var tree: DirectoryTree
    /// Directory nodes whose mode and times are applied last.
    var deferred: [(node: Int, perm: mode_t, mtime: timespec?)] = []
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)

    init(archive: OpaquePointer, root: Int32, limits: ExtractionLimits, archiveSize: Int64) {
        self.a = archive
        self.limits = limits
        self.archiveSize = max(1, archiveSize)
        self.budget = ArchiveBudget(limits, subject: "archive")
        self.tree = DirectoryTree(root: root)
    }

    deinit { buffer.deallocate() }

    func closeAll() { tree.closeAll() }

    func entries() throws(CacheError) {
        var entry: OpaquePointer?
        while true {
            let rc = archive_read_next_header(a, &entry)
            if rc == ARCHIVE_EOF { return }
            guard rc == ARCHIVE_OK || rc == ARCHIVE_WARN, let entry else {
                throw .corruptArchive(Extractor.errorString(a))
            }
            try extract(entry)
        }
    }

    func extract(_ entry: OpaquePointer) throws(CacheError) {
        guard let cPath = archive_entry_pathname(entry) ?? archive_entry_pathname_utf8(entry) else {
            throw .corruptArchive("entry \(budget.entries + 1) has no readable name")
        }
        let rawBytes = bytes(cPath)
        let raw = String(decoding: rawBytes, as: UTF8.self)
        let linkBytes = (archive_entry_hardlink(entry) ?? archive_entry_symlink(entry)).map { strlen($0) } ?? 0
        // The same count, in the same order, as the packer's (ArchiveBudget).
        try budget.entry(rawBytes, link: linkBytes)
        // Bounded descriptor cache; trimmed only between entries, so no lookup loses its fds.
        tree.trim()
        let parts = try Extractor.components(rawBytes, limits: limits)
        guard let name = parts.last else { return }  // "./" itself: the root exists already
        let type = UInt32(archive_entry_filetype(entry)) & typeMask
        let perm = mode_t(archive_entry_perm(entry))
        if perm & 0o7000 != 0 { report.strippedModes += 1 }
        let mtime: timespec? =
            archive_entry_mtime_is_set(entry) != 0
            ? timespec(tv_sec: Int(archive_entry_mtime(entry)), tv_nsec: Int(archive_entry_mtime_nsec(entry))) : nil

        if let link = archive_entry_hardlink(entry) {
            try hardlink(parts, to: bytes(link), raw: raw)
            return
        }
        switch type {
        case typeDirectory:
            deferred.append((try tree.node(parts[...], create: true, raw: raw), perm, mtime))
            report.directories += 1
        case typeRegular:
            let parent = try directory(parts.dropLast(), create: true, raw: raw)
            try file(parent, name, raw: raw, entry: entry, perm: perm & 0o777, mtime: mtime)
            report.files += 1
        case typeSymlink:
            guard let target = archive_entry_symlink(entry), target.pointee != 0 else {
                throw .corruptArchive("symlink \(raw) has no target")
            }
            let parent = try directory(parts.dropLast(), create: true, raw: raw)
            let c = name.cString
            try create(parent, name, raw: raw) { symlinkat(target, parent, c) }
            if let mtime { setTimes(parent, name, mtime, flags: AT_SYMLINK_NOFOLLOW) }
            report.symlinks += 1
        case typeCharDevice, typeBlockDevice: throw .unsafeEntry(path: raw, reason: "device node")
        case typeFIFO: throw .unsafeEntry(path: raw, reason: "FIFO")
        case typeSocket: throw .unsafeEntry(path: raw, reason: "socket")
        default: throw .unsafeEntry(path: raw, reason: "unsupported entry type \(String(type, radix: 8))")
        }
    }

    // MARK: - Entry kinds

    func file(_ parent: Int32, _ name: FileName, raw: String, entry: OpaquePointer, perm: mode_t, mtime: timespec?)
        throws(CacheError)
    {
        if archive_entry_size_is_set(entry) != 0, !budget.fits(dataSize(entry)) {
            throw .tooLarge("\(raw) declares \(dataSize(entry)) bytes, over the \(limits.maxBytes)-byte cap")
        }
        var fd: Int32 = -1
        let c = name.cString
        try create(parent, name, raw: raw) {
            fd = openat(parent, c, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
            return fd
        }
        defer { close(fd) }
        // Blocks come with their offsets: a gap between them is a hole, left unwritten.
        while true {
            var block: UnsafeRawPointer?
            var size = 0
            var offset: la_int64_t = 0
            let rc = archive_read_data_block(a, &block, &size, &offset)
            if rc == ARCHIVE_EOF { break }
            if rc < ARCHIVE_WARN { throw .corruptArchive("\(raw): \(Extractor.errorString(a))") }
            guard size > 0, let block else { continue }
            report.bytes += Int64(size)
            try budget.add(Int64(size), at: raw)
            try checkRatio()
            var done = 0
            while done < size {
                done += try sys("pwrite(\(raw))") { pwrite(fd, block + done, size - done, off_t(offset) + done) }
            }
        }
        // A trailing hole (or a file that is all hole) is the size, not written data.
        if archive_entry_size_is_set(entry) != 0 {
            try sys("ftruncate(\(raw))") { ftruncate(fd, off_t(archive_entry_size(entry))) }
        }
        try sys("fchmod(\(raw))") { fchmod(fd, perm) }
        if let mtime { withTimes(mtime) { _ = futimens(fd, $0) } }
    }

    /// The bytes of data an entry carries: its size, or for a sparse file the sum of its
    /// data regions (its apparent size is mostly holes that cost nothing).
    func dataSize(_ entry: OpaquePointer) -> Int64 {
        guard archive_entry_sparse_reset(entry) > 0 else { return archive_entry_size(entry) }
        var total: Int64 = 0
        var offset: la_int64_t = 0
        var length: la_int64_t = 0
        while archive_entry_sparse_next(entry, &offset, &length) == ARCHIVE_OK { total += length }
        return total
    }

    func checkRatio() throws(CacheError) {
        if report.bytes > limits.ratioAllowance,
            Double(report.bytes) > limits.maxCompressionRatio * Double(archiveSize)
        {
            throw .tooLarge("compression ratio above \(Int(limits.maxCompressionRatio)):1 (zip bomb?)")
        }
    }

    func hardlink(_ parts: [FileName], to linkBytes: [UInt8], raw: String) throws(CacheError) {
        let link = String(decoding: linkBytes, as: UTF8.self)
        let target = try Extractor.components(linkBytes, limits: limits, role: "hardlink target")
        guard let targetName = target.last else {
            throw .unsafeEntry(path: raw, reason: "hardlink to the project root")
        }
        let targetParent: Int32
        do throws(CacheError) {
            targetParent = try tree.descriptor(tree.node(target.dropLast(), create: false, raw: link), raw: link)
        } catch {
            throw .unsafeEntry(path: raw, reason: "hardlink target \(link) is not in the archive")
        }
        var st = stat()
        let targetC = targetName.cString
        guard fstatat(targetParent, targetC, &st, AT_SYMLINK_NOFOLLOW) == 0, st.st_mode & S_IFMT == S_IFREG else {
            throw .unsafeEntry(path: raw, reason: "hardlink target \(link) is not a file extracted earlier")
        }
        let parent = try directory(parts.dropLast(), create: true, raw: raw)
        let c = parts.last!.cString
        try create(parent, parts.last!, raw: raw) { linkat(targetParent, targetC, parent, c, 0) }
        report.hardlinks += 1
    }

    /// Runs a creating call; if the name exists, removes it (a later entry wins, as in tar)
    /// unless it is a directory, then retries once. Never follows what it replaces.
    func create(_ parent: Int32, _ name: FileName, raw: String, _ call: () -> Int32) throws(CacheError) {
        if call() >= 0 { return }
        guard errno == EEXIST else { throw .system(SystemError("create(\(raw))", errno: errno)) }
        var st = stat()
        let c = name.cString
        if fstatat(parent, c, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_mode & S_IFMT == S_IFDIR {
            throw .unsafeEntry(path: raw, reason: "would replace a directory")
        }
        try sys("unlinkat(\(raw))") { unlinkat(parent, c, 0) }
        try sys("create(\(raw))") { call() }
    }

    /// The descriptor of the directory `parts`, walking (and creating) one component at a
    /// time without following symlinks.
    func directory(_ parts: ArraySlice<FileName>, create: Bool, raw: String) throws(CacheError) -> Int32 {
        try tree.descriptor(tree.node(parts, create: create, raw: raw), raw: raw)
    }

    /// Applies directory modes and times last: creating entries inside a directory changes
    /// its mtime, and a read-only mode would block the entries that follow.
    func finishDirectories() throws(CacheError) {
        for (node, perm, mtime) in deferred.reversed() {
            tree.trim()
            let fd = try tree.descriptor(node, raw: tree.nodes[node].name.description)
            // The owner keeps rwx so the project stays usable and removable.
            fchmod(fd, (perm & 0o777) | 0o700)
            if let mtime { withTimes(mtime) { _ = futimens(fd, $0) } }
        }
    }

    func setTimes(_ parent: Int32, _ name: FileName, _ mtime: timespec, flags: Int32) {
        let c = name.cString
        withTimes(mtime) { _ = utimensat(parent, c, $0, flags) }
    }

    func withTimes(_ mtime: timespec, _ body: (UnsafePointer<timespec>) -> Void) {
        let times = [mtime, mtime]
        times.withUnsafeBufferPointer { body($0.baseAddress!) }
    }
}
