/// A model-supplied path, checked and normalized to components below the workspace root.
///
/// This is the lexical half of the defence: it turns `/workspace/src/../a.txt` into `a.txt`
/// and refuses anything that names a place outside the project. The kernel
/// (`openat2(RESOLVE_IN_ROOT)`) is the other half: it keeps symlinks inside the root.
struct WorkspacePath: Hashable, Sendable {
    /// The path as the sandbox sees the workspace.
    static let mountPoint = "/workspace"

    /// Normalized components; empty for the root itself.
    let components: [String]

    init(components: [String]) { self.components = components }

    /// Parses `raw`: relative to the root, or absolute under `/workspace/`.
    init(_ raw: String) throws(ToolError) {
        if raw.utf8.contains(0) {
            throw .pathOutsideProject(path: raw, reason: "the path contains a NUL byte")
        }
        var body = Substring(raw)
        if body.hasPrefix("/") {
            guard body == Self.mountPoint || body.hasPrefix(Self.mountPoint + "/") else {
                throw .pathOutsideProject(path: raw, reason: "absolute paths must start with /workspace/")
            }
            body = body.dropFirst(Self.mountPoint.count)
        }
        var components: [String] = []
        for part in body.split(separator: "/", omittingEmptySubsequences: true) {
            switch part {
            case ".": continue
            case "..":
                guard components.popLast() != nil else {
                    throw .pathOutsideProject(path: raw, reason: "`..` climbs above the project root")
                }
            default: components.append(String(part))
            }
        }
        self.components = components
    }

    /// `src/main.py`, or `.` for the root: what the model sees and what `openat2` gets.
    var relative: String { components.isEmpty ? "." : components.joined(separator: "/") }

    /// The last component, or nil for the root.
    var name: String? { components.last }

    /// The parent directory (the root's parent is the root).
    var parent: WorkspacePath { WorkspacePath(components: Array(components.dropLast())) }

    /// This path with `name` appended.
    func appending(_ name: String) -> WorkspacePath { WorkspacePath(components: components + [name]) }

    /// Whether `self` is `other` or lies below it.
    func hasPrefix(_ other: WorkspacePath) -> Bool { components.starts(with: other.components) }
}
