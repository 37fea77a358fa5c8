import CShim
import Foundation
import Glibc

/// The project's writable home: `/home/agent` in the sandbox, kept in the workspace at
/// `.corral/home` so that write-back, named snapshots, restores and forks keep it with the
/// files, with no second tree to carry (docs/ENVIRONMENTS.md, "The home directory").
///
/// Jobs can write anything in the workspace, `.corral` included, so every step here opens
/// from the workspace's descriptor with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a symlink
/// or a file planted at `.corral` or `.corral/home` is never followed, and the sandbox then
/// simply gets no home mount (its `/home/agent` stays the image's, read-only).
public enum ProjectHome {
    /// The directory in the workspace that holds Corral's own state for the project.
    public static let directory = ".corral"
    /// The home, inside ``directory``.
    public static let name = "home"
    /// Where the home appears in the sandbox: the agent user's home in every Corral image.
    public static let target = "/home/agent"
    /// `.corral/.gitignore`: ignores everything beside it (itself included), so `git status`
    /// in the workspace never lists the home; virtualenv does the same for its directory.
    static let gitignore =
        "# Corral's own state for this project (the agent's home): never part of the repository.\n*\n"

    private static let beneath = UInt64(
        COR_RESOLVE_BENEATH | COR_RESOLVE_NO_SYMLINKS | COR_RESOLVE_NO_MAGICLINKS | COR_RESOLVE_NO_XDEV)

    /// Makes `.corral/home` in `workspace` if missing, and opens it (`O_PATH`) for the
    /// sandbox's builder to attach at ``target``. Nil when something other than a directory
    /// stands at either name: the sandbox goes on without a home mount.
    ///
    /// A home made here starts with the image's own `/home/agent` files (`seed`: the
    /// `.bashrc` and `.profile` an image's skeleton gives), regular files at the top only.
    static func prepare(workspace: String, seed: String? = nil) throws -> Int32? {
        let root = try syscall("open(\(workspace))") {
            open(workspace, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        }
        defer { close(root) }
        guard let corral = try directoryFD(in: root, directory, mode: 0o755) else { return nil }
        defer { close(corral) }
        // Written once; a job may change or remove it, which only changes what git shows.
        let ignore = openat(corral, ".gitignore", O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
        if ignore >= 0 {
            _ = gitignore.utf8CString.withUnsafeBufferPointer { write(ignore, $0.baseAddress, $0.count - 1) }
            close(ignore)
        }
        let made = mkdirat(corral, name, 0o755) == 0
        guard let home = try directoryFD(in: corral, name, mode: 0o755) else { return nil }
        if made, let seed { copyTopLevelFiles(from: seed, into: home) }
        return home
    }

    /// Best effort: a home without the image's dotfiles still works.
    private static func copyTopLevelFiles(from source: String, into home: Int32) {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: source) else { return }
        for name in names {
            let from = open(source + "/" + name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
            guard from >= 0 else { continue }
            defer { close(from) }
            var info = stat()
            guard fstat(from, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size <= 1 << 20 else { continue }
            let to = openat(home, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            guard to >= 0 else { continue }
            defer { close(to) }
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(from, $0.baseAddress, $0.count) }
                guard n > 0, buffer.withUnsafeBytes({ write(to, $0.baseAddress, n) }) == n else { break }
            }
        }
    }

    /// Moves the home of the tree at `old` into the tree at `new` (both on one filesystem),
    /// in place of any home `new` brought along, which goes into `discard`, a directory in
    /// the same filesystem about to be removed. Returns false when `old` had no home to move.
    public static func carry(from old: String, to new: String, discard: String) throws -> Bool {
        guard let oldCorral = try existingDirectory(old, directory) else { return false }
        defer { close(oldCorral) }
        guard isDirectory(oldCorral, name) else { return false }
        let newRoot = try syscall("open(\(new))") { open(new, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(newRoot) }
        guard let newCorral = try directoryFD(in: newRoot, directory, mode: 0o755) else { return false }
        defer { close(newCorral) }
        var exists = stat()
        if fstatat(newCorral, name, &exists, AT_SYMLINK_NOFOLLOW) == 0 {
            let bin = try syscall("open(\(discard))") {
                open(discard, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            defer { close(bin) }
            try syscall("renameat(\(new)/\(directory)/\(name))") {
                renameat(newCorral, name, bin, "corral-home-\(UInt64.random(in: 0...UInt64.max))")
            }
        }
        try syscall("renameat(\(old)/\(directory)/\(name))") { renameat(oldCorral, name, newCorral, name) }
        return true
    }

    /// `name` in `parent` as a directory descriptor, made first if missing; nil when
    /// something else (a file, a symlink) is there.
    private static func directoryFD(in parent: Int32, _ name: String, mode: mode_t) throws -> Int32? {
        if mkdirat(parent, name, mode) != 0 && errno != EEXIST {
            throw SystemError("mkdirat(\(name))", errno: errno)
        }
        let fd = cor_openat2(parent, name, O_RDONLY | O_DIRECTORY, 0, beneath)
        guard fd >= 0 else {
            if errno == ENOTDIR || errno == ELOOP || errno == EXDEV { return nil }
            throw SystemError("openat2(\(name))", errno: errno)
        }
        return fd
    }

    private static func existingDirectory(_ root: String, _ name: String) throws -> Int32? {
        let rootFD = try syscall("open(\(root))") { open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
        defer { close(rootFD) }
        let fd = cor_openat2(rootFD, name, O_RDONLY | O_DIRECTORY, 0, beneath)
        return fd >= 0 ? fd : nil
    }

    private static func isDirectory(_ parent: Int32, _ name: String) -> Bool {
        var info = stat()
        return fstatat(parent, name, &info, AT_SYMLINK_NOFOLLOW) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }
}
