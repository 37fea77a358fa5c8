import Glibc

/// Creates the file a job's full output spills into, inside the workspace, without
/// following anything the job may have planted there.
enum LogFile {
    /// Logs a directory keeps: each new one removes the oldest beyond this, so output logs
    /// never pile up in a workspace (each is written back with it).
    static let kept = 32

    /// Opens `workspace/relativePath` for writing, creating its directories, owned by the
    /// job's user. Every component is opened with O_NOFOLLOW, and the file must be a
    /// regular file (a planted FIFO would block, a symlink would redirect). Nil when any of
    /// that does not hold: output is then only capped, never written elsewhere.
    static func create(workspace: String, relativePath: String, uid: UInt32, gid: UInt32) -> Int32? {
        let parts = relativePath.split(separator: "/").map(String.init)
        guard let name = parts.last, !parts.contains(".."), !parts.contains(".") else { return nil }
        var dir = open(workspace, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard dir >= 0 else { return nil }
        for component in parts.dropLast() {
            if mkdirat(dir, component, 0o755) == 0 { fchownat(dir, component, uid, gid, AT_SYMLINK_NOFOLLOW) }
            let next = openat(dir, component, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            close(dir)
            guard next >= 0 else { return nil }
            dir = next
        }
        defer { close(dir) }
        prune(dir, keeping: kept - 1)
        let fd = openat(dir, name, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return nil }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            return nil
        }
        _ = fcntl(fd, F_SETFL, 0)
        _ = fchown(fd, uid, gid)
        return fd
    }

    /// Removes the oldest `*.log` regular files of `dir` until `keeping` are left. Names
    /// are unlinked in `dir` itself, which never follows a symlink a job planted there.
    static func prune(_ dir: Int32, keeping: Int) {
        let listing = dup(dir)
        guard listing >= 0, let stream = fdopendir(listing) else {
            if listing >= 0 { close(listing) }
            return
        }
        defer { closedir(stream) }
        var logs: [(name: String, modified: timespec)] = []
        while let entry = readdir(stream) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard name.hasSuffix(".log") else { continue }
            var info = stat()
            guard fstatat(dir, name, &info, AT_SYMLINK_NOFOLLOW) == 0, (info.st_mode & S_IFMT) == S_IFREG else {
                continue
            }
            logs.append((name, info.st_mtim))
        }
        guard logs.count > keeping else { return }
        logs.sort {
            ($0.modified.tv_sec, $0.modified.tv_nsec, $0.name) < ($1.modified.tv_sec, $1.modified.tv_nsec, $1.name)
        }
        for log in logs.prefix(logs.count - keeping) { unlinkat(dir, log.name, 0) }
    }
}
