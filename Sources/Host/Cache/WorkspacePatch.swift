import Glibc
import Sandbox

/// Applies a patch, an archive already extracted (under the upload rules) into a staging
/// tree on the workspace's own filesystem, to a workspace (docs/CACHE.md, "Patching the
/// files").
///
/// The whole patch is planned against the workspace before anything in it changes: every
/// path is looked up with `fstatat(AT_SYMLINK_NOFOLLOW)` from descriptors opened with
/// `O_NOFOLLOW`, so a symlink in the workspace is never followed, and a conflict (a file
/// where the patch needs a directory, or the reverse) refuses the patch whole. Then each
/// step is one `renameat`: a file replaces the old one atomically, a new directory arrives
/// whole, a deleted path leaves whole (renamed into the trash first). Blocking.
enum WorkspacePatch {
    /// `dir/.wh.name` deletes `dir/name` (OCI image layers' whiteouts).
    static let whiteout: [UInt8] = Array(".wh.".utf8)
    /// OCI's opaque marker ("hide everything below"): refused, not guessed at.
    static let opaque = FileName(".wh..wh..opq")

    enum Step {
        /// Rename the workspace path into the trash.
        case delete([FileName])
        /// Rename the staged path over the workspace path (a file, a symlink, or a directory
        /// the workspace does not have).
        case move([FileName])
    }

    struct Plan {
        var steps: [Step] = []
        var summary: PatchSummary
    }

    /// Plans and applies `staging` to `workspace`; `trash` (created if a path is deleted)
    /// must be on the same filesystem. Throws before anything changed for a bad patch, and
    /// ``CacheError/patchIncomplete(applied:failed:reason:)`` if a step fails part-way.
    static func apply(staging: String, to workspace: String, trash: String, project: String) throws(CacheError)
        -> PatchSummary
    {
        let stage = try sys("open(\(staging))") { open(staging, SafeTree.dirFlags) }
        defer { close(stage) }
        let root = try sys("open(\(workspace))") { open(workspace, SafeTree.dirFlags) }
        defer { close(root) }
        var plan = Plan(summary: PatchSummary(project: project))
        try visit(stage, root, [], &plan)
        try run(plan.steps, stage: stage, root: root, trash: trash)
        return plan.summary
    }

    // MARK: - Planning

    /// Plans the staged directory `stage` against the workspace directory `workspace` (nil:
    /// the workspace has no such directory, so everything below is new and moves whole).
    static func visit(_ stage: Int32, _ workspace: Int32?, _ prefix: [FileName], _ plan: inout Plan)
        throws(CacheError)
    {
        let names = try SafeTree.list(stage)
        var deleted = Set<FileName>()
        for name in names where isWhiteout(name) {
            let path = prefix + [name]
            if name == opaque {
                throw .unsafeEntry(
                    path: show(path),
                    reason:
                        "opaque whiteouts are not supported; delete the directory with a whiteout in its parent (.wh.NAME) and add what it should hold"
                )
            }
            let target = FileName(Array(name.bytes.dropFirst(whiteout.count)))
            guard !target.bytes.isEmpty else { throw .unsafeEntry(path: show(path), reason: "whiteout of nothing") }
            deleted.insert(target)
            if workspace == nil {
                // Inside a directory the workspace lacks there is nothing to delete, and the
                // directory moves whole: the marker must not move with it.
                try SafeTree.remove(stage, name)
            } else if try kind(workspace!, target) != nil {
                plan.steps.append(.delete(prefix + [target]))
                plan.summary.pathsDeleted += 1
            }
        }
        for name in names where !isWhiteout(name) {
            let path = prefix + [name]
            var st = stat()
            try sys("fstatat(\(show(path)))") { fstatat(stage, name.cString, &st, AT_SYMLINK_NOFOLLOW) }
            let existing =
                deleted.contains(name) ? nil : try workspace.flatMap { fd throws(CacheError) in try kind(fd, name) }
            if st.st_mode & S_IFMT == S_IFDIR {
                if let existing, existing != S_IFDIR {
                    throw conflict(path, "a \(describe(existing)) in the workspace and a directory in the patch")
                }
                let child = SafeTree.openDirectory(stage, name)
                guard child >= 0 else { throw .system(SystemError("openat(\(show(path)))", errno: errno)) }
                defer { close(child) }
                if existing == nil {
                    plan.summary.directoriesCreated += 1
                    try visit(child, nil, path, &plan)
                    if workspace != nil { plan.steps.append(.move(path)) }
                } else {
                    let into = SafeTree.openDirectory(workspace!, name)
                    guard into >= 0 else { throw .system(SystemError("openat(\(show(path)))", errno: errno)) }
                    defer { close(into) }
                    try visit(child, into, path, &plan)
                }
            } else {
                if existing == S_IFDIR {
                    throw conflict(
                        path, "a directory in the workspace and a \(describe(st.st_mode & S_IFMT)) in the patch")
                }
                plan.summary.filesWritten += 1
                if st.st_mode & S_IFMT == S_IFREG { plan.summary.bytesWritten += Int64(st.st_size) }
                if workspace != nil { plan.steps.append(.move(path)) }
            }
        }
    }

    static func isWhiteout(_ name: FileName) -> Bool { name.bytes.starts(with: whiteout) }

    /// The file type at `name` in `dir`, not following a symlink; nil when there is none.
    static func kind(_ dir: Int32, _ name: FileName) throws(CacheError) -> mode_t? {
        var st = stat()
        if fstatat(dir, name.cString, &st, AT_SYMLINK_NOFOLLOW) == 0 { return st.st_mode & S_IFMT }
        if errno == ENOENT { return nil }
        throw .system(SystemError("fstatat(\(name))", errno: errno))
    }

    static func describe(_ type: mode_t) -> String {
        switch type {
        case S_IFDIR: "directory"
        case S_IFLNK: "symlink"
        case S_IFREG: "file"
        default: "special file"
        }
    }

    static func conflict(_ path: [FileName], _ what: String) -> CacheError {
        let name = path.last?.description ?? ""
        return .unsafeEntry(
            path: show(path),
            reason: "is \(what); to replace it, delete it in the same patch with a whiteout (.wh.\(name)) beside it")
    }

    static func show(_ path: [FileName]) -> String { path.map(\.description).joined(separator: "/") }

    // MARK: - Applying

    /// Runs the steps in order (deletions first, then parents before children), one
    /// `renameat` each, so every path changes whole or not at all.
    static func run(_ steps: [Step], stage: Int32, root: Int32, trash: String) throws(CacheError) {
        var applied: [String] = []
        var bin: Int32 = -1
        defer { if bin >= 0 { close(bin) } }
        for (n, step) in steps.enumerated() {
            let path: [FileName]
            switch step {
            case .delete(let p), .move(let p): path = p
            }
            do throws(CacheError) {
                let name = path.last!.cString
                let to = try parent(of: path, in: root)
                defer { close(to) }
                switch step {
                case .delete:
                    if bin < 0 {
                        if mkdir(trash, 0o700) != 0 && errno != EEXIST {
                            throw .system(SystemError("mkdir(\(trash))", errno: errno))
                        }
                        bin = try sys("open(\(trash))") { open(trash, SafeTree.dirFlags) }
                    }
                    // Into the trash first: a deleted directory leaves whole, then is removed.
                    let slot = FileName("\(n)")
                    try sys("renameat(\(show(path)))") { renameat(to, name, bin, slot.cString) }
                case .move:
                    let from = try parent(of: path, in: stage)
                    defer { close(from) }
                    try sys("renameat(\(show(path)))") { renameat(from, name, to, name) }
                }
            } catch {
                throw .patchIncomplete(applied: applied, failed: show(path), reason: error.description)
            }
            applied.append(show(path))
        }
    }

    /// A descriptor of the directory holding `path` under `root`, every component opened
    /// with `O_NOFOLLOW`: a directory a job swapped for a symlink since the plan stops the
    /// step rather than lead outside.
    static func parent(of path: [FileName], in root: Int32) throws(CacheError) -> Int32 {
        var fd = try sys("dup") { dup(root) }
        for component in path.dropLast() {
            let next = SafeTree.openDirectory(fd, component)
            let failure = errno
            close(fd)
            guard next >= 0 else { throw .system(SystemError("openat(\(component))", errno: failure)) }
            fd = next
        }
        return fd
    }
}
