import Foundation
import Glibc
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

@testable import API
@testable import Host

/// `DELETE /v1/projects/{id}`, `PUT …/archive` over a materialized project and `PATCH
/// …/archive`, against a real host with sandboxes and capped workspaces (loop devices).
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs)"))
struct ProjectLifecycleTests {
    /// What a project leaves on the host while it lives: mounts and loop devices under the
    /// host's data directory, the test run's cgroups, this process's children and fds.
    struct Footprint: Equatable, CustomStringConvertible {
        var mounts: Int
        var loops: Int
        var cgroups: Int
        var children: Int

        var description: String { "mounts=\(mounts) loops=\(loops) cgroups=\(cgroups) children=\(children)" }

        static func of(_ data: String) -> Footprint {
            let mountinfo = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
            let loops = Self.losetup()
            var cgroups = 0
            for root in TestCgroups.driver?.directories ?? [] {
                cgroups += describeTree(root).values.filter { $0 == "dir" }.count
            }
            return Footprint(
                mounts: mountinfo.split(separator: "\n").filter { $0.contains(data) }.count,
                loops: loops.split(separator: "\n").filter { $0.contains(data) }.count, cgroups: cgroups,
                children: children())
        }

        static func losetup() -> String {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/sbin/losetup")
            p.arguments = ["-a"]
            let out = Pipe()
            p.standardOutput = out
            guard (try? p.run()) != nil else { return "" }
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return String(decoding: data, as: UTF8.self)
        }

        /// Processes whose parent is this one (a sandbox's init, a session's helpers).
        static func children() -> Int {
            let me = getpid()
            return ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).filter { entry in
                guard let pid = Int32(entry),
                    let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                    let close = stat.lastIndex(of: ")")
                else { return false }
                let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
                return fields.count > 1 && Int32(fields[1]) == me
            }.count
        }
    }

    static func descriptors() -> [String] {
        let fm = FileManager.default
        return ((try? fm.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).map {
            (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + $0)) ?? "?"
        }.sorted()
    }

    /// The descriptors open now that were not in `before` (a multiset difference), for a
    /// failure message that names the leak instead of listing ninety descriptors.
    static func added(to before: [String]) -> [String] {
        var left = before
        return descriptors().filter { name in
            guard let index = left.firstIndex(of: name) else { return true }
            left.remove(at: index)
            return false
        }
    }

    static func settle(_ done: () -> Bool) async throws {
        for _ in 0..<500 where !done() { try await Task.sleep(for: .milliseconds(10)) }
    }

    static func exec(_ client: any TestClientProtocol, _ command: String, project: String = "demo") async throws
        -> JSON
    {
        let reply = try await client.call(.post, "/v1/projects/\(project)/exec", json: ["command": .string(command)])
        #expect(reply.status == .ok, "\(reply.text)")
        return reply.json
    }

    static func archive(_ entries: [ArchiveFixture.Entry]) throws -> [UInt8] {
        let path = NSTemporaryDirectory() + "/corral-lifecycle-\(UUID().uuidString).tar.gz"
        defer { unlink(path) }
        try ArchiveFixture.write(entries, format: .tarGz, to: path)
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    // MARK: - Delete

    @Test func deleteEndsTheJobSessionAndSandboxAndLeavesNothing() async throws {
        // One long job at a time in the project, so the second one waits in the queue.
        try await LiveHost.run(jobLimits: JobLimits(perProject: [.short: 4, .long: 1])) { client, host in
            let data = await host.configuration.dataDirectory
            // Another project with a sandbox and a session: what the host starts once (event
            // loops, the egress proxy's) is up before the count, and it must outlive the delete.
            _ = try await client.call(.put, "/v1/projects/other/archive", raw: try LiveHost.archive(["a.txt": "a\n"]))
            _ = try await Self.exec(client, "true", project: "other")
            let otherSession = try await SessionTests.create(client, project: "other")
            _ = try await SessionTests.run(client, otherSession, "true", project: "other")
            // "demo" was materialized by its upload; counted cold, so its volume is what goes.
            try await host.evict("demo", discard: true)
            let before = Footprint.of(data)
            let fds = SessionTests.openDescriptors()
            let fdsBefore = Self.descriptors()
            let job = try await client.call(
                .post, "/v1/projects/demo/jobs", json: ["command": "sleep 300", "background": true])
            let jobID = try #require(job.json["job_id"]?.stringValue ?? job.json["id"]?.stringValue, "\(job.text)")
            let queued = try await client.call(.post, "/v1/projects/demo/jobs", json: ["command": "sleep 301"])
            let queuedID = try #require(queued.json["job_id"]?.stringValue ?? queued.json["id"]?.stringValue)
            #expect((try await client.call(.get, "/v1/projects/demo/jobs/\(queuedID)")).json["status"] == "queued")
            let session = try await SessionTests.create(client)
            _ = try await SessionTests.run(client, session, "sleep 300 & true")
            _ = try await client.call(.post, "/v1/projects/demo/snapshot")
            #expect(await host.pool.existing("demo") != nil)
            #expect(Footprint.of(data) != before)

            let deleted = try await client.call(.delete, "/v1/projects/demo")
            #expect(deleted.status == .noContent, "\(deleted.text)")
            for id in [jobID, queuedID] {
                let ended = try await client.call(.get, "/v1/projects/demo/jobs/\(id)")
                #expect(ended.json["status"] == "cancelled", "\(ended.text)")
            }
            #expect(await host.sessions.list("demo", caller: nil).isEmpty)
            #expect(await host.pool.existing("demo") == nil)
            #expect((try await client.call(.get, "/v1/projects/demo")).status == .notFound)
            let blobs = data + "/cache/blobs"
            #expect(!FileManager.default.fileExists(atPath: blobs + "/uploads/demo"))
            #expect(!FileManager.default.fileExists(atPath: blobs + "/snapshots/demo.tar.zst"))
            #expect(!FileManager.default.fileExists(atPath: data + "/cache/volumes/demo.img"))
            #expect(!FileManager.default.fileExists(atPath: data + "/cache/mounts/demo"))
            try await Self.settle { Footprint.of(data) == before }
            #expect(Footprint.of(data) == before)
            try await Self.settle { SessionTests.openDescriptors() <= fds }
            #expect(SessionTests.openDescriptors() <= fds, "new: \(Self.added(to: fdsBefore))")
            #expect(await host.pool.existing("other") != nil)
            #expect((try await client.call(.get, "/v1/projects/other/sessions/\(otherSession)")).status == .ok)
            let audit = (try? String(contentsOfFile: data + "/audit.log", encoding: .utf8)) ?? ""
            #expect(audit.contains(#""action":"deleted""#))

            // The id is free: a new project under it starts from its own archive.
            let again = try await client.call(
                .put, "/v1/projects/demo/archive", raw: try LiveHost.archive(["only.txt": "fresh\n"]))
            #expect(again.status == .created, "\(again.text)")
            let listed = try await Self.exec(
                client, "find . -path ./.corral -prune -o -type f -print | sort; cat only.txt")
            #expect(listed["stdout"] == "./only.txt\nfresh\n", "\(listed)")
        }
    }

    /// `dirty` says whether the workspace changed since it was last saved, as it is when
    /// asked, not as the last sweep saw it.
    @Test func dirtyShowsAnEditAtOnceAndASaveAtOnce() async throws {
        try await LiveHost.run(realFiles: true) { client, _ in
            func dirty() async throws -> JSON? { try await client.call(.get, "/v1/projects/demo").json["dirty"] }
            _ = try await Self.exec(client, "true")
            _ = try await client.call(.post, "/v1/projects/demo/snapshot")
            #expect(try await dirty() == false)
            _ = try await Self.exec(client, "echo edited >> notes.txt")
            #expect(try await dirty() == true)
            _ = try await client.call(.post, "/v1/projects/demo/snapshot")
            #expect(try await dirty() == false)
            let wrote = try await client.call(
                .post, "/v1/projects/demo/tools/write_file", json: ["path": "/workspace/b.txt", "content": "b"])
            #expect(wrote.status == .ok, "\(wrote.text)")
            #expect(try await dirty() == true)
        }
    }

    @Test func deletingAnUnknownProjectIsNotFound() async throws {
        try await LiveHost.run { client, _ in
            let reply = try await client.call(.delete, "/v1/projects/ghost")
            #expect(reply.status == .notFound)
            #expect(reply.code == "project_not_found")
            #expect((try await client.call(.get, "/v1/projects/demo")).status == .ok)
        }
    }

    @Test func deleteFollowsTheTokensGlobs() async throws {
        let configuration = APIConfiguration(port: 0, tokens: TestTokens.store)
        try await LiveHost.run(configuration) { client, _ in
            let refused = try await client.call(.delete, "/v1/projects/demo", token: TestTokens.beta)
            #expect(refused.status == .forbidden)
            let anonymous = try await client.call(.delete, "/v1/projects/demo")
            #expect(anonymous.status == .unauthorized)
            #expect((try await client.call(.get, "/v1/projects/demo", token: TestTokens.admin)).status == .ok)
        }
    }

    // MARK: - Replace

    @Test func uploadOverAnIdleProjectReplacesItsFilesForTheNextCommand() async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.exec(client, "echo edited > notes.txt")
            let old = try #require(await host.pool.existing("demo"))
            let replaced = try await client.call(
                .put, "/v1/projects/demo/archive",
                raw: try LiveHost.archive(["new/main.py": "print(2)\n", "README": "v2\n"]))
            #expect(replaced.status == .ok, "\(replaced.text)")
            #expect(replaced.json["state"] == "ready")
            #expect(replaced.json["dirty"] == false)
            // The sandbox over the old tree is gone; the next command gets a fresh one.
            #expect(!old.isAlive)
            let listed = try await Self.exec(
                client, "find . -path ./.corral -prune -o -print | sort; cat README new/main.py")
            #expect(listed["stdout"] == ".\n./README\n./new\n./new/main.py\nv2\nprint(2)\n", "\(listed)")
        }
    }

    @Test func uploadWhileAJobRunsIsRefusedAndChangesNothing() async throws {
        try await LiveHost.run { client, _ in
            let job = try await client.call(
                .post, "/v1/projects/demo/jobs", json: ["command": "sleep 300", "background": true])
            let jobID = try #require(job.json["job_id"]?.stringValue ?? job.json["id"]?.stringValue, "\(job.text)")
            for _ in 0..<200 {
                let now = try await client.call(.get, "/v1/projects/demo/jobs/\(jobID)")
                if now.json["status"] == "running" { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            let refused = try await client.call(
                .put, "/v1/projects/demo/archive", raw: try LiveHost.archive(["other.txt": "x\n"]))
            #expect(refused.status == .conflict, "\(refused.text)")
            #expect(refused.code == "project_busy")
            let message = refused.json["error"]?["message"]?.stringValue ?? ""
            #expect(message.contains("1 running job (\(jobID))"), "\(message)")
            #expect(message.contains("/v1/projects/demo/jobs/{job}/cancel"), "\(message)")
            let patched = try await client.call(
                .patch, "/v1/projects/demo/archive", raw: try LiveHost.archive(["other.txt": "x\n"]))
            #expect(patched.status == .conflict, "\(patched.text)")
            #expect(patched.code == "project_busy")
            _ = try await client.call(.post, "/v1/projects/demo/jobs/\(jobID)/cancel", json: [:])
            let listed = try await Self.exec(client, "find . -path ./.corral -prune -o -type f -print | sort")
            #expect(listed["stdout"] == "./hello.py\n./hello.sh\n./notes.txt\n./src/app.js\n", "\(listed)")
        }
    }

    // MARK: - Patch

    @Test func patchWritesAndDeletesAndTheSandboxSeesItAtOnce() async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.exec(client, "true")
            let sandbox = try #require(await host.pool.existing("demo"))
            let patch = try Self.archive([
                .file("hello.sh", "echo patched\n"), .file("src/util.js", "export {}\n"), .file(".wh.notes.txt", ""),
                .file("src/.wh.app.js", ""),
            ])
            let reply = try await client.call(.patch, "/v1/projects/demo/archive", raw: patch)
            #expect(reply.status == .ok, "\(reply.text)")
            #expect(
                reply.json == [
                    "project": "demo", "files_written": 2, "directories_created": 0, "paths_deleted": 2,
                    "bytes_written": 23,
                ])
            #expect(sandbox.isAlive)
            let listed = try await Self.exec(
                client, "find . -path ./.corral -prune -o -type f -print | sort; sh hello.sh")
            #expect(listed["stdout"] == "./hello.py\n./hello.sh\n./src/util.js\npatched\n", "\(listed)")
            let project = try await client.call(.get, "/v1/projects/demo")
            #expect(project.json["dirty"] == true)
        }
    }

    @Test func hostilePatchIsRefusedWithNothingChanged() async throws {
        try await LiveHost.run { client, _ in
            for entries: [ArchiveFixture.Entry] in [
                [.file("hello.sh", "echo owned\n"), .file("../escape", "x")],
                [.file("hello.sh", "echo owned\n"), .file("/etc/owned", "x")],
                [.file("hello.sh", "echo owned\n"), .device("dev")],
            ] {
                let reply = try await client.call(.patch, "/v1/projects/demo/archive", raw: try Self.archive(entries))
                #expect(reply.status == .unprocessableContent, "\(reply.text)")
                #expect(reply.code == "unsafe_entry")
            }
            let listed = try await Self.exec(client, "cat hello.sh")
            #expect(listed["stdout"] == "echo hello from sh\n")
            let unknown = try await client.call(
                .patch, "/v1/projects/ghost/archive", raw: try Self.archive([.file("a", "b")]))
            #expect(unknown.status == .notFound)
        }
    }
}
