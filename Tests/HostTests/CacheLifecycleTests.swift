import Foundation
import Glibc
import Host
import TestSupport
import Testing

/// TTL, pins, LRU under a budget, write-back, eviction and restart, with an injected clock.
@Suite struct CacheLifecycleTests {
    let f: CacheFixture

    init() throws { f = try CacheFixture() }

    func ready(_ cache: ProjectCache, _ id: String, _ entries: [ArchiveFixture.Entry] = CacheFixture.project)
        async throws -> Workspace
    {
        try await cache.register(id, source: try f.source("\(id).tar.gz", entries))
        return try await cache.materialize(id)
    }

    /// What an agent does to a workspace: edit, add, delete, chmod, plant a symlink to the
    /// host's /etc and a FIFO.
    func edit(_ ws: Workspace) throws {
        try "print('v2, edited by the agent')\n".write(
            toFile: ws.path + "/src/app.py", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: ws.path + "/new/dir", withIntermediateDirectories: true)
        try "fresh".write(toFile: ws.path + "/new/dir/file.txt", atomically: false, encoding: .utf8)
        try FileManager.default.removeItem(atPath: ws.path + "/README.md")
        chmod(ws.path + "/new/dir/file.txt", 0o600)
        symlink("/etc", ws.path + "/etc-link")
        mkfifo(ws.path + "/pipe", 0o644)
    }

    static let editedTree: [String: String] = [
        "src": "dir", "src/app.py": "file:print('v2, edited by the agent')\n", "build.sh": "file:#!/bin/sh\nmake\n",
        "app": "link:src/app.py", "new": "dir", "new/dir": "dir", "new/dir/file.txt": "file:fresh",
        "etc-link": "link:/etc",
    ]

    // MARK: - TTL and pins

    @Test func slidingTTLExpiresOnlyUnusedProjects() async throws {
        let cache = try await f.open(ttl: .seconds(3600))
        let ws = try await ready(cache, "p")
        f.clock.advance(30 * 60)
        #expect(await cache.sweep().expired == [])
        f.clock.advance(20 * 60)
        try await cache.touch("p")  // used at +50 min: now expires at +110 min
        f.clock.advance(20 * 60)
        #expect(await cache.sweep().expired == [])
        #expect(try await cache.status("p").expiresAt == f.clock.now.addingTimeInterval(40 * 60))
        f.clock.advance(40 * 60)
        let report = await cache.sweep()
        #expect(report.expired == ["p"])
        #expect(report.failed.isEmpty)
        #expect(try await cache.status("p").state == .cold)
        #expect(!FileManager.default.fileExists(atPath: ws.path))
    }

    @Test func pinnedProjectIsNeverEvicted() async throws {
        let cache = try await f.open(ttl: .seconds(60), diskBudget: 1)
        _ = try await cache.acquire(ready(cache, "job").project)
        f.clock.advance(10 * 3600)
        let report = await cache.sweep()
        #expect(report.expired == [])
        #expect(report.overBudget == [])
        await #expect(throws: CacheError.busy("job has 1 running job(s)")) { try await cache.evict("job") }
        #expect(try await cache.status("job").state == .ready)
        try await cache.release("job")
        f.clock.advance(61)
        #expect(await cache.sweep().expired == ["job"])
    }

    @Test func leastRecentlyUsedGoesFirstUnderTheBudget() async throws {
        let noise = { (seed: Int) in
            String((0..<100_000).map { Character(UnicodeScalar(97 + ($0 * seed + $0 / 7) % 26)!) })
        }
        let cache = try await f.open(ttl: .seconds(100 * 3600), diskBudget: 250_000)
        for (i, id) in ["a", "b", "c"].enumerated() {
            _ = try await ready(cache, id, [.file("data.txt", noise(i + 3))])
            f.clock.advance(60)
        }
        try await cache.touch("a")  // a is now the most recent; b the least
        let sizes = try await ["a", "b", "c"].asyncMap { try await cache.status($0).diskBytes }
        #expect(sizes.allSatisfy { $0 >= 100_000 && $0 < 125_000 })
        let report = await cache.sweep()
        #expect(report.overBudget == ["b"])
        #expect(await cache.list().map(\.state) == [.ready, .cold, .ready])
    }

    // MARK: - Write-back

    @Test func writeBackThenEvictionThenRematerializationKeepsTheAgentsEdits() async throws {
        let cache = try await f.open()
        let ws = try await ready(cache, "p")
        try edit(ws)
        #expect(try await cache.isDirty("p"))
        try await cache.evict("p")
        #expect(!FileManager.default.fileExists(atPath: ws.path))
        #expect(FileManager.default.fileExists(atPath: f.blobs + "/snapshots/p.tar.zst"))
        let again = try await cache.materialize("p")
        #expect(describeTree(again.path) == Self.editedTree)
        #expect(lstatMode(again.path + "/new/dir/file.txt") & 0o777 == 0o600)
        #expect(again.sourceVersion.hasPrefix("snapshot:sha256:"))
        #expect(try await cache.isDirty("p") == false)
    }

    /// File names are bytes: a name that is not UTF-8 must survive write-back unchanged.
    @Test func writeBackKeepsNamesThatAreNotUTF8() async throws {
        let cache = try await f.open()
        let ws = try await ready(cache, "p")
        let odd: [[UInt8]] = [Array("ü-unicode.txt".utf8), [0x62, 0x61, 0x64, 0xff, 0xfe, 0x2e, 0x62, 0x69, 0x6e]]
        for name in odd {
            let path = Array(ws.path.utf8) + [0x2f] + name
            let fd = open(path.map { CChar(bitPattern: $0) } + [0], O_WRONLY | O_CREAT | O_EXCL, 0o644)
            #expect(fd >= 0)
            #expect(write(fd, name, name.count) == name.count)
            close(fd)
        }
        try await cache.evict("p")
        let again = try await cache.materialize("p")
        let names = rawNames(again.path)
        for name in odd {
            #expect(names.contains(name))
            let path = Array(again.path.utf8) + [0x2f] + name
            let fd = open(path.map { CChar(bitPattern: $0) } + [0], O_RDONLY)
            var buffer = [UInt8](repeating: 0, count: 64)
            #expect(read(fd, &buffer, 64) == name.count)
            #expect(Array(buffer.prefix(name.count)) == name)
            close(fd)
        }
        #expect(names.count == CacheFixture.projectTree.filter { !$0.key.contains("/") }.count + 2)
    }

    @Test func snapshotOnDemandWritesOnlyWhenDirty() async throws {
        let primary = FlakyStore(directory: f.blobs)
        let cache = try await f.open(primary: primary)
        let ws = try await ready(cache, "p")
        #expect(try await cache.snapshot("p") == nil)
        try "x".write(toFile: ws.path + "/added.txt", atomically: false, encoding: .utf8)
        let result = try #require(try await cache.snapshot("p"))
        #expect(result.key == "snapshots/p.tar.zst")
        #expect(result.files == 4)
        #expect(result.skipped == 0)
        #expect(result.version == "sha256:" + f.sha256(ofFile: f.blobs + "/snapshots/p.tar.zst"))
        #expect(try await cache.snapshot("p") == nil)
        #expect(primary.puts.withLock { $0 } == 1)
        #expect(try await cache.status("p").snapshotVersion == result.version)
    }

    @Test func periodicWriteBackPicksUpDirtyWorkspaces() async throws {
        let cache = try await f.open(ttl: .seconds(24 * 3600), snapshotInterval: .seconds(600))
        let clean = try await ready(cache, "clean")
        let dirty = try await ready(cache, "dirty")
        _ = clean
        try "x".write(toFile: dirty.path + "/added.txt", atomically: false, encoding: .utf8)
        f.clock.advance(300)
        #expect(await cache.sweep().snapshotted == [])
        f.clock.advance(300)
        #expect(await cache.sweep().snapshotted == ["dirty"])
        f.clock.advance(600)
        #expect(await cache.sweep().snapshotted == [])
    }

    @Test func discardEvictionReturnsToTheSource() async throws {
        let cache = try await f.open()
        try edit(try await ready(cache, "p"))
        try await cache.evict("p", discard: true)
        #expect(!FileManager.default.fileExists(atPath: f.blobs + "/snapshots/p.tar.zst"))
        #expect(describeTree(try await cache.materialize("p").path) == CacheFixture.projectTree)
    }

    @Test func failedWriteBackKeepsTheWorkspace() async throws {
        let primary = FlakyStore(directory: f.blobs)
        let cache = try await f.open(ttl: .seconds(60), primary: primary)
        let ws = try await ready(cache, "p")
        try edit(ws)
        primary.failPuts.withLock { $0 = true }
        await #expect(throws: CacheError.httpStatus(503, "flaky://snapshots/p.tar.zst")) { try await cache.evict("p") }
        f.clock.advance(120)
        #expect(await cache.sweep().failed == ["p": .httpStatus(503, "flaky://snapshots/p.tar.zst")])
        #expect(try await cache.status("p").state == .ready)
        #expect(describeTree(ws.path).filter { $0.key != "pipe" } == Self.editedTree)
        primary.failPuts.withLock { $0 = false }
        #expect(await cache.sweep().expired == ["p"])
        #expect(describeTree(try await cache.materialize("p").path) == Self.editedTree)
    }

    // MARK: - Restart

    @Test func restartReadoptsWorkspacesAndSweepsHalfFinishedWork() async throws {
        var first: ProjectCache? = try await f.open()
        let ws = try await ready(first!, "p")
        try edit(ws)
        first = nil
        // Plant what a crash mid-materialization leaves: a staging tree and a partial download.
        try FileManager.default.createDirectory(
            atPath: f.data + "/staging/p.half/src", withIntermediateDirectories: true)
        try "partial".write(toFile: f.data + "/staging/p.half/src/x", atomically: false, encoding: .utf8)
        try "partial".write(toFile: f.data + "/downloads/p.partial", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(
            atPath: f.data + "/workspaces/stranger", withIntermediateDirectories: true)

        let second = try await f.open()
        #expect(
            second.recovery
                == RecoveryReport(adopted: ["p"], swept: 2, lost: [], orphaned: ["stranger"]))
        #expect(allPaths(f.data + "/staging").isEmpty)
        #expect(allPaths(f.data + "/downloads").isEmpty)
        #expect(try await second.status("p").state == .ready)
        #expect(try await second.isDirty("p"))
        #expect(try await second.materialize("p").path == ws.path)
        try await second.evict("p")
        #expect(describeTree(try await second.materialize("p").path) == Self.editedTree)
    }

    /// A host killed between the store's rename of a write-back and the index's update: the
    /// restart reads the stored object back and makes the index name it, and removes the
    /// temporary file of a put that never got renamed. (`WriteBackCrashTests` kills a real
    /// host fifty times; this window is too short for random kills to land in.)
    @Test func restartSettlesAWriteBackTheHostWasKilledInAndRemovesUnfinishedPuts() async throws {
        var first: ProjectCache? = try await f.open()
        let ws = try await ready(first!, "p")
        try edit(ws)
        let written = try #require(try await first!.snapshot("p", force: true))
        first = nil
        let blob = f.blobs + "/" + written.key
        let index = f.data + "/index.sqlite"
        func pending(_ version: String) throws {
            let db = try SQLiteDatabase(path: index)
            let json = #"{"version": "\#(version)", "digest": "digest-of-the-pack", "diskBytes": 4242}"#
            try db.run("UPDATE projects SET snapshot_pending = ? WHERE id = 'p'", .text(json))
        }
        func row() throws -> SQLiteRow {
            try #require(try SQLiteDatabase(path: index).query("SELECT * FROM projects WHERE id = 'p'").first)
        }

        // The rename happened: the store holds the new pack, the index still the old one.
        try ArchiveFixture.write([.file("x", "the pack the host stored before it died")], format: .tarZst, to: blob)
        let newer = Array(try #require(FileManager.default.contents(atPath: blob)))
        let newerVersion = "sha256:" + SHA256.hash(newer).hexString
        try pending(newerVersion)
        let unfinished = blob + ".tmp-" + UUID().uuidString
        try "half a put".write(toFile: unfinished, atomically: false, encoding: .utf8)
        var second: ProjectCache? = try await f.open()
        #expect(try await second!.status("p").snapshotVersion == newerVersion)
        #expect(try row()["snapshot_version"] == .text(newerVersion))
        #expect(try row()["manifest_digest"] == .text("digest-of-the-pack"))
        #expect(try row()["disk_bytes"] == .integer(4242))
        #expect(try row()["snapshot_pending"] == .null)
        #expect(!FileManager.default.fileExists(atPath: unfinished))
        #expect(FileManager.default.contents(atPath: blob) == Data(newer))
        second = nil

        // The rename did not happen: the previous snapshot stands.
        try pending("sha256:" + String(repeating: "0", count: 64))
        let third = try await f.open()
        #expect(try await third.status("p").snapshotVersion == newerVersion)
        #expect(try row()["snapshot_version"] == .text(newerVersion))
        #expect(try row()["manifest_digest"] == .text("digest-of-the-pack"))
        #expect(try row()["snapshot_pending"] == .null)
    }

    @Test func restartMarksAMissingWorkspaceCold() async throws {
        var first: ProjectCache? = try await f.open()
        let ws = try await ready(first!, "p")
        first = nil
        try FileManager.default.removeItem(atPath: ws.path)
        let second = try await f.open()
        #expect(second.recovery.lost == ["p"])
        #expect(try await second.status("p").state == .cold)
        #expect(describeTree(try await second.materialize("p").path) == CacheFixture.projectTree)
    }
}

extension Array {
    func asyncMap<T>(_ body: (Element) async throws -> T) async rethrows -> [T] {
        var out: [T] = []
        for e in self { out.append(try await body(e)) }
        return out
    }
}
