import CArchive
import Glibc
import Sandbox

/// What a snapshot contains.
public struct PackReport: Sendable, Equatable {
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    /// Further names of a file already packed, stored as tar hard-link entries.
    public var hardlinks = 0
    /// FIFOs, sockets and device nodes left out.
    public var skipped = 0
    /// Bytes of file data packed (holes of sparse files are not data).
    public var bytes: Int64 = 0
}

/// Packs a workspace into a pax tar compressed with zstd, for write-back.
///
/// Symlinks are stored as symlinks and never followed; regular files are opened with
/// `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat`, so a job that swaps a file for a
/// FIFO or a link mid-walk can neither hang the host nor leak a host file into the
/// snapshot. Special files are skipped. The manifest returned describes exactly the
/// metadata that was packed, so it becomes the new clean baseline.
///
/// A file with several names is stored once: the first name met (in walk order, which is
/// archive order) carries the data, the others are hard-link entries to it, which the
/// extractor accepts because the target was extracted earlier. Sparse files are stored as
/// pax sparse entries (data regions found with `SEEK_DATA`/`SEEK_HOLE`), so holes cost
/// neither host CPU nor archive bytes. Everything is counted with ``ArchiveBudget`` under
/// the limits restore will apply, and packing stops at the first entry over them.
enum Packer {
    /// Packs the tree at `root` into `archivePath`. `maxArchiveBytes` is the largest
    /// archive restore will download. Blocking.
    static func pack(_ root: String, to archivePath: String, limits: ExtractionLimits, maxArchiveBytes: Int64)
        throws(CacheError) -> (ManifestSummary, PackReport)
    {
        let out = try sys("open(\(archivePath))") {
            open(archivePath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        }
        defer { close(out) }
        guard let a = archive_write_new() else { throw .system(SystemError("archive_write_new", errno: ENOMEM)) }
        defer { archive_write_free(a) }
        archive_write_set_format_pax_restricted(a)
        guard archive_write_add_filter_zstd(a) == ARCHIVE_OK, archive_write_open_fd(a, out) == ARCHIVE_OK else {
            throw Extractor.writeError(a, "cannot start snapshot")
        }
        guard let e = archive_entry_new() else { throw .system(SystemError("archive_entry_new", errno: ENOMEM)) }
        defer { archive_entry_free(e) }
        var run = PackRun(archive: a, entry: e, out: out, budget: ArchiveBudget(limits, subject: "snapshot"))
        run.maxArchiveBytes = maxArchiveBytes
        defer {
            run.buffer.deallocate()
            run.zero.deallocate()
        }
        try Walker.walk(root) { (entry: inout WalkEntry) throws(CacheError) in try run.add(&entry) }
        guard archive_write_close(a) == ARCHIVE_OK else {
            throw Extractor.writeError(a, "cannot finish snapshot")
        }
        try sys("fsync(\(archivePath))") { fsync(out) }
        return (run.manifest.finish(), run.report)
    }
}

/// `lseek` whences from <unistd.h> that Glibc exports only under `_GNU_SOURCE`; Linux ABI values.
private let seekData: Int32 = 3
private let seekHole: Int32 = 4

/// A file's identity, to recognise its other names.
private struct Inode: Hashable {
    let dev: UInt64
    let ino: UInt64
}

/// The state of one pack.
private struct PackRun {
    let a: OpaquePointer
    let e: OpaquePointer
    let out: Int32
    var budget: ArchiveBudget
    var maxArchiveBytes: Int64 = .max
    var manifest = ManifestBuilder()
    var report = PackReport()
    /// The archive path of each multiply-linked file already packed.
    var linked: [Inode: [UInt8]] = [:]
    /// File data on its way into the archive.
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
    /// Zeros, never written to: fed for holes (libarchive skips them, so they cost no copy)
    /// and for padding.
    let zero: UnsafeMutableRawBufferPointer = {
        let zero = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        memset(zero.baseAddress!, 0, zero.count)
        return zero
    }()

    init(archive: OpaquePointer, entry: OpaquePointer, out: Int32, budget: ArchiveBudget) {
        self.a = archive
        self.e = entry
        self.out = out
        self.budget = budget
    }

    mutating func add(_ entry: inout WalkEntry) throws(CacheError) {
        archive_entry_clear(e)
        archive_entry_set_pathname(e, entry.path.map { CChar(bitPattern: $0) } + [0])
        var fd: Int32 = -1
        defer { if fd >= 0 { close(fd) } }
        var regions: [(offset: Int64, length: Int64)] = []
        switch entry.st.st_mode & S_IFMT {
        case S_IFDIR:
            try budget.entry(entry.path)
            archive_entry_set_filetype(e, cor_ae_ifdir)
            report.directories += 1
        case S_IFLNK:
            guard let target = readLink(entry.parent, entry.name) else { return }
            try budget.entry(entry.path, link: target.count - 1)
            archive_entry_set_filetype(e, cor_ae_iflnk)
            target.withUnsafeBufferPointer { archive_entry_set_symlink(e, $0.baseAddress) }
            report.symlinks += 1
        case S_IFREG:
            fd = openat(entry.parent, entry.name.cString, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
            guard fd >= 0, fstat(fd, &entry.st) == 0, entry.st.st_mode & S_IFMT == S_IFREG else { return }
            archive_entry_set_filetype(e, cor_ae_ifreg)
            let inode = Inode(dev: UInt64(entry.st.st_dev), ino: UInt64(entry.st.st_ino))
            if entry.st.st_nlink > 1, let first = linked[inode] {
                try budget.entry(entry.path, link: first.count)
                archive_entry_set_hardlink(e, first.map { CChar(bitPattern: $0) } + [0])
                archive_entry_set_size(e, 0)
                close(fd)
                fd = -1
                report.hardlinks += 1
                break
            }
            try budget.entry(entry.path)
            let size = Int64(entry.st.st_size)
            regions = Self.dataRegions(fd, size: size)
            let data = regions.reduce(0) { $0 + $1.length }
            guard budget.fits(data) else {
                throw budget.over(by: data - (budget.limits.maxBytes - budget.bytes), at: entry.displayPath)
            }
            archive_entry_set_size(e, la_int64_t(size))
            if regions.count != 1 || regions.first?.length != size, size > 0 {
                for r in regions { archive_entry_sparse_add_entry(e, r.offset, r.length) }
                // A file that is all hole still needs a map, or it would be packed as zeros.
                if regions.isEmpty { archive_entry_sparse_add_entry(e, size, 0) }
            }
            if entry.st.st_nlink > 1 { linked[inode] = entry.path }
            report.files += 1
        default:
            report.skipped += 1
            return
        }
        archive_entry_set_perm(e, entry.st.st_mode & 0o777)
        archive_entry_set_mtime(e, time_t(entry.st.st_mtim.tv_sec), Int(entry.st.st_mtim.tv_nsec))
        guard archive_write_header(a, e) >= ARCHIVE_WARN else {
            throw Extractor.writeError(a, "snapshot of \(entry.displayPath)")
        }
        manifest.add(entry.path, entry.st)
        if fd >= 0 { try copy(fd, size: Int64(entry.st.st_size), regions, entry.displayPath) }
        try checkArchiveSize(entry.displayPath)
    }

    /// Writes the file's logical content: data regions read from `fd`, holes as zeros
    /// libarchive skips (the sparse map already says where they are). A file that shrank
    /// meanwhile is padded with zeros to what the header promised; its changed ctime keeps
    /// the workspace dirty.
    mutating func copy(_ fd: Int32, size: Int64, _ regions: [(offset: Int64, length: Int64)], _ path: String)
        throws(CacheError)
    {
        var position: Int64 = 0
        for region in regions {
            try zeros(region.offset - position, path)
            position = region.offset
            let end = region.offset + region.length
            while position < end {
                let want = Int(min(Int64(buffer.count), end - position))
                let n = try sys("pread(\(path))") { pread(fd, buffer.baseAddress, want, off_t(position)) }
                if n == 0 {
                    try zeros(size - position, path)
                    return
                }
                try write(n, path)
                position += Int64(n)
                try checkArchiveSize(path)
            }
        }
        try zeros(size - position, path)
    }

    private mutating func zeros(_ count: Int64, _ path: String) throws(CacheError) {
        var left = count
        while left > 0 {
            let n = Int(min(Int64(zero.count), left))
            guard archive_write_data(a, zero.baseAddress, n) == n else {
                throw Extractor.writeError(a, "snapshot of \(path)")
            }
            left -= Int64(n)
        }
    }

    private mutating func write(_ n: Int, _ path: String) throws(CacheError) {
        try budget.add(Int64(n), at: path)
        guard archive_write_data(a, buffer.baseAddress, n) == n else {
            throw Extractor.writeError(a, "snapshot of \(path)")
        }
        report.bytes += Int64(n)
    }

    /// Restore downloads at most `maxArchiveBytes`: a larger snapshot could never come back.
    private func checkArchiveSize(_ path: String) throws(CacheError) {
        var st = stat()
        guard fstat(out, &st) == 0, Int64(st.st_size) > maxArchiveBytes else { return }
        throw .tooLarge(
            "snapshot archive passes the \(maxArchiveBytes)-byte download limit"
                + " (at least \(Int64(st.st_size) - maxArchiveBytes) bytes over, at \(path))")
    }

    /// The data regions of a file, by `SEEK_DATA`/`SEEK_HOLE`; one region when the
    /// filesystem cannot tell (then the file is simply stored whole).
    static func dataRegions(_ fd: Int32, size: Int64) -> [(offset: Int64, length: Int64)] {
        var regions: [(offset: Int64, length: Int64)] = []
        var offset: Int64 = 0
        while offset < size {
            let data = Int64(lseek(fd, off_t(offset), seekData))
            if data < 0 {
                if errno == ENXIO { break }
                return [(0, size)]
            }
            if data >= size { break }
            var hole = Int64(lseek(fd, off_t(data), seekHole))
            if hole < 0 || hole > size { hole = size }
            regions.append((offset: data, length: hole - data))
            offset = hole
        }
        return regions
    }

    /// The raw, NUL-terminated target bytes (not necessarily UTF-8).
    private func readLink(_ parent: Int32, _ name: FileName) -> [CChar]? {
        var target = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlinkat(parent, name.cString, &target, target.count - 1)
        guard n >= 0 else { return nil }
        return Array(target[0...n])
    }
}
