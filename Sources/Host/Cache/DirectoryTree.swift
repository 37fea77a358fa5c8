import Glibc
import Sandbox

/// The directories an extraction has entered, as a tree of nodes keyed by name, each
/// with an open descriptor or none.
///
/// Looking up an entry's parent costs one dictionary step per path component (no key is
/// rebuilt per prefix, which made deep trees quadratic per entry), and the number of open
/// descriptors stays bounded whatever the depth: only each lookup's target keeps one, plus
/// checkpoints every ``stride`` levels, and everything but the root is closed between
/// entries once ``maxOpen`` is reached. A closed node is reopened by name from its nearest
/// open ancestor, at most ``stride`` `openat` calls away. A node stays valid for the whole
/// run because no entry may replace a directory.
struct DirectoryTree {
    static let maxOpen = 1024
    static let stride = 64

    struct Node {
        let parent: Int
        let name: FileName
        let depth: Int
        var fd: Int32
        var children: [FileName: Int] = [:]
    }

    private(set) var nodes: [Node]
    private var open = 0

    /// `root` stays the caller's.
    init(root: Int32) { nodes = [Node(parent: -1, name: FileName([]), depth: 0, fd: root)] }

    /// Closes every descriptor but the root's once too many are open. Call between entries
    /// only, so no lookup in progress loses its descriptors.
    mutating func trim() {
        guard open >= Self.maxOpen else { return }
        closeAll()
    }

    mutating func closeAll() {
        for i in nodes.indices.dropFirst() where nodes[i].fd >= 0 {
            close(nodes[i].fd)
            nodes[i].fd = -1
        }
        open = 0
    }

    /// The node of the directory `parts`, walking (and with `create`, creating) one
    /// component at a time without following symlinks.
    mutating func node(_ parts: ArraySlice<FileName>, create: Bool, raw: String) throws(CacheError) -> Int {
        var index = 0
        var rest = parts[...]
        while let part = rest.first, let child = nodes[index].children[part] {
            index = child
            rest = rest.dropFirst()
        }
        guard !rest.isEmpty else { return index }
        let start = index
        var fd = try descriptor(index, raw: raw)
        for part in rest {
            var next = SafeTree.openDirectory(fd, part)
            if next < 0 && errno == ENOENT && create {
                if mkdirat(fd, part.cString, 0o755) != 0 && errno != EEXIST {
                    throw .system(SystemError("mkdirat(\(raw))", errno: errno))
                }
                next = SafeTree.openDirectory(fd, part)
            }
            if next < 0 {
                if errno == ELOOP || errno == ENOTDIR {
                    throw .unsafeEntry(path: raw, reason: "\(part) is a symlink or a file, not a directory")
                }
                throw .system(SystemError("openat(\(raw))", errno: errno))
            }
            let child = nodes.count
            nodes.append(Node(parent: index, name: part, depth: nodes[index].depth + 1, fd: next))
            nodes[index].children[part] = child
            open += 1
            // The directory the lookup started from is likely the next entry's too: keep it.
            if index != start { release(index) }
            index = child
            fd = next
        }
        return index
    }

    /// The open descriptor of node `index`, reopening it (and checkpoints on the way) from
    /// its nearest open ancestor.
    mutating func descriptor(_ index: Int, raw: String) throws(CacheError) -> Int32 {
        if nodes[index].fd >= 0 { return nodes[index].fd }
        var chain: [Int] = []
        var base = index
        while nodes[base].fd < 0 {
            chain.append(base)
            base = nodes[base].parent
        }
        let first = base
        for node in chain.reversed() {
            let fd = SafeTree.openDirectory(nodes[base].fd, nodes[node].name)
            guard fd >= 0 else { throw .system(SystemError("openat(\(raw))", errno: errno)) }
            nodes[node].fd = fd
            open += 1
            // Only what this call opened on the way; the ancestor it started from may be
            // another lookup's result still in use.
            if base != first { release(base) }
            base = node
        }
        return nodes[index].fd
    }

    /// Closes the descriptor of a node left behind on the way down, unless it is the root,
    /// near the top (cheap to keep, often shared), or a checkpoint.
    private mutating func release(_ index: Int) {
        let depth = nodes[index].depth
        guard index != 0, depth > 8, depth % Self.stride != 0, nodes[index].fd >= 0 else { return }
        close(nodes[index].fd)
        nodes[index].fd = -1
        open -= 1
    }
}
