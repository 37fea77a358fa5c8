import CShim
import Glibc
import Sandbox

extension WorkspaceRoot {
    /// Turns whatever a tool's body threw into the error the model sees.
    ///
    /// Resolution failures become the model-facing codes: `ENOENT` a `not_found` with near
    /// names, `EXDEV` and `ELOOP` (a mount point or a `/proc` magic link in the way) a
    /// `path_outside_project`.
    func toolError(_ error: any Error, path: WorkspacePath) -> ToolError {
        if let error = error as? ToolError { return error }
        guard let error = error as? SystemError else {
            return .io(path: path.relative, SystemError("\(error)", errno: EIO))
        }
        switch error.errno {
        case ENOENT, ENOTDIR: return missing(path)
        case EXDEV: return .pathOutsideProject(path: path.relative, reason: "it crosses a mount point")
        case ELOOP:
            return .pathOutsideProject(
                path: path.relative, reason: "it goes through too many symbolic links or a /proc magic link")
        case EISDIR: return .isDirectory(path: path.relative)
        case ENAMETOOLONG:
            return .invalidArguments(argument: "path", detail: "the path or one of its names is too long.")
        default: return .io(path: path.relative, error)
        }
    }

    /// A `not_found` for `path`, naming the first component that is missing and up to three
    /// similar names beside it.
    func missing(_ path: WorkspacePath) -> ToolError {
        var parent = WorkspacePath(components: [])
        for name in path.components {
            let next = parent.appending(name)
            do {
                let fd = try open(next, openPathFlag)
                let st = try Self.status(fd.raw, next)
                if next != path, FileKind(mode: st.st_mode) != .directory {
                    return .notFound(
                        path: path.relative, similar: [], detail: "`\(next.relative)` is a file, not a directory")
                }
                parent = next
            } catch {
                if let target = danglingLink(name, in: parent) {
                    let detail =
                        "`\(Format.display(next.relative))` is a symbolic link to `\(Format.display(target))`, which does "
                        + "not exist in the project (links resolve with the project as `/`)"
                    return .notFound(path: path.relative, similar: [], detail: detail)
                }
                let similar = similarNames(to: name, in: parent)
                let detail = next == path ? nil : "there is no `\(next.relative)`"
                return .notFound(path: path.relative, similar: similar, detail: detail)
            }
        }
        // Everything resolves now: it appeared after the failed call.
        return .notFound(path: path.relative, similar: [], detail: "it changed while being looked up")
    }

    /// The target of `name` in `directory` if it is a symbolic link (one that did not resolve).
    private func danglingLink(_ name: String, in directory: WorkspacePath) -> String? {
        guard let fd = try? open(directory, openPathFlag | O_DIRECTORY),
            let status = try? Self.linkStatus(fd.raw, name), FileKind(mode: status.st_mode) == .symlink
        else { return nil }
        return Self.linkTarget(fd.raw, name)
    }

    /// Up to three names in `directory` that look like `name`, as project-relative paths.
    func similarNames(to name: String, in directory: WorkspacePath) -> [String] {
        guard let fd = try? open(directory, O_RDONLY | O_DIRECTORY),
            let entries = try? Self.entries(fd.raw, limit: 20_000)
        else { return [] }
        let wanted = Array(name.lowercased().unicodeScalars.prefix(64))
        let scored = entries.compactMap { entry -> (Int, String)? in
            guard entry.name != name else { return nil }
            return NameSimilarity.score(wanted, entry.name).map { ($0, entry.name) }
        }
        return scored.sorted { $0 < $1 }.prefix(3).map { directory.appending($0.1).relative }
    }
}

/// `O_PATH`, which Glibc hides from Swift, read once from C.
let openPathFlag: Int32 = cor_o_path()

/// How close a directory entry's name is to a name that was not found.
enum NameSimilarity {
    /// Lower is closer; nil means not similar enough to suggest.
    static func score(_ wanted: [Unicode.Scalar], _ candidate: String) -> Int? {
        let other = Array(candidate.lowercased().unicodeScalars.prefix(64))
        if other == wanted { return 0 }
        let distance = levenshtein(wanted, other)
        let allowed = max(1, min(3, wanted.count / 3))
        if distance <= allowed { return distance }
        // `main` for `main.py`, or the same stem with another extension.
        if wanted.count >= 3, other.count >= 3,
            other.starts(with: wanted) || wanted.starts(with: other) || stem(other) == stem(wanted)
        {
            return allowed + 1
        }
        return nil
    }

    private static func stem(_ name: [Unicode.Scalar]) -> ArraySlice<Unicode.Scalar> {
        guard let dot = name.lastIndex(of: "."), dot > 0 else { return name[...] }
        return name[..<dot]
    }

    static func levenshtein(_ a: [Unicode.Scalar], _ b: [Unicode.Scalar]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        var current = previous
        for i in 1...a.count {
            current[0] = i
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            }
            swap(&previous, &current)
        }
        return previous[b.count]
    }
}
