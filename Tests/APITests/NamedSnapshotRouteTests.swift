import Foundation
import Glibc
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

@testable import API
@testable import Host

/// `/v1/projects/{id}/snapshots…` against a real host with sandboxes and capped workspaces:
/// a restore gives back exactly the snapshot's tree whatever a job did since, is refused
/// while the project is in use, works on a cold project, and deleting the project takes its
/// snapshots and leaves no mount, loop device, cgroup or temporary file behind.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs)"))
struct NamedSnapshotRouteTests {
    typealias Footprint = ProjectLifecycleTests.Footprint

    /// The workspace as the host holds it, without the `.corral` directory the sandbox keeps there.
    static func tree(_ host: CorralHost, _ id: String = "demo") async throws -> [String] {
        let workspace = try #require(try await host.cache.currentWorkspace(id))
        return treeListing(workspace.path).filter { !$0.hasPrefix(".corral") }
    }

    static func exec(_ client: any TestClientProtocol, _ command: String, project: String = "demo") async throws
        -> JSON
    {
        try await ProjectLifecycleTests.exec(client, command, project: project)
    }

    /// Every kind of change: a file modified, a mode changed, a file added, one deleted, one
    /// replaced by a symlink, an empty directory added.
    static let changes =
        "printf 'changed\\n' > notes.txt && chmod 600 hello.sh && echo new > added.txt && rm src/app.js"
        + " && rm hello.py && ln -s notes.txt hello.py && mkdir emptydir"

    static func names(_ reply: JSON) -> [String] {
        guard case .array(let items) = reply["snapshots"] else { return [] }
        return items.compactMap { $0["name"]?.stringValue }
    }

    static func running(_ client: any TestClientProtocol, _ command: String) async throws -> String {
        let job = try await client.call(
            .post, "/v1/projects/demo/jobs", json: ["command": .string(command), "background": true])
        let id = try #require(job.json["job_id"]?.stringValue ?? job.json["id"]?.stringValue, "\(job.text)")
        for _ in 0..<200 {
            if try await client.call(.get, "/v1/projects/demo/jobs/\(id)").json["status"] == "running" { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        return id
    }

    @Test func restoreResetsTheTreeExactly() async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.exec(client, "chmod 750 src")
            let old = try #require(await host.pool.existing("demo"))
            let before = try await Self.tree(host)
            let made = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "base"])
            #expect(made.status == .created, "\(made.text)")
            // The four demo files and `.corral/.gitignore`, written with the project's home.
            #expect(made.json["name"] == "base" && made.json["project"] == "demo" && made.json["files"] == 5)
            let bytes = try #require(made.json["bytes"]?.numberValue)
            #expect(made.json["sha256"]?.stringValue?.count == 64 && made.json["created_at"]?.stringValue != nil)
            let blob = await host.configuration.dataDirectory + "/cache/blobs/named/demo/base.tar.zst"
            #expect(FileManager.default.fileExists(atPath: blob))

            let again = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "base"])
            #expect(again.status == .conflict && again.code == "snapshot_exists", "\(again.text)")
            for bad in [".base", "-x", "a b", String(repeating: "n", count: 65)] {
                let refused = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": .string(bad)])
                #expect(refused.status == .badRequest && refused.code == "invalid_snapshot_name", "\(refused.text)")
                #expect(refused.json["error"]?["message"]?.stringValue?.contains(NamedSnapshot.rule) == true)
            }

            _ = try await Self.exec(client, Self.changes)
            #expect(try await Self.tree(host) != before)
            let list = try await client.call(.get, "/v1/projects/demo/snapshots")
            #expect(Self.names(list.json) == ["base"], "\(list.text)")
            #expect((try await client.call(.get, "/v1/projects/demo/snapshots/base")).json == made.json)
            let unknown = try await client.call(.get, "/v1/projects/demo/snapshots/nope")
            #expect(unknown.status == .notFound && unknown.code == "snapshot_not_found", "\(unknown.text)")
            let unknownRestore = try await client.call(.post, "/v1/projects/demo/snapshots/nope/restore")
            #expect(unknownRestore.status == .notFound && unknownRestore.code == "snapshot_not_found")

            let restored = try await client.call(.post, "/v1/projects/demo/snapshots/base/restore")
            #expect(restored.status == .ok, "\(restored.text)")
            #expect(restored.json["restored"] == made.json)
            #expect(try await Self.tree(host) == before)
            // The sandbox over the old tree is gone; the next command sees the restored one.
            #expect(!old.isAlive)
            let listed = try await Self.exec(client, "find . -path ./.corral -prune -o -type f -print | sort")
            #expect(listed["stdout"] == "./hello.py\n./hello.sh\n./notes.txt\n./src/app.js\n", "\(listed)")
            let project = try await client.call(.get, "/v1/projects/demo")
            #expect(project.json["dirty"] == true)
            #expect(project.json["snapshot_bytes"]?.numberValue == bytes)

            let deleted = try await client.call(.delete, "/v1/projects/demo/snapshots/base")
            #expect(deleted.status == .noContent, "\(deleted.text)")
            #expect((try await client.call(.get, "/v1/projects/demo/snapshots/base")).status == .notFound)
            #expect(!FileManager.default.fileExists(atPath: blob))
            let audit =
                (try? String(
                    contentsOfFile: await host.configuration.dataDirectory + "/audit.log", encoding: .utf8)) ?? ""
            for action in ["created", "restored", "deleted"] {
                #expect(audit.contains(#""action":"\#(action)""#) && audit.contains(#""event":"snapshot""#))
            }
        }
    }

    @Test func restoreWhileAJobRunsOrASessionLivesIsRefusedAndChangesNothing() async throws {
        try await LiveHost.run { client, host in
            _ = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "s"])
            _ = try await Self.exec(client, Self.changes)
            let changed = try await Self.tree(host)
            let job = try await Self.running(client, "sleep 300")
            let refused = try await client.call(.post, "/v1/projects/demo/snapshots/s/restore")
            #expect(refused.status == .conflict && refused.code == "project_busy", "\(refused.text)")
            #expect(refused.json["error"]?["message"]?.stringValue?.contains("1 running job (\(job))") == true)
            let notTaken = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "t"])
            #expect(notTaken.status == .conflict && notTaken.code == "project_busy", "\(notTaken.text)")
            #expect(try await Self.tree(host) == changed)
            _ = try await client.call(.post, "/v1/projects/demo/jobs/\(job)/cancel", json: [:])
            for _ in 0..<200 {
                if try await client.call(.get, "/v1/projects/demo/jobs/\(job)").json["status"] != "running" { break }
                try await Task.sleep(for: .milliseconds(20))
            }

            let session = try await SessionTests.create(client)
            let inSession = try await client.call(.post, "/v1/projects/demo/snapshots/s/restore")
            #expect(inSession.status == .conflict && inSession.code == "project_busy", "\(inSession.text)")
            #expect(try await Self.tree(host) == changed)
            // A snapshot may be taken while a session lives.
            let taken = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "t"])
            #expect(taken.status == .created, "\(taken.text)")
            _ = try await client.call(.delete, "/v1/projects/demo/sessions/\(session)")
            let restored = try await client.call(.post, "/v1/projects/demo/snapshots/s/restore")
            #expect(restored.status == .ok, "\(restored.text)")
            #expect(try await Self.tree(host) != changed)
        }
    }

    @Test func coldRestoreThenDeleteProjectLeavesNothing() async throws {
        try await LiveHost.run { client, host in
            let data = await host.configuration.dataDirectory
            // What the host starts once (event loops, the egress proxy) is up before the count.
            _ = try await client.call(.put, "/v1/projects/other/archive", raw: try LiveHost.archive(["a.txt": "a\n"]))
            _ = try await Self.exec(client, "true", project: "other")
            // "demo" was materialized by its upload; counted cold, so its volume is what goes.
            try await host.evict("demo", discard: true)
            let before = Footprint.of(data)
            _ = try await Self.exec(client, "true")
            let expected = try await Self.tree(host)
            _ = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "one"])
            _ = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "two"])
            _ = try await Self.exec(client, Self.changes)
            let evicted = try await client.call(.delete, "/v1/projects/demo/workspace")
            #expect(evicted.status == .ok, "\(evicted.text)")
            #expect((try await client.call(.get, "/v1/projects/demo")).json["state"] == "cold")
            let restored = try await client.call(.post, "/v1/projects/demo/snapshots/one/restore")
            #expect(restored.status == .ok, "\(restored.text)")
            #expect(try await Self.tree(host) == expected)
            _ = try await Self.exec(client, "true")

            let deleted = try await client.call(.delete, "/v1/projects/demo")
            #expect(deleted.status == .noContent, "\(deleted.text)")
            #expect(!FileManager.default.fileExists(atPath: data + "/cache/blobs/named/demo"))
            try await ProjectLifecycleTests.settle { Footprint.of(data) == before }
            #expect(Footprint.of(data) == before)
            for scratch in ["staging", "downloads", "snapshots", "trash"] {
                #expect(allPaths(data + "/cache/" + scratch) == [], "\(scratch)")
            }
            // The id comes back as a new project, without the old one's snapshots.
            _ = try await client.call(.put, "/v1/projects/demo/archive", raw: try LiveHost.archive(["x": "x\n"]))
            let list = try await client.call(.get, "/v1/projects/demo/snapshots")
            #expect(list.json["snapshots"] == [], "\(list.text)")
        }
    }

    @Test func snapshotRoutesFollowTheTokensGlobs() async throws {
        let configuration = APIConfiguration(port: 0, tokens: TestTokens.store)
        try await LiveHost.run(configuration) { client, _ in
            let refused = try await client.call(
                .post, "/v1/projects/demo/snapshots", json: ["name": "x"], token: TestTokens.beta)
            #expect(refused.status == .forbidden)
            #expect(
                (try await client.call(.get, "/v1/projects/demo/snapshots", token: TestTokens.beta)).status
                    == .forbidden)
            #expect((try await client.call(.get, "/v1/projects/demo/snapshots")).status == .unauthorized)
            let made = try await client.call(
                .post, "/v1/projects/demo/snapshots", json: ["name": "x"], token: TestTokens.admin)
            #expect(made.status == .created, "\(made.text)")
        }
    }

    @Test func snapshotsOutliveAHostRestart() async throws {
        let data = try TemporaryDirectory()
        let expected: [String]
        do {
            let host = try await LiveHost.open(data)
            _ = try await host.upload("demo", archive: try LiveHost.archive(LiveHost.demo))
            _ = try await host.warm("demo")
            expected = try await Self.tree(host)
            _ = try await host.createSnapshot("demo", name: "kept")
            await host.shutdown(grace: .seconds(1))
        }
        let host = try await LiveHost.open(data)
        do {
            #expect(try await host.snapshots("demo").map(\.name) == ["kept"])
            _ = try await host.restoreSnapshot("demo", name: "kept")
            #expect(try await Self.tree(host) == expected)
        } catch {
            await host.shutdown(grace: .seconds(1))
            throw error
        }
        await host.shutdown(grace: .seconds(1))
    }
}
