import Glibc

/// Hands a workspace tree to a sandbox's user, without following a single symlink.
///
/// The workspace is extracted by the host as root; inside the sandbox the job runs as an
/// unprivileged uid that must own its files. Walking with `openat(O_NOFOLLOW)` and
/// `fchownat(AT_SYMLINK_NOFOLLOW)` keeps a planted symlink from redirecting the chown to a
/// host file.
///
/// An entry already owned right is left alone: on an overlay workspace (a fork, docs/CACHE.md
/// "Forks") a chown of a lower file, even to its own owner, copies the whole file up.
public enum Ownership {
    /// Makes `uid:gid` the owner of everything under `path` (and `path` itself).
    public static func chownTree(_ path: String, uid: UInt32, gid: UInt32) throws {
        let fd = try syscall("open(\(path))") { open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        var st = stat()
        if fstat(fd, &st) != 0 || st.st_uid != uid || st.st_gid != gid {
            try syscall("fchown(\(path))") { fchown(fd, uid, gid) }
        }
        try chownChildren(of: fd, uid: uid, gid: gid, path: path)
    }

    /// Takes ownership of `dirfd` (closes it).
    private static func chownChildren(of dirfd: Int32, uid: UInt32, gid: UInt32, path: String) throws {
        guard let dir = fdopendir(dirfd) else {
            close(dirfd)
            throw SystemError("fdopendir(\(path))", errno: errno)
        }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            var st = stat()
            if fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || st.st_uid != uid || st.st_gid != gid {
                try syscall("fchownat(\(path)/\(name))") {
                    fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW)
                }
            }
            if Int32(entry.pointee.d_type) == Int32(DT_DIR) {
                let child = try syscall("openat(\(path)/\(name))") {
                    openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                }
                try chownChildren(of: child, uid: uid, gid: gid, path: "\(path)/\(name)")
            }
        }
    }
}
