import Foundation
import Host
import TestSupport
import Testing

/// A workspace in a temporary directory, the file tools over it, and ways to build and
/// inspect the tree behind the tools' back (as a job would).
final class FileToolFixture: @unchecked Sendable {
    /// The uid/gid the tools must give what they create: not root, not the test's own.
    static let owner = (uid: UInt32(4242), gid: UInt32(4343))

    let directory: TemporaryDirectory
    let tools: FileTools
    var root: String { directory.path }

    init(limits: FileTools.Limits = FileTools.Limits(), files: [String: String] = [:]) throws {
        directory = try TemporaryDirectory(prefix: "corral-tools")
        tools = try FileTools(root: directory.path, owner: Self.owner, limits: limits)
        for (path, text) in files { try write(path, text) }
    }

    /// Writes a file directly (not through the tools), creating parents.
    func write(_ path: String, _ text: String) throws {
        try write(path, bytes: Array(text.utf8))
    }

    func write(_ path: String, bytes: [UInt8]) throws {
        let url = directory.url.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: url)
    }

    func mkdir(_ path: String) throws {
        try FileManager.default.createDirectory(
            at: directory.url.appendingPathComponent(path), withIntermediateDirectories: true)
    }

    /// Plants a symbolic link at `path` pointing at `target`, as a job could.
    func symlink(_ path: String, to target: String) throws {
        #expect(Glibc.symlink(target, root + "/" + path) == 0, "symlink \(path)")
    }

    func contents(_ path: String) -> String? {
        guard let data = FileManager.default.contents(atPath: root + "/" + path) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    func stat(_ path: String) -> Glibc.stat? { Self.lstat(root + "/" + path) }

    static func lstat(_ path: String) -> Glibc.stat? {
        var st = Glibc.stat()
        return Glibc.lstat(path, &st) == 0 ? st : nil
    }

    /// Names in a directory of the workspace, sorted.
    func names(_ path: String = ".") -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + path)) ?? []).sorted()
    }

    /// Sets a file's modification time (seconds since the epoch) without following links.
    func setModified(_ path: String, _ seconds: Int) {
        var times = [timespec(tv_sec: seconds, tv_nsec: 0), timespec(tv_sec: seconds, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, root + "/" + path, &times, AT_SYMLINK_NOFOLLOW) == 0)
    }

    /// Everything observable about the tree: types, modes, owners, mtimes, contents and
    /// link targets. Equal snapshots mean nothing changed.
    func snapshot() -> TreeSnapshot { TreeSnapshot(root) }
}

/// The state of a directory tree, compared before and after a call that must change nothing.
struct TreeSnapshot: Equatable, CustomStringConvertible {
    struct Node: Equatable {
        var mode: UInt32
        var uid: UInt32
        var gid: UInt32
        var inode: UInt64
        var modified: Int
        var modifiedNanoseconds: Int
        var content: [UInt8]
    }

    var nodes: [String: Node] = [:]

    init(_ root: String) { visit(root, relative: "") }

    private mutating func visit(_ path: String, relative: String) {
        guard let st = FileToolFixture.lstat(path) else { return }
        var content: [UInt8] = []
        switch st.st_mode & S_IFMT {
        case S_IFREG: content = Array(FileManager.default.contents(atPath: path) ?? Data())
        case S_IFLNK: content = Array(((try? FileManager.default.destinationOfSymbolicLink(atPath: path)) ?? "").utf8)
        default: break
        }
        nodes[relative.isEmpty ? "." : relative] = Node(
            mode: st.st_mode, uid: st.st_uid, gid: st.st_gid, inode: UInt64(st.st_ino), modified: st.st_mtim.tv_sec,
            modifiedNanoseconds: st.st_mtim.tv_nsec, content: content)
        if st.st_mode & S_IFMT == S_IFDIR {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [] {
                visit(path + "/" + name, relative: relative.isEmpty ? name : relative + "/" + name)
            }
        }
    }

    var description: String { nodes.keys.sorted().joined(separator: ", ") }
}

/// A file on the host, outside any workspace, that no tool call may read or change.
final class HostFile: @unchecked Sendable {
    let directory: TemporaryDirectory
    let path: String
    let content = "host secret \(UUID().uuidString)\n"

    init() throws {
        directory = try TemporaryDirectory(prefix: "corral-host")
        path = directory.path + "/secret.txt"
        try content.write(toFile: path, atomically: false, encoding: .utf8)
    }

    /// The file and its directory as they are now.
    func snapshot() -> TreeSnapshot { TreeSnapshot(directory.path) }
}

/// Runs `body` on a fresh thread and fails the test if it has not returned within
/// `seconds`: a call that blocks (on a FIFO, say) must not hang the suite.
func withDeadline<T: Sendable>(
    seconds: Double, _ body: @escaping @Sendable () -> T, sourceLocation: SourceLocation = #_sourceLocation
) -> T? {
    let done = DispatchSemaphore(value: 0)
    let box = ResultBox<T>()
    Thread {
        box.value = body()
        done.signal()
    }.start()
    guard done.wait(timeout: .now() + seconds) == .success else {
        Issue.record("did not return within \(seconds) s", sourceLocation: sourceLocation)
        return nil
    }
    return box.value
}

final class ResultBox<T>: @unchecked Sendable {
    var value: T?
}

/// Shorthand for "this call must fail with that error".
func expectError<T>(
    _ expected: ToolError, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T
) {
    #expect(errorOf(sourceLocation: sourceLocation, body) == expected, sourceLocation: sourceLocation)
}

/// The tool error a call fails with, or nil (and a recorded issue) if it succeeds.
func errorOf<T>(sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> T) -> ToolError? {
    do {
        let value = try body()
        Issue.record("expected an error, got \(value)", sourceLocation: sourceLocation)
        return nil
    } catch let error as ToolError {
        return error
    } catch {
        Issue.record("expected a ToolError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// The error code of a call, or "ok".
func codeOf<T>(_ body: () throws -> T) -> String {
    do {
        _ = try body()
        return "ok"
    } catch let error as ToolError {
        return error.code
    } catch {
        return "\(error)"
    }
}
