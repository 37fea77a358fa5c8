import Foundation
import Sandbox
import TestSupport
import Testing

/// A workspace in a temporary directory and a sandbox over it, on the minimal rootfs.
final class SandboxFixture: @unchecked Sendable {
    let workspace: TemporaryDirectory
    let sandbox: ProjectSandbox

    /// The minimal image `make test` builds.
    static var minimalRootfs: String { TestPaths.minimalRootfs }

    /// A sandbox over a fresh workspace holding `files`; `configure` changes the sandbox's
    /// configuration (limits, tmpfs sizes, another cgroup driver) before it is created.
    ///
    /// Tests use ``with(id:files:configure:_:)``, which destroys it on every way out; a
    /// test whose point is the destroy itself makes one with this and destroys it by hand.
    init(
        id: String = "proj-\(UInt32.random(in: 0...UInt32.max))", files: [String: String] = [:],
        configure: (inout SandboxConfiguration) -> Void = { _ in }
    ) async throws {
        workspace = try TemporaryDirectory(prefix: "corral-ws")
        for (path, text) in files {
            let url = workspace.url.appendingPathComponent(path)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try text.write(to: url, atomically: false, encoding: .utf8)
        }
        var configuration = SandboxConfiguration(
            projectID: id, workspace: workspace.path, rootfs: Self.minimalRootfs, cgroups: TestCgroups.driver)
        configure(&configuration)
        sandbox = try await ProjectSandbox.create(configuration)
    }

    /// Runs `body` with a fresh fixture (see ``init(id:files:configure:)``) and destroys it
    /// when `body` returns or throws, waiting for the destroy: a test that fails half-way
    /// (a thrown error, a `#require`) leaves no sandbox, cgroup or identity range to the
    /// tests after it.
    static func with<T>(
        id: String = "proj-\(UInt32.random(in: 0...UInt32.max))", files: [String: String] = [:],
        configure: (inout SandboxConfiguration) -> Void = { _ in }, _ body: (SandboxFixture) async throws -> T
    ) async throws -> T {
        let fixture = try await SandboxFixture(id: id, files: files, configure: configure)
        let result: Result<T, any Error>
        do {
            result = .success(try await body(fixture))
        } catch {
            result = .failure(error)
        }
        await fixture.destroy()
        return try result.get()
    }

    /// Like ``with(id:files:configure:_:)``, with one fixture per id: every one made is
    /// destroyed on every way out, those already made too when making a later one fails.
    static func with<T>(ids: [String], _ body: ([SandboxFixture]) async throws -> T) async throws -> T {
        var fixtures: [SandboxFixture] = []
        let result: Result<T, any Error>
        do {
            for id in ids { fixtures.append(try await SandboxFixture(id: id)) }
            result = .success(try await body(fixtures))
        } catch {
            result = .failure(error)
        }
        for fixture in fixtures { await fixture.destroy() }
        return try result.get()
    }

    /// Runs `script` with /bin/sh -c.
    func sh(_ script: String, timeout: Duration? = .seconds(30), cwd: String = "/workspace") async throws -> JobResult {
        try await sandbox.exec(JobSpec(["/bin/sh", "-c", script], cwd: cwd, timeout: timeout))
    }

    func destroy() async {
        await sandbox.destroy()
        workspace.remove()
    }
}

/// Counts of host resources a sandbox must not leak.
struct HostCounts: Equatable, CustomStringConvertible {
    var fds: Int
    var threads: Int
    var children: Int
    var mounts: Int

    static func now() -> HostCounts {
        let fm = FileManager.default
        let me = getpid()
        let children = (try? fm.contentsOfDirectory(atPath: "/proc"))?.filter { entry in
            guard let pid = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            return fields.count > 1 && Int32(fields[1]) == me
        }.count
        return HostCounts(
            fds: (try? fm.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1,
            threads: (try? fm.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1,
            children: children ?? -1,
            mounts: sandboxKindMounts()
        )
    }

    var description: String { "fds=\(fds) threads=\(threads) children=\(children) mounts=\(mounts)" }

    /// Host mounts of the kinds a sandbox's init makes (proc, tmpfs, devpts, mqueue, binds
    /// under /tmp or a rootfs image): what a sandbox that leaked into the host's namespace
    /// would add. Workspace volumes (loop devices) that the cache or another test run mounts
    /// on purpose do not count.
    static func sandboxKindMounts() -> Int {
        let text = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
        return text.split(separator: "\n").filter { line in
            let fields = line.split(separator: " ")
            guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count else { return false }
            let point = fields[4]
            let type = fields[dash + 1]
            // Workspace volumes are loop devices the cache mounts on purpose, not a leak.
            if dash + 2 < fields.count, fields[dash + 2].hasPrefix("/dev/loop") { return false }
            return ["proc", "tmpfs", "devpts", "mqueue"].contains(type) || point.hasPrefix("/tmp/")
                || point.contains("rootfs/out")
        }.count
    }
}
