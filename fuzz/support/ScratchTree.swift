// Directory helpers for the fuzz targets that work on real files (archive, tools): names are
// handled as raw bytes, since what a target makes may not be UTF-8, and links are never
// followed.
import Glibc

/// The names in the directory `fd` (not `.` or `..`), NUL-terminated.
func rawNames(in fd: Int32) -> [[CChar]] {
    guard let dir = fdopendir(dup(fd)) else { fatalError("fdopendir: \(errno)") }
    defer { closedir(dir) }
    var names: [[CChar]] = []
    while let entry = readdir(dir) {
        let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.bindMemory(to: CChar.self).prefix { $0 != 0 }) }
        if name != [46] && name != [46, 46] { names.append(name + [0]) }
    }
    return names
}

/// The names in `directory`, sorted, for messages and comparisons (not UTF-8 is repaired).
func entries(of directory: String) -> [String] {
    let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    precondition(fd >= 0, "open \(directory): \(errno)")
    defer { close(fd) }
    return rawNames(in: fd).map { String(decoding: $0.dropLast().map(UInt8.init(bitPattern:)), as: UTF8.self) }
        .sorted()
}

/// `rm -rf` that never follows a link.
func removeTree(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
    guard fd >= 0 else { return }
    empty(fd)
    rmdir(path)
}

private func empty(_ fd: Int32) {
    defer { close(fd) }
    for name in rawNames(in: fd) {
        var st = stat()
        guard fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 else { continue }
        if st.st_mode & S_IFMT == S_IFDIR {
            empty(openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC))
            unlinkat(fd, name, AT_REMOVEDIR)
        } else {
            unlinkat(fd, name, 0)
        }
    }
}
