import Glibc
import Sandbox

/// One entry a walk reaches.
struct TreeWalkEntry {
    /// Project-relative path.
    let path: WorkspacePath
    /// Path relative to the walk's start.
    let relative: [String]
    let kind: FileKind
    /// Descriptor of the directory holding the entry, valid during the visit.
    let directory: Int32

    var name: String { relative.last ?? "" }
}

/// What a visit tells the walk to do next.
enum WalkAction {
    /// Go on (and into this entry, if it is a directory within the depth limit).
    case proceed
    /// Go on, but not into this directory.
    case skipChildren
    /// End the walk.
    case stop
}

/// Walks a directory tree below a start inside the workspace, in name order, the way
/// `list_dir`, `glob` and `grep` need it.
///
/// The start resolves like any model path; below it every directory is opened with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so a symlink is shown as a link and never
/// entered, even if the job swaps one in during the walk. Only one directory is open at a
/// time, so a deep tree cannot exhaust descriptors. `.git` and `node_modules` are always
/// skipped, and so is the top-level `.corral` (the project's home: a walk started inside it
/// shows it) and whatever the top-level `.gitignore` ignores when one is given.
struct TreeWalker {
    static let alwaysSkipped: Set<String> = [".git", "node_modules"]
    /// How many skipped paths are named in the report; the rest are counted.
    static let skippedShown = 20

    let workspace: WorkspaceRoot
    let start: WorkspacePath
    var gitignore: Gitignore?
    var maxDepth: Int
    var maxEntries: Int
    /// Breadth first (a listing shows every top-level name before going deeper) or depth
    /// first (search results grouped by directory).
    var breadthFirst = false

    /// Skipped paths (project-relative, directories with a trailing `/`), the first few.
    private(set) var skipped: [String] = []
    private(set) var skippedCount = 0
    private(set) var visited = 0
    /// The walk stopped at `maxEntries`.
    private(set) var hitEntryLimit = false
    /// Some directory at `maxDepth` was not entered.
    private(set) var reachedDepthLimit = false

    init(_ workspace: WorkspaceRoot, from start: WorkspacePath, maxDepth: Int, maxEntries: Int) {
        self.workspace = workspace
        self.start = start
        self.maxDepth = maxDepth
        self.maxEntries = maxEntries
    }

    mutating func walk(_ visit: (TreeWalkEntry) throws -> WalkAction) throws {
        let top = try workspace.open(start, O_RDONLY | O_DIRECTORY)
        var pending: [[String]] = [[]]
        var head = 0
        while head < pending.count {
            let relative: [String]
            if breadthFirst {
                relative = pending[head]
                head += 1
            } else {
                relative = pending.removeLast()
            }
            // A directory that vanished or became a link since it was listed is passed over.
            guard
                let directory = relative.isEmpty
                    ? top
                    : try? WorkspaceRoot.openat2(
                        top.raw, relative.joined(separator: "/"), O_RDONLY | O_DIRECTORY,
                        resolve: WorkspaceRoot.beneathNoLinks)
            else { continue }
            var children: [[String]] = []
            let finished = try visitEntries(of: directory.raw, at: relative, into: &children, visit)
            if finished { return }
            pending += breadthFirst ? children : children.reversed()
        }
    }

    /// Visits one directory's entries; returns true when the walk must end.
    private mutating func visitEntries(
        of directory: Int32, at relative: [String], into children: inout [[String]],
        _ visit: (TreeWalkEntry) throws -> WalkAction
    ) throws -> Bool {
        // A directory with millions of names is read only as far as the walk can still go.
        let entries = try WorkspaceRoot.entries(directory, limit: maxEntries - visited + 1).sorted {
            $0.name.utf8.lexicographicallyPrecedes($1.name.utf8)
        }
        for entry in entries {
            guard visited < maxEntries else {
                hitEntryLimit = true
                return true
            }
            visited += 1
            let kind =
                try entry.kind ?? WorkspaceRoot.linkStatus(directory, entry.name).map { FileKind(mode: $0.st_mode) }
            guard let kind else { continue }
            let path = WorkspacePath(components: start.components + relative + [entry.name])
            if Self.alwaysSkipped.contains(entry.name)
                || path.components == [ProjectHome.directory]
                || gitignore?.isIgnored(path.components, isDirectory: kind == .directory) == true
            {
                noteSkipped(path, kind: kind)
                continue
            }
            let action = try visit(
                TreeWalkEntry(path: path, relative: relative + [entry.name], kind: kind, directory: directory))
            if action == .stop { return true }
            guard kind == .directory, action == .proceed else { continue }
            if relative.count + 1 < maxDepth {
                children.append(relative + [entry.name])
            } else {
                reachedDepthLimit = true
            }
        }
        return false
    }

    /// What a listing or search says when it skipped paths, so a model never mistakes "not
    /// looked at" for "not there": how many, under which rules, the first few, and how to
    /// look inside one. Nil when nothing was skipped.
    func skippedNote(_ what: String, _ howToLookInside: String) -> String? {
        guard skippedCount > 0 else { return nil }
        let more = skippedCount > skipped.count ? ", …" : ""
        let rules =
            gitignore == nil ? ".git, node_modules or .corral" : ".git, node_modules, .corral or ignored by .gitignore"
        return
            "\(what): \(Format.count(skippedCount)) paths under \(rules): \(skipped.joined(separator: ", "))\(more). "
            + howToLookInside
    }

    private mutating func noteSkipped(_ path: WorkspacePath, kind: FileKind) {
        skippedCount += 1
        if skipped.count < Self.skippedShown {
            skipped.append(Format.display(path.relative) + (kind == .directory ? "/" : ""))
        }
    }
}

extension FileTools {
    /// The workspace's top-level `.gitignore`, if it is a readable text file under 1 MiB.
    func loadGitignore() -> Gitignore? {
        let path = WorkspacePath(components: [".gitignore"])
        guard let (fd, status) = try? workspace.openRegular(path), status.st_size <= 1024 * 1024,
            let bytes = try? WorkspaceRoot.read(fd.raw, limit: 1024 * 1024)
        else { return nil }
        return Gitignore(String(decoding: bytes, as: UTF8.self))
    }
}
