import Glibc
import Sandbox

/// Who owns what the tools create: the sandbox's job user as the host sees it.
struct FileOwner: Sendable, Equatable {
    let uid: UInt32
    let gid: UInt32
}

/// Where a write lands: the open parent directory and a single name in it.
///
/// Every later step (reading the old content, creating the temporary file, the rename)
/// works relative to `parent`, so nothing the job does to the path in between can send
/// the write elsewhere.
struct WriteTarget {
    let path: WorkspacePath
    let parent: FileDescriptor
    let name: String
    /// The file being replaced, or nil when creating one.
    let existing: stat?
}

extension WorkspaceRoot {
    /// Opens the parent of `path`, creating missing directories when `createParents` is
    /// set, and checks what is at `path` now: nothing, or a regular file. A symbolic link
    /// there is refused rather than written through.
    func writeTarget(_ path: WorkspacePath, createParents: Bool, owner: FileOwner) throws -> WriteTarget {
        guard let name = path.name else { throw ToolError.isDirectory(path: path.relative) }
        let parent = try openDirectory(path.parent, create: createParents, owner: owner, for: path)
        let existing = try Self.linkStatus(parent.raw, name)
        if let existing {
            let kind = FileKind(mode: existing.st_mode)
            switch kind {
            case .file: break
            case .directory: throw ToolError.isDirectory(path: path.relative)
            case .symlink:
                let target = Format.display(Self.linkTarget(parent.raw, name) ?? "?")
                throw ToolError.notARegularFile(
                    path: path.relative, kind: kind.noun,
                    detail: "It points to `\(target)`; the file tools do not write through links. "
                        + "Write to the file it points to, by its path inside the project.")
            default: throw ToolError.notARegularFile(path: path.relative, kind: kind.noun, detail: nil)
            }
        }
        return WriteTarget(path: path, parent: parent, name: name, existing: existing)
    }

    /// Reads the file a target names; it must exist and be at most `limit` bytes.
    func readTarget(_ target: WriteTarget, limit: Int64) throws -> [UInt8] {
        guard let existing = target.existing else { throw missing(target.path) }
        guard existing.st_size <= limit else {
            throw ToolError.fileTooLarge(path: target.path.relative, size: Int64(existing.st_size), limit: limit)
        }
        let fd = try Self.openat2(
            target.parent.raw, target.name, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_NOFOLLOW, resolve: Self.beneathNoLinks)
        let now = try Self.status(fd.raw, target.path)
        guard now.st_dev == existing.st_dev, now.st_ino == existing.st_ino else {
            throw ToolError.notARegularFile(
                path: target.path.relative, kind: FileKind(mode: now.st_mode).noun,
                detail: "It was replaced while being opened; try again.")
        }
        let bytes = try Self.read(fd.raw, limit: Int(limit) + 1)
        // It grew past the limit since the stat: editing what was read would cut it short.
        guard bytes.count <= limit else {
            throw ToolError.fileTooLarge(path: target.path.relative, size: Int64(bytes.count), limit: limit)
        }
        return bytes
    }

    /// Replaces (or creates) the target with `bytes`: a temporary file in the same
    /// directory, owned by `owner`, synced, then renamed over the name. Readers see the old
    /// file or the new one, never half of it. Returns the new file's status.
    func replace(_ target: WriteTarget, with bytes: [UInt8], owner: FileOwner) throws -> stat {
        // Keep the permission bits of the file being replaced, minus setuid/setgid/sticky.
        let mode = target.existing.map { $0.st_mode & 0o777 } ?? 0o644
        let dir = target.parent.raw
        let temporary = ".corral-\(String(UInt64.random(in: .min ... .max), radix: 16)).tmp"
        let fd = try Self.openat2(
            dir, temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o600, resolve: Self.beneathNoLinks)
        var renamed = false
        defer { if !renamed { unlinkat(dir, temporary, 0) } }
        try Self.writeAll(fd.raw, bytes)
        try syscall("fchown(\(temporary))") { fchown(fd.raw, owner.uid, owner.gid) }
        try syscall("fchmod(\(temporary))") { fchmod(fd.raw, mode) }
        try syscall("fsync(\(temporary))") { fsync(fd.raw) }
        try syscall("renameat(\(Format.display(target.name)))") { renameat(dir, temporary, dir, target.name) }
        renamed = true
        // Makes the rename itself durable; the new content is already in place if this fails.
        _ = fsync(dir)
        return try Self.status(fd.raw, target.path)
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let written = try bytes.withUnsafeBytes { buffer in
                try syscall("write") { Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset) }
            }
            offset += written
        }
    }

    // MARK: - Directories

    /// Opens `directory` (`O_RDONLY`), creating each missing component owned by `owner`.
    ///
    /// Existing components resolve like any model path (inside the root); new ones are
    /// made with `mkdirat` in the descriptor of their resolved parent and then opened
    /// without following links, so the chown lands on the directory just made.
    func openDirectory(_ directory: WorkspacePath, create: Bool, owner: FileOwner, for path: WorkspacePath) throws
        -> FileDescriptor
    {
        do {
            return try open(directory, O_RDONLY | O_DIRECTORY)
        } catch let error as SystemError where error.errno == ENOENT && create {
            var current = try open(WorkspacePath(components: []), O_RDONLY | O_DIRECTORY)
            var prefix = WorkspacePath(components: [])
            for name in directory.components {
                prefix = prefix.appending(name)
                do {
                    current = try open(prefix, O_RDONLY | O_DIRECTORY)
                } catch let error as SystemError where error.errno == ENOENT {
                    current = try makeDirectory(name, in: current, owner: owner, for: path)
                }
            }
            return current
        }
    }

    private func makeDirectory(_ name: String, in parent: FileDescriptor, owner: FileOwner, for path: WorkspacePath)
        throws -> FileDescriptor
    {
        if mkdirat(parent.raw, name, 0o755) != 0 {
            let code = errno
            guard code == EEXIST, let existing = try Self.linkStatus(parent.raw, name) else {
                throw SystemError("mkdirat(\(Format.display(name)))", errno: code)
            }
            // Something is there although the path did not resolve: a dangling link.
            if FileKind(mode: existing.st_mode) == .symlink {
                throw danglingLink(Self.linkTarget(parent.raw, name) ?? "?", name: name, path: path)
            }
            if FileKind(mode: existing.st_mode) != .directory { throw SystemError("mkdirat", errno: ENOTDIR) }
            return try Self.openat2(parent.raw, name, O_RDONLY | O_DIRECTORY, resolve: Self.beneathNoLinks)
        }
        let fd = try Self.openat2(parent.raw, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, resolve: Self.beneathNoLinks)
        try syscall("fchown(\(Format.display(name)))") { fchown(fd.raw, owner.uid, owner.gid) }
        // mkdirat's mode is filtered by the host's umask; set it exactly.
        try syscall("fchmod(\(Format.display(name)))") { fchmod(fd.raw, 0o755) }
        return fd
    }

    private func danglingLink(_ target: String, name: String, path: WorkspacePath) -> ToolError {
        let shown = Format.display(target)
        if target.hasPrefix("/"), !target.hasPrefix(WorkspacePath.mountPoint + "/") {
            return .pathOutsideProject(
                path: path.relative, reason: "`\(Format.display(name))` is a symbolic link to `\(shown)`")
        }
        return .notFound(
            path: path.relative, similar: [],
            detail: "`\(Format.display(name))` is a symbolic link to `\(shown)`, which does not exist in the project")
    }
}
