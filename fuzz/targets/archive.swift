// libFuzzer target: Extractor.extract, which turns an uploaded or downloaded archive (tar,
// tar.gz, tar.zst, zip, ...) into a project's files. Beyond "no crash, no hang, no leak",
// each run checks what the extractor promises whether it succeeds or refuses:
// - nothing lands outside the directory it extracts into;
// - no device node, FIFO or socket is made, and no setuid, setgid or sticky bit survives;
// - on success, the tree holds no more files and symlinks than the report counts (directories
//   are made for entries' parents too, so they are not counted).
import Glibc

/// A scratch directory on tmpfs per process: the archive goes into `input`, the extraction
/// into `root/out`, and `root` must hold nothing but `out` afterwards.
private let scratch: (input: String, root: String) = {
    let base = "/dev/shm/corral-fuzz-archive-\(getpid())"
    mkdir(base, 0o700)
    mkdir(base + "/root", 0o700)
    atexit { removeTree("/dev/shm/corral-fuzz-archive-\(getpid())") }
    return (base + "/input", base + "/root")
}()

private let limits = ExtractionLimits(
    maxBytes: 1 << 20, maxEntries: 2000, maxCompressionRatio: 200, ratioAllowance: 256 << 10, maxDepth: 64,
    maxPathBytes: 4096)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzArchive(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let (input, root) = scratch
    let out = root + "/out"
    let fd = open(input, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    precondition(fd >= 0, "open \(input): \(errno)")
    precondition(write(fd, data, size) == size)
    close(fd)
    precondition(mkdir(out, 0o700) == 0, "mkdir \(out): \(errno)")
    defer { removeTree(out) }

    let report = try? Extractor.extract(archive: input, into: out, limits: limits)

    let left = entries(of: root)
    if left != ["out"] { fatalError("extraction wrote outside its directory: \(left)") }
    var counts = (files: 0, directories: 0, symlinks: 0)
    let top = open(out, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    walk(top, out) { name, st in
        switch st.st_mode & S_IFMT {
        case S_IFREG: counts.files += 1
        case S_IFDIR: counts.directories += 1
        case S_IFLNK: counts.symlinks += 1
        default: fatalError("extraction made a special file: \(name) mode \(String(st.st_mode, radix: 8))")
        }
        if st.st_mode & (S_ISUID | S_ISGID | S_ISVTX) != 0, st.st_mode & S_IFMT != S_IFLNK {
            fatalError("extraction kept a setuid, setgid or sticky bit: \(name) \(String(st.st_mode, radix: 8))")
        }
    }
    if let report {
        // A later entry may replace an earlier one at the same name, so the tree can hold
        // fewer names than the report counts, never more.
        guard counts.files <= report.files + report.hardlinks, counts.symlinks <= report.symlinks
        else { fatalError("the tree \(counts) holds more than the report \(report)") }
    }
    return 0
}

/// Visits every entry under the directory `fd` (not the directory itself) without following
/// links, then closes `fd`.
private func walk(_ fd: Int32, _ path: String, _ visit: (String, stat) -> Void) {
    defer { close(fd) }
    for name in rawNames(in: fd) {
        let shown = path + "/" + String(decoding: name.dropLast().map(UInt8.init(bitPattern:)), as: UTF8.self)
        var st = stat()
        guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { fatalError("lstat \(shown): \(errno)") }
        visit(shown, st)
        if st.st_mode & S_IFMT == S_IFDIR {
            walk(openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), shown, visit)
        }
    }
}
