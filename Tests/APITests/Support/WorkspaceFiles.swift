import Foundation
import Glibc
import Host
import Synchronization
import TestSupport

/// The host's real file tools (``FileTools``) over one temporary directory per project, so
/// API tests meet the real `stale_file` check, keyed by the caller the gateway passes, with
/// no sandbox. Files it creates belong to the test's own user.
final class WorkspaceFiles: FileToolBackend {
    let directory: TemporaryDirectory
    private let tools = Mutex<[String: FileTools]>([:])
    /// The caller of every call, in order, as the gateway passed it.
    let callers = Mutex<[String?]>([])
    var fileToolNames: [String] { FileTools.toolNames.sorted() }

    init() throws { directory = try TemporaryDirectory(prefix: "corral-api-files") }

    deinit { directory.remove() }

    /// Writes a file of `project` behind the tools' back, as a job would.
    func put(_ project: String, _ path: String, _ text: String) throws {
        let url = directory.url.appendingPathComponent(project).appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(text.utf8).write(to: url)
    }

    func text(_ project: String, _ path: String) throws -> String {
        try String(
            contentsOf: directory.url.appendingPathComponent(project).appendingPathComponent(path), encoding: .utf8)
    }

    func callFileTool(project: String, name: String, arguments: [String: JSONValue], caller: String?) async throws
        -> ToolResult
    {
        callers.withLock { $0.append(caller) }
        let root = directory.url.appendingPathComponent(project).path
        let tools = try self.tools.withLock { tools in
            if let open = tools[project] { return open }
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            let open = try FileTools(root: root, owner: (uid: getuid(), gid: getgid()))
            tools[project] = open
            return open
        }
        return tools.call(name: name, arguments: arguments, caller: caller)
    }
}
