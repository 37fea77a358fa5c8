import Foundation
import Glibc
import Host
import TestSupport
import Testing

/// Needs root and the loop driver: the disk cap is a real ext4 image on a real loop device.
let canUseLoopDevices = getuid() == 0 && access("/dev/loop-control", R_OK | W_OK) == 0

/// docs/THREATS.md, "Starving the host or other projects" (disk fill: a size-capped volume per workspace): each
/// capped workspace is its own size-limited filesystem, and nothing of it outlives it.
@Suite(.serialized, .enabled(if: canUseLoopDevices, "needs root and /dev/loop-control"))
struct CacheQuotaTests {
    let q: QuotaFixture
    var f: CacheFixture { q.f }
    let mib = QuotaFixture.mib
    let quota = QuotaFixture.quota

    init() throws { q = try QuotaFixture() }

    @Test func materializesByteIdenticalFilesIntoItsOwnCappedFilesystem() async throws {
        let before = try q.hostState()
        let cache = try await q.open()
        let (url, files) = try q.binaryProject("bin")
        try await cache.register("p", source: url)
        let ws = try await cache.materialize("p")
        #expect(ws.path == q.mountPoint("p") + "/workspace")
        #expect(q.holds(ws.path, files))
        #expect(
            q.shape(ws.path) == [
                "app": "link:src/app.py", "bin": "dir", "bin/blob.dat": "file:3145728", "build.sh": "file:15",
                "src": "dir", "src/app.py": "file:12",
            ])
        #expect(lstatMode(ws.path + "/build.sh") & 0o777 == 0o755)
        // Its own ext4 filesystem, no larger than the cap, mounted nosuid and nodev.
        let mount = try #require(q.mountOptions(q.mountPoint("p")))
        #expect(mount.type == "ext4")
        #expect(mount.options.isSuperset(of: ["rw", "nosuid", "nodev"]))
        let size = q.filesystemSize(ws.path)
        #expect(size <= quota && size > quota * 9 / 10)
        #expect(q.device(ws.path) != q.device(f.data))
        #expect(try await cache.status("p").quotaBytes == quota)
        #expect(try await cache.isDirty("p") == false)
        let during = try q.hostState()
        #expect(during.mounts == before.mounts + 1)
        #expect(during.loops.count == before.loops.count + 1)
        #expect(during.loops.filter { $0.hasSuffix("(\(q.image("p")))") }.count == 1)

        try await cache.evict("p", discard: true)
        #expect(try q.hostState() == before)
        #expect(!FileManager.default.fileExists(atPath: q.image("p")))
        #expect(!FileManager.default.fileExists(atPath: q.mountPoint("p")))
        #expect(try await cache.status("p").state == .cold)
    }

    @Test func writingForeverGetsENOSPCAndTheImageNeverOutgrowsTheCap() async throws {
        let before = try q.hostState()
        let cache = try await q.open()
        try await cache.register("p", source: try f.source("p.tar.gz", CacheFixture.project))
        let ws = try await cache.materialize("p")
        let fd = open(ws.path + "/fill.bin", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        #expect(fd >= 0)
        let chunk = [UInt8](repeating: 0xA5, count: 1 << 20)
        var written: Int64 = 0
        var failure: Int32 = 0
        while written < 200_000_000 {
            let n = write(fd, chunk, chunk.count)
            if n < 0 {
                failure = errno
                break
            }
            written += Int64(n)
        }
        #expect(failure == ENOSPC)
        #expect(written > 50 * mib && written < quota)
        // Everything accepted is on the image now, so its host allocation is the real cost.
        #expect(fsync(fd) == 0)
        close(fd)
        let cost = q.allocated(q.image("p"))
        #expect(cost >= written)
        #expect(cost <= quota + mib)
        // Through Foundation, the way a host-side tool would write: the same ENOSPC.
        let handle = try #require(FileHandle(forWritingAtPath: ws.path + "/fill.bin"))
        _ = try handle.seekToEnd()
        #expect(throws: (any Error).self) { try handle.write(contentsOf: Data(chunk)) }
        try handle.close()
        #expect(q.allocated(q.image("p")) <= quota + mib)

        try await cache.evict("p", discard: true)
        #expect(try q.hostState() == before)
    }

    @Test func aFailedExtractionLeavesNoImageMountOrLoopDevice() async throws {
        let before = try q.hostState()
        let cache = try await q.open()
        // Garbage behind a gzip header, and a real archive cut off in the middle of a file
        // (so files are written before the failure).
        let garbage = f.sources + "/garbage.tar.gz"
        try Data([0x1f, 0x8b, 0x08, 0x00] + [UInt8](repeating: 0x41, count: 4000)).write(
            to: URL(fileURLWithPath: garbage))
        let (url, _) = try q.binaryProject("cut")
        let whole = try Data(contentsOf: URL(string: url)!)
        let cut = f.sources + "/cut-half.tar.gz"
        try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: cut))
        // 62 MiB of content under a 64 MiB cap: the extractor's byte count allows it, the
        // filesystem (whose metadata takes room too) does not.
        let big = (0..<62).map { ArchiveFixture.Entry.zeros("f\($0).bin", 1 << 20) }
        for (id, source) in [("garbage", "file://" + garbage), ("cut", "file://" + cut)] {
            try await cache.register(id, source: source)
            let error = await #expect(throws: CacheError.self) { try await cache.materialize(id) }
            #expect(error?.code == "corrupt_archive")
        }
        try await cache.register("big", source: try f.source("big.tar.gz", big))
        let error = await #expect(throws: CacheError.self) { try await cache.materialize("big") }
        #expect(error?.code == "too_large")
        #expect(
            error?.description.hasPrefix("too large: the project does not fit its 67108864-byte workspace cap") == true)
        #expect(error?.description.hasSuffix(": ENOSPC)") == true)

        #expect(try q.hostState() == before)
        #expect(allPaths(f.data + "/volumes") == [])
        #expect(allPaths(f.data + "/mounts") == [])
        #expect(await cache.list().map(\.state) == [.cold, .cold, .cold])
    }

    @Test func aNewProjectsUploadMakesItsVolumeAndAFailedOneLeavesNothing() async throws {
        let before = try q.hostState()
        let cache = try await q.open()
        let (url, files) = try q.binaryProject("up")
        let archive = Array(try Data(contentsOf: URL(string: url)!))
        // The upload is the materialization: the workspace is in its own capped filesystem.
        #expect(try await cache.upload("up", bytes: archive).state == .ready)
        #expect(q.holds(q.mountPoint("up") + "/workspace", files))
        #expect(q.mountOptions(q.mountPoint("up"))?.type == "ext4")
        #expect(q.filesystemSize(q.mountPoint("up")) <= QuotaFixture.quota)
        #expect(await cache.counters.downloadedBytes == 0)
        // An archive that does not fit the cap, and one cut in the middle of a file, are
        // refused, and neither leaves an image, a mount, a loop device or a record.
        let bigSource = try f.source("big.tar.gz", (0..<62).map { ArchiveFixture.Entry.zeros("f\($0).bin", 1 << 20) })
        let big = Array(try Data(contentsOf: URL(string: bigSource)!))
        let tooLarge = await #expect(throws: CacheError.self) { try await cache.upload("big", bytes: big) }
        #expect(tooLarge?.code == "too_large")
        let cut = Array(archive.prefix(archive.count / 2))
        let corrupt = await #expect(throws: CacheError.self) { try await cache.upload("cut", bytes: cut) }
        #expect(corrupt?.code == "corrupt_archive")
        #expect(await cache.list().map(\.id) == ["up"])
        #expect(allPaths(f.data + "/volumes") == ["up.img"])
        try await cache.evict("up", discard: true)
        #expect(try q.hostState() == before)
        #expect(allPaths(f.data + "/mounts") == [])
    }

    @Test func spareFilesystemsAreTakenByNewWorkspacesRefilledAndRemovedAtStop() async throws {
        let before = try q.hostState()
        let cache = try await q.open(spares: 2)
        let bytes = QuotaFixture.quota
        let spares = f.data + "/spares"
        func ready(_ count: Int) async throws {
            for _ in 0..<500 where await cache.spareCounts[bytes] != count {
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(await cache.spareCounts[bytes] == count)
        }
        await cache.prepareSpares(bytes: bytes)
        try await ready(2)
        // Spares are files only: no mount, no loop device.
        #expect(try q.hostState() == before)
        let made = Set(allPaths(spares))
        #expect(made.count == 2)

        // A new project's upload and a cold project's materialization each take one,
        // and the workspace is exactly the archive's.
        let (url, files) = try q.binaryProject("sp")
        let archive = Array(try Data(contentsOf: URL(string: url)!))
        #expect(try await cache.upload("up", bytes: archive).state == .ready)
        #expect(q.holds(q.mountPoint("up") + "/workspace", files))
        #expect(q.filesystemSize(q.mountPoint("up")) <= bytes)
        try await cache.register("reg", source: url)
        #expect(q.holds(try await cache.materialize("reg").path, files))
        #expect(!Set(allPaths(spares)).isSuperset(of: made))
        // Refilled behind them.
        try await ready(2)
        // Another size is kept too; a third size drops the oldest one's spares.
        await cache.prepareSpares(bytes: bytes / 2)
        for _ in 0..<500 where await cache.spareCounts[bytes / 2] != 2 { try await Task.sleep(for: .milliseconds(20)) }
        await cache.prepareSpares(bytes: bytes / 4)
        #expect(await cache.spareCounts[bytes] == nil)

        await cache.removeSpares()
        #expect(!FileManager.default.fileExists(atPath: spares))
        #expect(await cache.spareCounts.isEmpty)
        // Stopped: nothing is made again, and workspaces are still made the ordinary way.
        try await cache.register("late", source: url)
        #expect(q.holds(try await cache.materialize("late").path, files))
        #expect(!FileManager.default.fileExists(atPath: spares))
        for id in ["up", "reg", "late"] { try await cache.evict(id, discard: true) }
        #expect(try q.hostState() == before)
    }

    @Test func writeBackEvictionAndRematerializationReturnTheEditsByteForByte() async throws {
        let before = try q.hostState()
        let cache = try await q.open()
        let (url, files) = try q.binaryProject("wb")
        try await cache.register("p", source: url)
        let ws = try await cache.materialize("p")
        var blob = try #require(files["bin/blob.dat"])
        blob.append(contentsOf: [0, 1, 2, 0xff])
        blob[12345] ^= 0x5a
        try blob.write(to: URL(fileURLWithPath: ws.path + "/bin/blob.dat"))
        try "print('v2')\n".write(toFile: ws.path + "/src/app.py", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: ws.path + "/new/dir", withIntermediateDirectories: true)
        try "fresh".write(toFile: ws.path + "/new/dir/file.txt", atomically: false, encoding: .utf8)
        chmod(ws.path + "/new/dir/file.txt", 0o600)
        try FileManager.default.removeItem(atPath: ws.path + "/build.sh")
        symlink("/etc", ws.path + "/etc-link")
        mkfifo(ws.path + "/pipe", 0o644)
        let edited = q.shape(ws.path).filter { $0.key != "pipe" }
        #expect(edited.count == 9)
        #expect(try await cache.isDirty("p"))

        try await cache.evict("p")
        #expect(try q.hostState() == before)
        #expect(FileManager.default.fileExists(atPath: f.blobs + "/snapshots/p.tar.zst"))
        let again = try await cache.materialize("p")
        #expect(again.path == ws.path)
        #expect(again.sourceVersion.hasPrefix("snapshot:sha256:"))
        #expect(q.shape(again.path) == edited)
        #expect(q.holds(again.path, ["bin/blob.dat": blob, "src/app.py": Data("print('v2')\n".utf8)]))
        #expect(lstatMode(again.path + "/new/dir/file.txt") & 0o777 == 0o600)
        #expect(try await cache.isDirty("p") == false)
        #expect(q.filesystemSize(again.path) <= quota)
        try await cache.evict("p", discard: true)
        #expect(try q.hostState() == before)
    }

    @Test func perProjectCapsOverrideTheDefaultAndTakeEffectAtTheNextMaterialization() async throws {
        let cache = try await q.open(quota: nil)
        let url = try f.source("p.tar.gz", CacheFixture.project)
        try await cache.register("plain", source: url)
        #expect(try await cache.status("plain").quotaBytes == nil)
        let plain = try await cache.materialize("plain")
        #expect(plain.path == f.data + "/workspaces/plain")
        #expect(q.device(plain.path) == q.device(f.data))

        try await cache.register("capped", source: url, workspaceQuota: 32 * mib)
        #expect(try await cache.status("capped").quotaBytes == 32 * mib)
        let capped = try await cache.materialize("capped")
        #expect(describeTree(capped.path) == CacheFixture.projectTree)
        #expect(q.filesystemSize(capped.path) <= 32 * mib)
        try await cache.setWorkspaceQuota("capped", bytes: 48 * mib)
        // The filesystem in force keeps its size until the workspace is materialized again.
        #expect(try await cache.status("capped").quotaBytes == 32 * mib)
        await #expect(
            throws: CacheError.invalidQuota("1024 bytes is outside 4194304...17592186044416 (4 MiB to 16 TiB)")
        ) {
            try await cache.setWorkspaceQuota("capped", bytes: 1024)
        }
        try await cache.evict("capped")
        #expect(try await cache.status("capped").quotaBytes == 48 * mib)
        #expect(q.filesystemSize(try await cache.materialize("capped").path) > 40 * mib)
        try await cache.evict("capped", discard: true)

        // An upload is test-extracted on the host's disk: the cap bounds that too.
        let archive = f.sources + "/big.tar.gz"
        try ArchiveFixture.write([.zeros("big.bin", 20 << 20)], format: .tarGz, to: archive)
        await #expect(throws: CacheError.tooLarge("big.bin declares 20971520 bytes, over the 16777216-byte cap")) {
            try await cache.upload("big", archive: archive, workspaceQuota: 16 * mib)
        }
        // The cap survives a restart.
        let reopened = try await q.open(quota: nil)
        #expect(try await reopened.status("capped").quotaBytes == 48 * mib)
        #expect(try await reopened.status("plain").quotaBytes == nil)
    }

    /// An index written before caps existed (schema version 1) opens, gains the columns
    /// and keeps its projects uncapped until they are given a cap.
    @Test func anIndexFromBeforeCapsIsMigrated() async throws {
        var first: ProjectCache? = try await q.open(quota: nil)
        try await first!.register("old", source: try f.source("p.tar.gz", CacheFixture.project))
        _ = try await first!.materialize("old")
        first = nil
        let db = try SQLiteDatabase(path: f.data + "/index.sqlite")
        try db.execute(
            "ALTER TABLE projects DROP COLUMN quota_bytes; ALTER TABLE projects DROP COLUMN volume_bytes; "
                + "PRAGMA user_version = 1")
        let cache = try await q.open(quota: nil)
        #expect(cache.recovery.adopted == ["old"])
        #expect(try await cache.status("old").quotaBytes == nil)
        #expect(try await cache.materialize("old").path == f.data + "/workspaces/old")
        try await cache.setWorkspaceQuota("old", bytes: 32 * mib)
        try await cache.evict("old")
        #expect(try await cache.materialize("old").path == q.mountPoint("old") + "/workspace")
        #expect(try await q.open(quota: nil).status("old").quotaBytes == 32 * mib)
        try await cache.evict("old", discard: true)
    }
}
