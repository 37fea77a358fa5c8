import CShim
import Glibc
import Sandbox

/// The workspace root as a directory descriptor, and every way the tools reach below it.
///
/// Nothing here takes a host path apart from the root given at init: every lookup is an
/// `openat2` relative to `root`, so a symlink the job planted resolves inside the
/// workspace (or fails), never to a host file.
struct WorkspaceRoot: Sendable {
    /// `O_PATH` descriptor of the workspace root.
    let root: FileDescriptor

    /// How model paths resolve: `/` and `..` stop at the root, `/proc` magic links are
    /// refused, and no mount point is crossed (the job cannot mount, so a mount inside the
    /// workspace is not the project's).
    static let inRoot = UInt64(COR_RESOLVE_IN_ROOT | COR_RESOLVE_NO_MAGICLINKS | COR_RESOLVE_NO_XDEV)

    /// How a walk opens directories below its start: no symlink at all, so a walk never
    /// follows a link into another directory, even one swapped in during the walk.
    static let beneathNoLinks = UInt64(
        COR_RESOLVE_BENEATH | COR_RESOLVE_NO_SYMLINKS | COR_RESOLVE_NO_MAGICLINKS | COR_RESOLVE_NO_XDEV)

    init(rootPath: String) throws {
        let fd = try syscall("open(\(rootPath))") { Glibc.open(rootPath, openPathFlag | O_DIRECTORY | O_CLOEXEC) }
        root = FileDescriptor(fd)
    }

    // MARK: - Opening

    /// Opens a model path with `flags` (O_CLOEXEC is always added).
    func open(_ path: WorkspacePath, _ flags: Int32) throws -> FileDescriptor {
        try Self.openat2(root.raw, path.relative, flags, resolve: Self.inRoot)
    }

    /// `openat2` on any directory descriptor.
    static func openat2(_ dir: Int32, _ path: String, _ flags: Int32, mode: UInt32 = 0, resolve: UInt64) throws
        -> FileDescriptor
    {
        let fd = try syscall("openat2(\(Format.display(path)))") { cor_openat2(dir, path, flags, mode, resolve) }
        return FileDescriptor(fd)
    }

    /// Opens `path` for reading only if it is a regular file, and returns its status.
    ///
    /// The type is checked on an `O_PATH` descriptor first, so a FIFO never blocks and a
    /// device's driver never sees an open; the file is then opened `O_NONBLOCK` and must
    /// be the same inode.
    func openRegular(_ path: WorkspacePath) throws -> (FileDescriptor, stat) {
        let probe = try open(path, openPathFlag)
        let before = try Self.status(probe.raw, path)
        try Self.requireRegular(before, path)
        let fd = try open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY)
        let after = try Self.status(fd.raw, path)
        guard after.st_dev == before.st_dev, after.st_ino == before.st_ino else {
            throw ToolError.notARegularFile(
                path: path.relative, kind: FileKind(mode: after.st_mode).noun,
                detail: "It was replaced while being opened; try again.")
        }
        return (fd, after)
    }

    /// Throws the tool error for a status that is not a regular file.
    static func requireRegular(_ status: stat, _ path: WorkspacePath) throws {
        let kind = FileKind(mode: status.st_mode)
        switch kind {
        case .file: return
        case .directory: throw ToolError.isDirectory(path: path.relative)
        default: throw ToolError.notARegularFile(path: path.relative, kind: kind.noun, detail: nil)
        }
    }

    // MARK: - Status, reading, directories

    static func status(_ fd: Int32, _ path: WorkspacePath) throws -> stat {
        var st = stat()
        try syscall("fstat(\(Format.display(path.relative)))") { fstat(fd, &st) }
        return st
    }

    /// `fstatat(AT_SYMLINK_NOFOLLOW)`; nil when the name does not exist.
    static func linkStatus(_ dir: Int32, _ name: String) throws -> stat? {
        var st = stat()
        if fstatat(dir, name, &st, AT_SYMLINK_NOFOLLOW) == 0 { return st }
        if errno == ENOENT { return nil }
        throw SystemError("fstatat(\(Format.display(name)))", errno: errno)
    }

    /// Reads from `fd` until end of file or `limit` bytes.
    static func read(_ fd: Int32, limit: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while bytes.count < limit {
            let wanted = min(chunk.count, limit - bytes.count)
            let count = try chunk.withUnsafeMutableBytes { buffer in
                try syscall("read") { Glibc.read(fd, buffer.baseAddress, wanted) }
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return bytes
    }

    /// The target of the symbolic link `name` in `dir`, or nil if it is not one.
    static func linkTarget(_ dir: Int32, _ name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlinkat(dir, name, &buffer, Int(PATH_MAX))
        guard count >= 0 else { return nil }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The entries of the directory `fd` (without `.` and `..`), at most `limit`.
    static func entries(_ fd: Int32, limit: Int = Int.max) throws -> [DirectoryEntry] {
        // fdopendir takes ownership of the descriptor it gets; give it a duplicate so the
        // caller's stays usable for openat.
        let copy = try syscall("dup") { dup(fd) }
        guard let dir = fdopendir(copy) else {
            let code = errno
            close(copy)
            throw SystemError("fdopendir", errno: code)
        }
        defer { closedir(dir) }
        var result: [DirectoryEntry] = []
        while result.count < limit, let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if name == "." || name == ".." { continue }
            result.append(DirectoryEntry(name: name, kind: FileKind(directoryType: entry.pointee.d_type)))
        }
        return result
    }
}

/// One name in a directory and, when the file system says so cheaply, its type.
struct DirectoryEntry: Sendable {
    let name: String
    /// nil when `readdir` reported `DT_UNKNOWN`; ask `fstatat`.
    let kind: FileKind?
}

/// What a directory entry is.
public enum FileKind: String, Sendable, Equatable {
    case file
    case directory
    case symlink
    case fifo
    case socket
    case charDevice = "char_device"
    case blockDevice = "block_device"
    case unknown

    init(mode: mode_t) {
        switch mode & S_IFMT {
        case S_IFREG: self = .file
        case S_IFDIR: self = .directory
        case S_IFLNK: self = .symlink
        case S_IFIFO: self = .fifo
        case S_IFSOCK: self = .socket
        case S_IFCHR: self = .charDevice
        case S_IFBLK: self = .blockDevice
        default: self = .unknown
        }
    }

    init?(directoryType: UInt8) {
        switch Int(directoryType) {
        case Int(DT_REG): self = .file
        case Int(DT_DIR): self = .directory
        case Int(DT_LNK): self = .symlink
        case Int(DT_FIFO): self = .fifo
        case Int(DT_SOCK): self = .socket
        case Int(DT_CHR): self = .charDevice
        case Int(DT_BLK): self = .blockDevice
        default: return nil
        }
    }

    /// "a FIFO", for messages.
    var noun: String {
        switch self {
        case .file: "regular file"
        case .directory: "directory"
        case .symlink: "symbolic link"
        case .fifo: "FIFO (named pipe)"
        case .socket: "socket"
        case .charDevice: "character device"
        case .blockDevice: "block device"
        case .unknown: "special file"
        }
    }
}
