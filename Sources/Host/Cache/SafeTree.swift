import Glibc
import Sandbox

/// A file name as the kernel has it: raw bytes, not necessarily UTF-8.
///
/// Swift `String`s repair invalid UTF-8, which would turn a name a job created into a
/// different name, so every walk, removal and extraction carries names as bytes.
struct FileName: Hashable, Comparable, CustomStringConvertible {
    /// The bytes without the terminating NUL.
    let bytes: [UInt8]

    init(_ bytes: [UInt8]) { self.bytes = bytes }
    init(_ string: String) { self.bytes = Array(string.utf8) }

    /// NUL-terminated, for system calls.
    var cString: [CChar] { bytes.map { CChar(bitPattern: $0) } + [0] }
    var description: String { String(decoding: bytes, as: UTF8.self) }

    static func < (a: FileName, b: FileName) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }
}

/// File-system operations relative to a directory descriptor that never follow a symlink.
///
/// Every path is walked one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`, so
/// a symlink planted earlier (by an archive or by a job) makes the walk fail with ELOOP or
/// ENOTDIR instead of leading outside the tree.
enum SafeTree {
    static let dirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC

    /// Opens the directory `name` inside `parent`, refusing symlinks.
    static func openDirectory(_ parent: Int32, _ name: FileName) -> Int32 {
        let c = name.cString
        return retryingInterrupted { openat(parent, c, dirFlags) }
    }

    /// Removes `name` inside `parent` and everything under it without following symlinks.
    ///
    /// Directories are made writable first (a job may have `chmod 0` them). The tree is
    /// walked by ``WorkspaceWalk``, so a workspace of any depth can be removed with a bounded
    /// number of descriptors.
    static func remove(_ parent: Int32, _ name: FileName) throws(CacheError) {
        var st = stat()
        let c = name.cString
        if fstatat(parent, c, &st, AT_SYMLINK_NOFOLLOW) != 0 {
            if errno == ENOENT { return }
            throw .system(SystemError("fstatat(\(name))", errno: errno))
        }
        guard st.st_mode & S_IFMT == S_IFDIR else {
            try sys("unlinkat(\(name))") { unlinkat(parent, c, 0) }
            return
        }
        let fd = openDirectory(parent, name)
        guard fd >= 0 else { throw .system(SystemError("openat(\(name))", errno: errno)) }
        defer { close(fd) }
        try writable(fd)
        try WorkspaceWalk.run(
            root: fd,
            enter: { (dir, child, path) throws(CacheError) -> WorkspaceWalk.Step in
                var st = stat()
                let c = child.cString
                if fstatat(dir, c, &st, AT_SYMLINK_NOFOLLOW) != 0 { return .skip }
                if st.st_mode & S_IFMT == S_IFDIR { return .descend }
                try sys("unlinkat(\(String(decoding: path, as: UTF8.self)))") { unlinkat(dir, c, 0) }
                return .skip
            },
            opened: writable,
            leave: { (dir, child, path) throws(CacheError) in
                try sys("unlinkat(\(String(decoding: path, as: UTF8.self)))") {
                    unlinkat(dir, child.cString, AT_REMOVEDIR)
                }
            })
        try sys("unlinkat(\(name))") { unlinkat(parent, c, AT_REMOVEDIR) }
    }

    /// Gives the owner rwx on an open directory, so its entries can be listed and removed.
    private static func writable(_ fd: Int32) throws(CacheError) {
        var st = stat()
        if fstat(fd, &st) == 0 && st.st_mode & 0o700 != 0o700 { try sys("fchmod") { fchmod(fd, 0o700) } }
    }

    /// Removes an absolute path (the tree's parent is trusted: it is Corral's data directory).
    static func remove(path: String) throws(CacheError) {
        let (dir, base) = split(path)
        let fd = open(dir, dirFlags)
        guard fd >= 0 else {
            if errno == ENOENT { return }
            throw .system(SystemError("open(\(dir))", errno: errno))
        }
        defer { close(fd) }
        try remove(fd, FileName(base))
    }

    /// The names in a directory (without `.` and `..`), sorted bytewise for a deterministic order.
    static func list(_ fd: Int32) throws(CacheError) -> [FileName] {
        let copy = dup(fd)
        guard copy >= 0, let dir = fdopendir(copy) else {
            throw .system(SystemError("fdopendir", errno: errno))
        }
        defer { closedir(dir) }
        rewinddir(dir)
        var names: [FileName] = []
        while let entry = readdir(dir) {
            let bytes = withUnsafeBytes(of: entry.pointee.d_name) { raw in Array(raw.prefix { $0 != 0 }) }
            if bytes != [0x2e] && bytes != [0x2e, 0x2e] { names.append(FileName(bytes)) }
        }
        return names.sorted()
    }

    static func split(_ path: String) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let dir = path[..<slash]
        return (dir.isEmpty ? "/" : String(dir), String(path[path.index(after: slash)...]))
    }

    /// Creates `path` and its missing parents (trusted, host-owned paths only).
    static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(CacheError) {
        var prefix = ""
        for part in path.split(separator: "/") {
            prefix += "/\(part)"
            if mkdir(prefix, mode) != 0 && errno != EEXIST {
                throw .system(SystemError("mkdir(\(prefix))", errno: errno))
            }
        }
    }
}
