import Foundation
import Glibc
import Host
import TestSupport
import Testing

/// Named, immutable snapshots at the cache: a restore gives back exactly the tree that was
/// packed (content, modes, symlinks; later additions gone, deletions undone), names are never
/// reused, and the snapshots outlive eviction, a restart and nothing else but their deletion
/// or the project's.
@Suite(.serialized) struct CacheNamedSnapshotTests {
    let f: CacheFixture

    init() throws { f = try CacheFixture() }

    func project(_ cache: ProjectCache, _ id: String = "p") async throws -> Workspace {
        try await cache.register(id, source: try f.source("\(id).tar.gz", CacheFixture.project))
        return try await cache.materialize(id)
    }

    /// The changes an agent makes after a snapshot: a file modified, a mode changed, a file
    /// added, one deleted, one replaced by a symlink, an empty directory added.
    static func change(_ root: String) throws {
        try "#!/bin/sh\nmake all\n".write(toFile: root + "/build.sh", atomically: false, encoding: .utf8)
        #expect(chmod(root + "/build.sh", 0o600) == 0)
        try "new\n".write(toFile: root + "/added.txt", atomically: false, encoding: .utf8)
        #expect(unlink(root + "/README.md") == 0)
        #expect(unlink(root + "/app") == 0)
        try "not a link\n".write(toFile: root + "/app", atomically: false, encoding: .utf8)
        #expect(unlink(root + "/src/app.py") == 0)
        #expect(symlink("../README.md", root + "/src/app.py") == 0)
        #expect(mkdir(root + "/empty", 0o755) == 0)
    }

    @Test func restoreGivesBackTheTreeExactly() async throws {
        let cache = try await f.open()
        let ws = try await project(cache)
        #expect(chmod(ws.path + "/src", 0o750) == 0)
        let before = treeListing(ws.path)
        let made = try await cache.createSnapshot("p", name: "base-1")
        #expect(made.name == "base-1" && made.project == "p" && made.files == 3 && made.sha256.count == 64)
        let blob = f.blobs + "/named/p/base-1.tar.zst"
        #expect(Int64(try FileManager.default.attributesOfItem(atPath: blob)[.size] as! Int) == made.bytes)
        #expect(f.sha256(ofFile: blob) == made.sha256)

        try Self.change(ws.path)
        #expect(treeListing(ws.path) != before)
        let restored = try await cache.restoreSnapshot("p", name: "base-1")
        #expect(restored == made)
        let now = try #require(try await cache.currentWorkspace("p"))
        #expect(now.path == ws.path)
        #expect(now.materializedAt != ws.materializedAt || now.sourceVersion != ws.sourceVersion)
        #expect(treeListing(now.path) == before)
        // The restored tree is what the next write-back stores; the source is unchanged.
        let status = try await cache.status("p")
        #expect(status.dirty == true)
        #expect(status.source.hasPrefix("file://"))
        #expect(status.snapshotBytes == made.bytes)
        #expect(try await cache.snapshot("p") != nil)
        #expect(f.dataContents().filter { $0.hasPrefix("staging/") || $0.hasPrefix("trash/") } == [])
    }

    @Test func namesAreImmutableAndChecked() async throws {
        let cache = try await f.open()
        _ = try await project(cache)
        let first = try await cache.createSnapshot("p", name: "v1")
        f.clock.advance(1)
        await #expect(throws: CacheError.snapshotExists(project: "p", name: "v1")) {
            try await cache.createSnapshot("p", name: "v1")
        }
        #expect(try await cache.snapshot("p", name: "v1") == first)
        for bad in ["", ".hidden", "-opt", "a/b", "a b", String(repeating: "x", count: 65), "..", "é"] {
            await #expect(throws: CacheError.invalidSnapshotName(bad)) {
                try await cache.createSnapshot("p", name: bad)
            }
        }
        await #expect(throws: CacheError.snapshotNotFound(project: "p", name: "nope")) {
            try await cache.restoreSnapshot("p", name: "nope")
        }
        await #expect(throws: CacheError.snapshotNotFound(project: "p", name: "nope")) {
            try await cache.deleteSnapshot("p", name: "nope")
        }
        await #expect(throws: CacheError.unknownProject("q")) { try await cache.createSnapshot("q", name: "v1") }
        let second = try await cache.createSnapshot("p", name: "v2._-0")
        #expect(try await cache.snapshots("p").map(\.name) == ["v1", "v2._-0"])
        try await cache.deleteSnapshot("p", name: "v1")
        #expect(try await cache.snapshots("p") == [second])
        #expect(!FileManager.default.fileExists(atPath: f.blobs + "/named/p/v1.tar.zst"))
        // A deleted name may be used again.
        f.clock.advance(1)
        _ = try await cache.createSnapshot("p", name: "v1")
        #expect(try await cache.snapshots("p").map(\.name) == ["v2._-0", "v1"])
    }

    @Test func restoreIsRefusedWhilePinnedAndChangesNothing() async throws {
        let cache = try await f.open()
        let ws = try await project(cache)
        _ = try await cache.createSnapshot("p", name: "s")
        try Self.change(ws.path)
        let changed = treeListing(ws.path)
        _ = try await cache.acquire("p")
        await #expect {
            try await cache.restoreSnapshot("p", name: "s")
        } throws: { ($0 as? CacheError)?.code == "project_busy" }
        #expect(treeListing(ws.path) == changed)
        #expect(f.dataContents().filter { $0.hasPrefix("staging/") || $0.hasPrefix("downloads/") } == [])
        try await cache.release("p")
    }

    @Test func snapshotsSurviveEvictionRestartAndColdRestore() async throws {
        let expected: [String]
        do {
            let cache = try await f.open()
            let ws = try await project(cache)
            expected = treeListing(ws.path)
            _ = try await cache.createSnapshot("p", name: "keep")
            try Self.change(ws.path)
            try await cache.evict("p")
            #expect(try await cache.status("p").state == .cold)
        }
        // A new cache on the same data directory: the index has the snapshot.
        let reopened = try await f.open()
        #expect(try await reopened.snapshots("p").map(\.name) == ["keep"])
        // The project is cold: restore materializes it (from its write-back), then swaps.
        _ = try await reopened.restoreSnapshot("p", name: "keep")
        let ws = try #require(try await reopened.currentWorkspace("p"))
        #expect(treeListing(ws.path) == expected)
        // Evicted and materialized again: the write-back holds the restored tree.
        try await reopened.evict("p")
        let again = try await reopened.materialize("p")
        #expect(treeListing(again.path) == expected)
    }

    @Test func anotherHostSharingTheStoreListsThemFromTheCatalog() async throws {
        let cache = try await f.open()
        let ws = try await project(cache)
        let expected = treeListing(ws.path)
        let made = try await cache.createSnapshot("p", name: "shared")
        // A second cache with its own data directory and index, on the same primary store.
        var other = f.configuration()
        other.dataDirectory = f.tmp.path + "/other"
        let second = try await ProjectCache.open(other)
        try await second.register("p", source: try f.source("p.tar.gz", CacheFixture.project))
        #expect(try await second.snapshots("p") == [made])
        _ = try await second.restoreSnapshot("p", name: "shared")
        #expect(treeListing(try #require(try await second.currentWorkspace("p")).path) == expected)
        try await second.deleteSnapshot("p", name: "shared")
        #expect(try await cache.snapshots("p") == [])
    }

    @Test func removeTakesTheNamedSnapshotsToo() async throws {
        let cache = try await f.open()
        _ = try await project(cache)
        _ = try await cache.createSnapshot("p", name: "a")
        _ = try await cache.createSnapshot("p", name: "b")
        #expect(allPaths(f.blobs + "/named/p").sorted() == ["a.tar.zst", "b.tar.zst", "catalog.json"])
        try await cache.remove("p")
        #expect(!FileManager.default.fileExists(atPath: f.blobs + "/named/p"))
        let reopened = try await f.open()
        try await reopened.register("p", source: try f.source("p.tar.gz", CacheFixture.project))
        #expect(try await reopened.snapshots("p") == [])
    }

    @Test func localSnapshotsCountTowardTheDiskBudget() async throws {
        // The primary store under the data directory: the snapshots take this disk.
        var configuration = f.configuration()
        configuration.stores.primary = LocalBlobStore(directory: f.data + "/blobs")
        let cache = try await ProjectCache.open(configuration)
        try await cache.register("p", source: try f.source("p.tar.gz", CacheFixture.project))
        _ = try await cache.materialize("p")
        let made = try await cache.createSnapshot("p", name: "s")
        #expect(await cache.localSnapshotBytes() == made.bytes)
        let workspace = try await cache.status("p").diskBytes
        // A budget the workspace alone fits, but not beside the snapshot: the workspace goes
        // (the snapshot is never evicted), and nothing else.
        configuration.diskBudget = workspace + made.bytes - 1
        let budgeted = try await ProjectCache.open(configuration)
        #expect(await budgeted.sweep().overBudget == ["p"])
        #expect(try await budgeted.snapshots("p") == [made])
        configuration.diskBudget = workspace + made.bytes
        let roomy = try await ProjectCache.open(configuration)
        _ = try await roomy.materialize("p")
        #expect(await roomy.sweep().overBudget == [])
    }
}
