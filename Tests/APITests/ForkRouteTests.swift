import Foundation
import Glibc
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

@testable import API
@testable import Host

/// `POST /v1/projects/{id}/fork` against a real host with sandboxes, loop volumes and
/// overlayfs: source and fork change independently, a fork outlives its source, a fork's
/// write-back and re-materialization give back its tree byte for byte, each fork has its
/// own cap, a busy source is refused, and nothing is left once every project is deleted.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs)"))
struct ForkRouteTests {
    typealias Footprint = ProjectLifecycleTests.Footprint

    static func tree(_ host: CorralHost, _ id: String) async throws -> [String] {
        try await NamedSnapshotRouteTests.tree(host, id)
    }

    static func exec(_ client: any TestClientProtocol, _ command: String, project: String) async throws -> JSON {
        try await ProjectLifecycleTests.exec(client, command, project: project)
    }

    static func fork(_ client: any TestClientProtocol, _ source: String, _ body: [String: JSON]) async throws
        -> Reply
    {
        try await client.call(.post, "/v1/projects/\(source)/fork", json: .object(body))
    }

    /// A project of `count` files of 1 KiB in 20 directories (a few MB, a few thousand
    /// files: the benchmark carries the 1 GiB case).
    static func many(_ count: Int) -> [String: String] {
        var files: [String: String] = [:]
        for i in 0..<count { files["d\(i % 20)/f\(i).txt"] = String(repeating: "\(i % 10)", count: 1024) + "\n" }
        return files
    }

    /// Paths in a project's upper tree (what the fork wrote itself), without `.corral`.
    static func upper(_ host: CorralHost, _ id: String) async -> [String] {
        let data = await host.configuration.dataDirectory
        return allPaths(data + "/cache/mounts/\(id)/upper").filter { !$0.hasPrefix(".corral") }
    }

    @Test func sourceAndForkChangeIndependentlyAndTheForkOutlivesItsSource() async throws {
        try await LiveHost.run { client, host in
            let data = await host.configuration.dataDirectory
            // What the host starts once is up before the count.
            _ = try await Self.exec(client, "true", project: "demo")
            let before = Footprint.of(data)
            let uploaded = try await client.call(
                .put, "/v1/projects/big/archive", raw: try LiveHost.archive(Self.many(3000)))
            #expect(uploaded.status == .created, "\(uploaded.text)")
            _ = try await Self.exec(client, "true", project: "big")
            let original = try await Self.tree(host, "big")

            let made = try await Self.fork(client, "big", ["id": "fork1"])
            #expect(made.status == .created, "\(made.text)")
            #expect(made.json["id"] == "fork1" && made.json["state"] == "ready" && made.json["policy"] == "default")
            #expect(try await Self.tree(host, "fork1") == original)
            #expect(try await Self.tree(host, "big") == original)

            _ = try await Self.exec(
                client, "echo source > d0/f0.txt && rm d1/f1.txt && echo s > only-source.txt", project: "big")
            let forked = try await Self.exec(
                client, "cat d0/f0.txt | head -c 3; echo fork > d2/f2.txt && rm -r d3 && echo f > only-fork.txt",
                project: "fork1")
            #expect(forked["stdout"] == "000", "\(forked)")
            let inSource = try await Self.exec(
                client,
                "test -e only-fork.txt || echo no-fork-file; test -e d3/f3.txt && echo d3-kept; head -c 3 d2/f2.txt",
                project: "big")
            #expect(inSource["stdout"] == "no-fork-file\nd3-kept\n222", "\(inSource)")
            let sourceView = try await Self.tree(host, "big")
            let forkView = try await Self.tree(host, "fork1")
            #expect(
                sourceView.contains { $0.hasPrefix("only-source.txt ") }
                    && !sourceView.contains { $0.hasPrefix("only-fork.txt ") })
            #expect(
                forkView.contains { $0.hasPrefix("only-fork.txt ") }
                    && !forkView.contains { $0.hasPrefix("only-source.txt ") })
            #expect(sourceView.contains { $0.hasPrefix("d3/f3.txt ") } && !forkView.contains { $0.hasPrefix("d3") })
            #expect(
                !sourceView.contains { $0.hasPrefix("d1/f1.txt ") } && forkView.contains { $0.hasPrefix("d1/f1.txt ") })
            // The fork's sandbox owns its files without copying them up: its own tree holds
            // only what it changed.
            let own = await Self.upper(host, "fork1").sorted()
            #expect(own == ["d2", "d2/f2.txt", "d3", "only-fork.txt"], "\(own)")

            // A fork of the fork sees the fork's changes, and changes on its own.
            let second = try await Self.fork(client, "fork1", ["id": "fork2"])
            #expect(second.status == .created, "\(second.text)")
            #expect(try await Self.tree(host, "fork2") == forkView)
            _ = try await Self.exec(client, "echo two > only-fork.txt && rm d4/f4.txt", project: "fork2")
            #expect(try await Self.tree(host, "fork1") == forkView)
            let both = try await Self.exec(
                client, "cat only-fork.txt; test -e d4/f4.txt && echo kept", project: "fork1")
            #expect(both["stdout"] == "f\nkept\n", "\(both)")

            // Deleting the source keeps its forks working, over layers that stay mounted.
            let deleted = try await client.call(.delete, "/v1/projects/big")
            #expect(deleted.status == .noContent, "\(deleted.text)")
            #expect(try await Self.tree(host, "fork1") == forkView)
            let after = try await Self.exec(client, "cat only-fork.txt; wc -l < d5/f5.txt", project: "fork1")
            #expect(after["stdout"] == "f\n1\n", "\(after)")
            let users = await host.cache.layerUsers()
            #expect(users.count == 2 && users.values.allSatisfy { !$0.isEmpty }, "\(users)")
            let mountinfo = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
            // The layers' own mounts (the overlays name them among their options too).
            let layerMounts = mountinfo.split(separator: "\n").filter {
                $0.split(separator: " ").dropFirst(4).first?.hasPrefix(data + "/cache/layer-mounts/") == true
            }
            #expect(layerMounts.count == 2, "\(layerMounts)")

            for id in ["fork2", "fork1"] {
                let gone = try await client.call(.delete, "/v1/projects/\(id)")
                #expect(gone.status == .noContent, "\(gone.text)")
            }
            #expect(await host.cache.layerUsers() == [:])
            try await ProjectLifecycleTests.settle { Footprint.of(data) == before }
            #expect(Footprint.of(data) == before)
            #expect(allPaths(data + "/cache/layers") == [] && allPaths(data + "/cache/layer-mounts") == [])
            #expect(allPaths(data + "/cache/volumes") == ["demo.img"])
            let audit = (try? String(contentsOfFile: data + "/audit.log", encoding: .utf8)) ?? ""
            #expect(audit.contains(#""event":"fork""#) && audit.contains(#""from":"fork1""#))
        }
    }

    @Test func aForksWriteBackAndRematerializationGiveItsTreeBackByteForByte() async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.exec(client, "mkdir -p lib/deep && echo x > lib/deep/x.txt", project: "demo")
            #expect((try await Self.fork(client, "demo", ["id": "f"])).status == .created)
            _ = try await Self.exec(
                client,
                "printf 'changed\\n' > notes.txt && chmod 600 hello.sh && rm -r src && rm hello.py"
                    + " && ln -s notes.txt hello.py && mkdir emptydir && echo n > lib/deep/new.txt"
                    + " && rm lib/deep/x.txt",
                project: "f")
            let expected = try await Self.tree(host, "f")
            #expect(expected.contains("hello.py link -> notes.txt") && !expected.contains { $0.hasPrefix("src") })
            let evicted = try await client.call(.delete, "/v1/projects/f/workspace")
            #expect(evicted.status == .ok, "\(evicted.text)")
            #expect((try await client.call(.get, "/v1/projects/f")).json["state"] == "cold")
            let data = await host.configuration.dataDirectory
            #expect(!FileManager.default.fileExists(atPath: data + "/cache/mounts/f"))
            // The source still stands on the layer; the fork let go of it.
            #expect(await host.cache.layerUsers().values.map { $0 } == [["demo"]])
            let warmed = try await client.call(.post, "/v1/projects/f/warm")
            #expect(warmed.status == .ok, "\(warmed.text)")
            #expect(try await Self.tree(host, "f") == expected)
            let listed = try await Self.exec(
                client, "cat hello.py; stat -c %a hello.sh; ls src 2>&1 | head -1", project: "f")
            #expect(listed["stdout"]?.stringValue?.hasPrefix("changed\n600\n") == true, "\(listed)")
            // And the source never saw any of it.
            let source = try await Self.exec(client, "cat hello.py; cat lib/deep/x.txt", project: "demo")
            #expect(source["stdout"] == "print('hello from python')\nx\n", "\(source)")
        }
    }

    @Test func eachForkHasItsOwnCap() async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.exec(client, "true", project: "demo")
            let made = try await Self.fork(
                client, "demo", ["id": "small", "limits": ["workspace_bytes": .number(Double(16 << 20))]])
            #expect(made.status == .created, "\(made.text)")
            let full = try await Self.exec(
                client, "dd if=/dev/zero of=fill bs=1M count=40 2>&1 | grep -o 'No space left on device' | head -1",
                project: "small")
            #expect(full["stdout"]?.stringValue?.contains("No space left on device") == true, "\(full)")
            let source = try await Self.exec(
                client, "dd if=/dev/zero of=fill bs=1M count=40 2>/dev/null && stat -c %s fill", project: "demo")
            #expect(source["stdout"]?.stringValue == "\(40 << 20)\n", "\(source)")
            let info = try await client.call(.get, "/v1/projects/small")
            #expect(info.json["limits"]?["workspace_bytes"]?.stringValue == "\(16 << 20)", "\(info.text)")
            _ = host
        }
    }

    @Test func forksAreRefusedWhileTheSourceIsBusyAndBadRequestsChangeNothing() async throws {
        try await LiveHost.run { client, host in
            let job = try await NamedSnapshotRouteTests.running(client, "sleep 300")
            let refused = try await Self.fork(client, "demo", ["id": "f"])
            #expect(refused.status == .conflict && refused.code == "project_busy", "\(refused.text)")
            #expect(refused.json["error"]?["message"]?.stringValue?.contains("1 running job (\(job))") == true)
            #expect((try await client.call(.get, "/v1/projects/f")).status == .notFound)
            #expect(await host.cache.layerUsers() == [:])
            _ = try await client.call(.post, "/v1/projects/demo/jobs/\(job)/cancel", json: [:])

            let unknown = try await Self.fork(client, "nope", ["id": "f"])
            #expect(unknown.status == .notFound, "\(unknown.text)")
            let exists = try await Self.fork(client, "demo", ["id": "demo"])
            #expect(exists.status == .conflict && exists.code == "project_exists", "\(exists.text)")
            let noSnapshot = try await Self.fork(client, "demo", ["id": "f", "snapshot": "missing"])
            #expect(noSnapshot.status == .notFound && noSnapshot.code == "snapshot_not_found", "\(noSnapshot.text)")
            let badID = try await Self.fork(client, "demo", ["id": "../x"])
            #expect(badID.status == .badRequest && badID.code == "invalid_project", "\(badID.text)")
            let extra = try await Self.fork(client, "demo", ["id": "f", "color": "red"])
            #expect(extra.status == .unprocessableContent && extra.code == "invalid_argument", "\(extra.text)")
            #expect((try await client.call(.get, "/v1/projects/f")).status == .notFound)
            #expect(await host.cache.layerUsers() == [:])
        }
    }

    @Test func forksOfANamedSnapshotShareOneLayer() async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.exec(client, "echo v1 > version", project: "demo")
            _ = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "v1"])
            let snapshotTree = try await Self.tree(host, "demo")
            _ = try await Self.exec(client, "echo v2 > version", project: "demo")
            for id in ["a", "b"] {
                let made = try await Self.fork(client, "demo", ["id": .string(id), "snapshot": "v1"])
                #expect(made.status == .created, "\(made.text)")
                #expect(try await Self.tree(host, id) == snapshotTree)
            }
            // One layer, extracted once, under both; the source was not frozen.
            let users = await host.cache.layerUsers()
            #expect(users.values.map { $0 } == [["a", "b"]], "\(users)")
            let version = try await Self.exec(client, "cat version", project: "b")
            #expect(version["stdout"] == "v1\n")
            _ = try await Self.exec(client, "echo b > version", project: "b")
            #expect((try await Self.exec(client, "cat version", project: "a"))["stdout"] == "v1\n")
            // The snapshot's deletion keeps the layer while forks stand on it.
            _ = try await client.call(.delete, "/v1/projects/demo/snapshots/v1")
            #expect(await host.cache.layerUsers().count == 1)
            for id in ["a", "b"] { _ = try await client.call(.delete, "/v1/projects/\(id)") }
            #expect(await host.cache.layerUsers() == [:])
        }
    }

    @Test func forksAreMountedAgainAfterARestart() async throws {
        let data = try TemporaryDirectory()
        let expected: [String]
        do {
            let host = try await LiveHost.open(data)
            _ = try await host.upload("demo", archive: try LiveHost.archive(LiveHost.demo))
            _ = try await host.fork("demo", into: "f")
            try await ForkRouteTests.change(host, "f")
            expected = try await Self.tree(host, "f")
            await host.shutdown(grace: .seconds(1))
        }
        let host = try await LiveHost.open(data)
        do {
            #expect(await host.cache.recovery.adopted.sorted() == ["demo", "f"])
            #expect(try await Self.tree(host, "f") == expected)
            #expect(try await Self.tree(host, "demo") != expected)
            try await host.delete("f")
            try await host.delete("demo")
            #expect(await host.cache.layerUsers() == [:])
        } catch {
            await host.shutdown(grace: .seconds(1))
            throw error
        }
        await host.shutdown(grace: .seconds(1))
    }

    /// A change made in the fork through the cache's workspace path (no sandbox needed).
    static func change(_ host: CorralHost, _ id: String) async throws {
        let workspace = try #require(try await host.cache.currentWorkspace(id))
        try "changed\n".write(toFile: workspace.path + "/notes.txt", atomically: false, encoding: .utf8)
        unlink(workspace.path + "/hello.py")
    }
}
