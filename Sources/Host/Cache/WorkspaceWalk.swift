import Glibc
import Sandbox

/// A depth-first walk of a directory tree, by descriptor, with no depth limit and a bounded
/// number of open descriptors.
///
/// An agent decides how deep its workspace is, so neither Swift recursion (the stack) nor one
/// descriptor per level (the fd table) may grow with it. The walk keeps an explicit stack of
/// frames, one per directory level, and holds descriptors for the deepest ``window`` levels
/// and the root only. Returning to a level whose descriptor was closed reopens it with
/// `openat(child, "..")` (one call, whatever the depth) and checks it is the same directory
/// (device and inode) as the one entered; if a job moved things meanwhile, it is reopened
/// by name from the nearest ancestor still open, and if that fails too the rest of that
/// directory is skipped, as an entry deleted mid-walk is.
struct WorkspaceWalk {
    /// Descriptors held besides the root.
    static let window = 32

    /// What ``run(root:enter:leave:)`` does after `enter` saw an entry.
    enum Step {
        /// Go on with the next sibling.
        case skip
        /// The entry is a directory: walk its children, then call `leave` for it.
        case descend
    }

    private struct Frame {
        var name: FileName
        var fd: Int32
        var dev: UInt64
        var ino: UInt64
        var names: [FileName] = []
        var next = 0
        /// Length of ``WorkspaceWalk/path`` up to and including this directory's trailing `/`.
        var pathLength: Int
    }

    private var frames: [Frame] = []
    /// The relative path of the current directory, `/`-terminated (empty at the root).
    private var path: [UInt8] = []

    /// Walks the tree below the open directory `root` (which stays open and owned by the
    /// caller) in sorted order, one level per frame.
    ///
    /// `enter(parent, name, path)` sees every entry, with a descriptor of its directory and
    /// its relative path; `opened(fd)` sees each directory right after it was opened,
    /// before it is listed; `leave(parent, name, path)` runs after a directory's children.
    static func run(
        root: Int32,
        enter: (Int32, FileName, [UInt8]) throws(CacheError) -> Step,
        opened: (Int32) throws(CacheError) -> Void = { _ throws(CacheError) in },
        leave: (Int32, FileName, [UInt8]) throws(CacheError) -> Void = { _, _, _ throws(CacheError) in }
    ) throws(CacheError) {
        var walk = WorkspaceWalk()
        var st = stat()
        try sys("fstat(walk root)") { fstat(root, &st) }
        walk.frames.append(
            Frame(
                name: FileName([]), fd: root, dev: UInt64(st.st_dev), ino: UInt64(st.st_ino),
                names: try SafeTree.list(root), pathLength: 0))
        defer { walk.closeAll() }
        while let top = walk.frames.indices.last {
            if walk.frames[top].next == walk.frames[top].names.count {
                guard top > 0 else { return }
                try walk.pop(leave)
                continue
            }
            let name = walk.frames[top].names[walk.frames[top].next]
            walk.frames[top].next += 1
            let parent = walk.frames[top].fd
            let entryPath = walk.path + name.bytes
            guard try enter(parent, name, entryPath) == .descend else { continue }
            let child = SafeTree.openDirectory(parent, name)
            // Gone, or no longer a directory: like an entry deleted mid-walk.
            if child < 0 { continue }
            try walk.push(child, name, opened)
        }
    }

    private mutating func push(_ fd: Int32, _ name: FileName, _ opened: (Int32) throws(CacheError) -> Void)
        throws(CacheError)
    {
        var st = stat()
        let names: [FileName]
        do throws(CacheError) {
            try sys("fstat(\(name))") { fstat(fd, &st) }
            try opened(fd)
            names = try SafeTree.list(fd)
        } catch {
            close(fd)
            throw error
        }
        path += name.bytes + [0x2f]
        frames.append(
            Frame(
                name: name, fd: fd, dev: UInt64(st.st_dev), ino: UInt64(st.st_ino), names: names,
                pathLength: path.count))
        // Only the deepest levels keep a descriptor; the root is the caller's and stays.
        let shed = frames.count - 1 - Self.window
        if shed > 0, frames[shed].fd >= 0 {
            close(frames[shed].fd)
            frames[shed].fd = -1
        }
    }

    private mutating func pop(_ leave: (Int32, FileName, [UInt8]) throws(CacheError) -> Void) throws(CacheError) {
        let done = frames.removeLast()
        path.removeLast(path.count - frames[frames.count - 1].pathLength)
        defer { if done.fd >= 0 { close(done.fd) } }
        let top = frames.count - 1
        if frames[top].fd < 0 { reopen(top, from: done.fd) }
        // The directory could not be found again: skip the rest of it.
        guard frames[top].fd >= 0 else {
            frames[top].next = frames[top].names.count
            return
        }
        try leave(frames[top].fd, done.name, path + done.name.bytes)
    }

    /// Reopens frame `index` through `..` of its child, else by name from the nearest open
    /// ancestor; either way it must be the directory first entered. Leaves `fd` at -1 if not.
    private mutating func reopen(_ index: Int, from child: Int32) {
        if child >= 0 {
            let fd = SafeTree.openDirectory(child, FileName([0x2e, 0x2e]))
            if fd >= 0, same(fd, index) {
                frames[index].fd = fd
                return
            }
            if fd >= 0 { close(fd) }
        }
        guard let base = frames[..<index].lastIndex(where: { $0.fd >= 0 }) else { return }
        var fd = frames[base].fd
        for level in (base + 1)...index {
            let next = SafeTree.openDirectory(fd, frames[level].name)
            if fd != frames[base].fd { close(fd) }
            guard next >= 0 else { return }
            fd = next
        }
        if same(fd, index) { frames[index].fd = fd } else { close(fd) }
    }

    private func same(_ fd: Int32, _ index: Int) -> Bool {
        var st = stat()
        return fstat(fd, &st) == 0 && UInt64(st.st_dev) == frames[index].dev && UInt64(st.st_ino) == frames[index].ino
    }

    private mutating func closeAll() {
        for frame in frames.dropFirst() where frame.fd >= 0 { close(frame.fd) }
        frames.removeAll()
    }
}
