import Foundation
import Glibc
import Host
import TestSupport
import Testing

/// Issue #21, findings 3, 4 and 8: whatever an agent writes within its quota is saved by
/// write-back at the size it really takes, and restored exactly; a snapshot that could not
/// be restored fails when it is taken, and the workspace stays.
@Suite(.serialized) struct SnapshotRoundTripTests {
    let f: CacheFixture
    static let mib = 1 << 20

    init() throws { f = try CacheFixture() }

    func ready(_ cache: ProjectCache, _ id: String) async throws -> Workspace {
        try await cache.register(id, source: try f.source("\(id).tar.gz", [.file("a.txt", "x")]))
        return try await cache.materialize(id)
    }

    var snapshot: String { f.blobs + "/snapshots/p.tar.zst" }

    /// `bsdtar -tvf` of the snapshot: one line per entry.
    func listing() throws -> [String] {
        let (status, output) = try runTool(["/usr/bin/bsdtar", "-tvf", snapshot])
        #expect(status == 0)
        return output.split(separator: "\n").map(String.init)
    }

    func stat(_ path: String) -> stat {
        var st = Glibc.stat()
        #expect(lstat(path, &st) == 0)
        return st
    }

    /// Whether every byte of the file is zero, read a MiB at a time.
    func allZeros(_ path: String) throws -> Bool {
        let handle = try #require(FileHandle(forReadingAtPath: path))
        defer { try? handle.close() }
        let zero = Data(count: Self.mib)
        while true {
            let chunk = handle.readData(ofLength: Self.mib)
            if chunk.isEmpty { return true }
            if chunk != zero.prefix(chunk.count) { return false }
        }
    }

    func random(_ bytes: Int) throws -> Data {
        let handle = try #require(FileHandle(forReadingAtPath: "/dev/urandom"))
        defer { try? handle.close() }
        return handle.readData(ofLength: bytes)
    }

    // MARK: - Hard links (finding 3)

    /// A 16 MiB file with 100 more names used to be packed 101 times (1.6 GB); now once.
    @Test func hardLinksAreStoredOnceAndComeBackAsOneFile() async throws {
        let cache = try await f.open()
        let ws = try await ready(cache, "p")
        let data = try random(16 * Self.mib)
        try data.write(to: URL(fileURLWithPath: ws.path + "/blob.bin"))
        try FileManager.default.createDirectory(atPath: ws.path + "/links", withIntermediateDirectories: false)
        for i in 0..<100 { #expect(link(ws.path + "/blob.bin", ws.path + "/links/l\(i)") == 0) }

        let result = try #require(try await cache.snapshot("p"))
        #expect(result.files == 2)
        let entries = try listing()
        #expect(entries.filter { $0.hasPrefix("h") }.count == 100)
        #expect(entries.filter { $0.contains(" link to blob.bin") }.count == 100)
        // Random data does not compress: one copy is 16 MiB, and that is all there is.
        #expect(result.bytes > Int64(data.count) && result.bytes < 2 * Int64(data.count))

        try await cache.evict("p")
        let again = try await cache.materialize("p")
        let first = stat(again.path + "/blob.bin")
        #expect(first.st_nlink == 101)
        for i in 0..<100 { #expect(stat(again.path + "/links/l\(i)").st_ino == first.st_ino) }
        #expect(FileManager.default.contents(atPath: again.path + "/links/l99") == data)
        #expect(try await cache.isDirty("p") == false)
    }

    // MARK: - What restore refuses is never saved (finding 4)

    /// 300 MiB of zeros compress past any bomb ratio, and an 8 GiB sparse file is 8 GiB
    /// only in name: both are the agent's own work and must come back, holes included.
    @Test func zerosAndSparseFilesRoundTripWithTheirHoles() async throws {
        let cache = try await f.open()
        let ws = try await ready(cache, "p")
        let zeros = ws.path + "/zeros.bin"
        #expect(FileManager.default.createFile(atPath: zeros, contents: Data(count: 300 * Self.mib)))
        let sparse = ws.path + "/sparse.img"
        let fd = open(sparse, O_WRONLY | O_CREAT | O_EXCL, 0o640)
        #expect(ftruncate(fd, 8 << 30) == 0)
        #expect(pwrite(fd, "middle", 6, 1 << 30) == 6)
        #expect(pwrite(fd, "end", 3, (8 << 30) - 3) == 3)
        close(fd)
        let hole = ws.path + "/hole.img"
        #expect(FileManager.default.createFile(atPath: hole, contents: nil))
        #expect(truncate(hole, 1 << 30) == 0)

        let clock = ContinuousClock()
        let start = clock.now
        let result = try #require(try await cache.snapshot("p"))
        // The holes are never read: packing 9 GiB of apparent size is packing 300 MiB.
        #expect(clock.now - start < .seconds(10))
        #expect(result.bytes < 1 * Int64(Self.mib))
        let entries = try listing()
        #expect(entries.contains { $0.contains(" 8589934592 ") && $0.hasSuffix(" sparse.img") })

        try await cache.evict("p")
        let again = try await cache.materialize("p")
        #expect(again.sourceVersion.hasPrefix("snapshot:"))
        let restoredZeros = stat(again.path + "/zeros.bin")
        #expect(restoredZeros.st_size == 300 * Self.mib)
        #expect(try allZeros(again.path + "/zeros.bin"))
        let restored = stat(again.path + "/sparse.img")
        #expect(restored.st_size == 8 << 30)
        #expect(restored.st_blocks * 512 <= 64 << 10)
        #expect(restored.st_mode & 0o777 == 0o640)
        let back = open(again.path + "/sparse.img", O_RDONLY)
        defer { close(back) }
        var buffer = [UInt8](repeating: 0xaa, count: 8)
        #expect(pread(back, &buffer, 6, 1 << 30) == 6)
        #expect(Array(buffer.prefix(6)) == Array("middle".utf8))
        #expect(pread(back, &buffer, 3, (8 << 30) - 3) == 3)
        #expect(Array(buffer.prefix(3)) == Array("end".utf8))
        #expect(pread(back, &buffer, 8, 4 << 30) == 8)
        #expect(buffer == [UInt8](repeating: 0, count: 8))
        let restoredHole = stat(again.path + "/hole.img")
        #expect(restoredHole.st_size == 1 << 30)
        #expect(restoredHole.st_blocks == 0)
    }

    /// A snapshot larger than restore allows fails when it is taken, says which cap and by
    /// how much, stops before packing the rest, and leaves the workspace as it was, dirty.
    @Test func snapshotOverTheCapFailsAtSnapshotTimeAndKeepsTheWorkspace() async throws {
        var config = f.configuration()
        config.extraction.maxBytes = 16 * Int64(Self.mib)
        let cache = try await ProjectCache.open(config)
        let ws = try await ready(cache, "p")
        let data = try random(20 * Self.mib)
        try data.write(to: URL(fileURLWithPath: ws.path + "/big.bin"))
        // Entries so far: "a.txt" (5 name bytes, 1 data byte), then "big.bin" (7 name bytes).
        let excess = 20 * Self.mib - (16 * Self.mib - 13)
        let error = CacheError.tooLarge(
            "snapshot expands past the 16777216-byte cap of file data and names (at least \(excess) bytes over, at big.bin)"
        )
        await #expect(throws: error) { try await cache.snapshot("p") }
        #expect(try await cache.status("p").dirty == true)
        await #expect(throws: error) { try await cache.evict("p") }
        #expect(try await cache.status("p").state == .ready)
        #expect(try await cache.status("p").dirty == true)
        #expect(FileManager.default.contents(atPath: ws.path + "/big.bin") == data)
        #expect(!FileManager.default.fileExists(atPath: snapshot))
        #expect(allPaths(f.data + "/snapshots") == [])
        #expect(allPaths(f.data + "/trash") == [])
        let sweep = await cache.sweep(now: f.clock.now.addingTimeInterval(10 * 3600))
        #expect(sweep.failed["p"] == error)
        #expect(try await cache.status("p").state == .ready)
    }

    /// The entry count is the extractor's: a workspace with more entries than restore
    /// accepts is refused at snapshot time too.
    @Test func snapshotWithMoreEntriesThanRestoreAcceptsFails() async throws {
        var config = f.configuration()
        config.extraction.maxEntries = 10
        let cache = try await ProjectCache.open(config)
        let ws = try await ready(cache, "p")
        for i in 0..<10 { #expect(FileManager.default.createFile(atPath: ws.path + "/f\(i)", contents: nil)) }
        await #expect(throws: CacheError.tooLarge("snapshot has more than 10 entries")) {
            try await cache.snapshot("p")
        }
        #expect(try await cache.status("p").dirty == true)
        #expect(unlink(ws.path + "/f9") == 0)
        #expect(try await cache.snapshot("p") != nil)
        try await cache.evict("p")
        #expect(allPaths(try await cache.materialize("p").path).count == 10)
    }

    // MARK: - Deep trees (finding 8)

    /// Makes `levels` nested directories `d` below `root` by descriptor (the path passes
    /// PATH_MAX), with `leaf.txt` at the bottom.
    func deepTree(_ root: String, levels: Int) {
        var fd = open(root, O_RDONLY | O_DIRECTORY)
        for _ in 0..<levels {
            #expect(mkdirat(fd, "d", 0o755) == 0)
            let next = openat(fd, "d", O_RDONLY | O_DIRECTORY)
            close(fd)
            fd = next
        }
        let leaf = openat(fd, "leaf.txt", O_WRONLY | O_CREAT | O_EXCL, 0o644)
        #expect(write(leaf, "bottom", 6) == 6)
        close(leaf)
        close(fd)
    }

    /// The depth of the `d` chain below `root` and what its leaf holds.
    func measure(_ root: String) -> (Int, String) {
        var fd = open(root, O_RDONLY | O_DIRECTORY)
        var depth = 0
        while true {
            let next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            if next < 0 { break }
            close(fd)
            fd = next
            depth += 1
        }
        defer { close(fd) }
        let leaf = openat(fd, "leaf.txt", O_RDONLY)
        defer { close(leaf) }
        var buffer = [UInt8](repeating: 0, count: 16)
        let n = read(leaf, &buffer, 16)
        return (depth, String(decoding: buffer.prefix(max(0, n)), as: UTF8.self))
    }

    @Test func treeDeeperThan1024LevelsIsDirtySnapshotsEvictsAndRestores() async throws {
        let cache = try await f.open()
        let ws = try await ready(cache, "p")
        deepTree(ws.path, levels: 1500)
        #expect(try await cache.isDirty("p"))
        #expect(try await cache.status("p").dirty == true)
        let result = try #require(try await cache.snapshot("p"))
        #expect(result.files == 2)
        // TTL eviction writes nothing more (already clean) and removes the whole tree.
        let sweep = await cache.sweep(now: f.clock.now.addingTimeInterval(10 * 3600))
        #expect(sweep.expired == ["p"])
        #expect(sweep.failed.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: ws.path))
        #expect(allPaths(f.data + "/trash") == [])
        let again = try await cache.materialize("p")
        let (depth, leaf) = measure(again.path)
        #expect(depth == 1500)
        #expect(leaf == "bottom")
        #expect(try await cache.isDirty("p") == false)
        try await cache.evict("p", discard: true)
        #expect(allPaths(f.data + "/workspaces") == [])
    }

    /// A name deeper than the restore limit on path bytes is refused at snapshot time, not
    /// written into a snapshot libarchive could not read back.
    @Test func pathLongerThanRestoreAcceptsFailsAtSnapshotTime() async throws {
        var config = f.configuration()
        config.extraction.maxPathBytes = 1000
        let cache = try await ProjectCache.open(config)
        let ws = try await ready(cache, "p")
        deepTree(ws.path, levels: 600)
        let error = await #expect(throws: CacheError.self) { try await cache.snapshot("p") }
        #expect(
            error?.description.hasSuffix("\": path or link target longer than 1000 bytes") == true,
            "\(String(describing: error))")
        #expect(error?.code == "unsafe_entry")
        #expect(try await cache.status("p").dirty == true)
    }

}

/// The same promise inside a real disk cap (ext4 on a loop device): the snapshot is bounded
/// by the cap restore will apply, and one that exceeds it fails before anything is lost.
@Suite(.serialized, .enabled(if: canUseLoopDevices, "needs root and /dev/loop-control"))
struct SnapshotQuotaTests {
    let q: QuotaFixture
    var f: CacheFixture { q.f }

    init() throws { q = try QuotaFixture() }

    @Test func snapshotOverALoweredCapFailsAndTheWorkspaceStays() async throws {
        let before = try q.hostState()
        let cache = try await q.open()
        try await cache.register("p", source: try f.source("p.tar.gz", [.file("a.txt", "x")]))
        let ws = try await cache.materialize("p")
        let data = Data((0..<(20 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        try data.write(to: URL(fileURLWithPath: ws.path + "/big.bin"))
        // A policy edit lowers the cap: the next materialization gets 16 MiB, so a snapshot
        // of 20 MiB could never come back and must not replace the one that can.
        try await cache.setWorkspaceQuota("p", bytes: 16 << 20)
        let excess = (20 << 20) - ((16 << 20) - 13)
        let error = CacheError.tooLarge(
            "snapshot expands past the 16777216-byte cap of file data and names (at least \(excess) bytes over, at big.bin)"
        )
        await #expect(throws: error) { try await cache.snapshot("p") }
        await #expect(throws: error) { try await cache.evict("p") }
        let status = try await cache.status("p")
        #expect(status.state == .ready)
        #expect(status.dirty == true)
        #expect(FileManager.default.contents(atPath: ws.path + "/big.bin") == data)
        #expect(!FileManager.default.fileExists(atPath: f.blobs + "/snapshots/p.tar.zst"))
        // Back under the cap, it is written back and restored into the smaller filesystem.
        #expect(unlink(ws.path + "/big.bin") == 0)
        try await cache.evict("p")
        let again = try await cache.materialize("p")
        #expect(q.filesystemSize(again.path) <= 16 << 20)
        #expect(describeTree(again.path) == ["a.txt": "file:x"])
        try await cache.evict("p", discard: true)
        #expect(try q.hostState() == before)
    }
}
