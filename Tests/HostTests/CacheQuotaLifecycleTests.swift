import Foundation
import Glibc
import Host
import Sandbox
import TestSupport
import Testing

/// Capped workspaces across evictions that must not happen yet, and across restarts.
@Suite(.serialized, .enabled(if: canUseLoopDevices, "needs root and /dev/loop-control"))
struct CacheQuotaLifecycleTests {
    let q: QuotaFixture
    var f: CacheFixture { q.f }

    init() throws { q = try QuotaFixture() }

    /// Eviction never detaches lazily: a workspace still in use stays, and says why.
    @Test func evictionOfAWorkspaceInUseFailsAndKeepsIt() async throws {
        let before = try q.hostState()
        let cache = try await q.open()
        try await cache.register("p", source: try f.source("p.tar.gz", CacheFixture.project))
        let ws = try await cache.materialize("p")
        try "kept".write(toFile: ws.path + "/kept.txt", atomically: false, encoding: .utf8)
        let tree = describeTree(ws.path)

        // A file open on the host: umount says EBUSY.
        let fd = open(ws.path + "/kept.txt", O_RDONLY | O_CLOEXEC)
        #expect(fd >= 0)
        await #expect(throws: CacheError.busy("the workspace filesystem at \(q.mountPoint("p")) is in use on the host"))
        {
            try await cache.evict("p")
        }
        close(fd)
        #expect(try await cache.status("p").state == .ready)
        #expect(describeTree(ws.path) == tree)

        // Another mount namespace holds the filesystem, as a running sandbox does: the host's
        // unmount succeeds but the loop device stays bound, so the mount is put back.
        let holder = try ChildProcess(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sleep", "60"])
        // Until unshare has run, the child's mountinfo is still ours: wait for its own namespace.
        let ours = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/mnt")
        #expect(
            waitUntil(seconds: 5) {
                let ns = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(holder.pid)/ns/mnt")
                let theirs = try? KernelFile.read("/proc/\(holder.pid)/mountinfo")
                return ns != nil && ns != ours && theirs?.contains(" \(q.mountPoint("p")) ") == true
            })
        await #expect(
            throws: CacheError.busy(
                "the workspace filesystem \(q.image("p")) is still mounted in another mount namespace, held by "
                    + "pid \(holder.pid) (sleep); stop that first")
        ) {
            try await cache.evict("p")
        }
        #expect(try await cache.status("p").state == .ready)
        #expect(describeTree(ws.path) == tree)
        #expect(q.device(ws.path) != q.device(f.data))

        holder.kill()
        holder.wait()
        try await cache.evict("p")
        #expect(try q.hostState() == before)
        #expect(describeTree(try await cache.materialize("p").path) == tree)
        try await cache.evict("p", discard: true)
        #expect(try q.hostState() == before)
    }

    /// A restart keeps a volume that is still mounted, mounts an intact image again, and
    /// releases what a crashed run left: a mount of a cold project's image on a loop
    /// device bound without AUTOCLEAR, and an unknown image bound but never mounted.
    @Test func restartReadoptsVolumesAndReleasesACrashedRunsMountsAndLoops() async throws {
        let before = try q.hostState()
        var first: ProjectCache? = try await q.open()
        let (url, files) = try q.binaryProject("bin")
        try await first!.register("p", source: url)
        try await first!.register("r", source: try f.source("r.tar.gz", CacheFixture.project))
        try await first!.register("ghost", source: url)
        let p = try await first!.materialize("p")
        _ = try await first!.materialize("r")
        try "unsaved".write(toFile: p.path + "/notes.txt", atomically: false, encoding: .utf8)
        let pDevice = q.device(p.path)
        first = nil

        // r's filesystem is no longer mounted, as after a reboot; its loop device goes with it.
        #expect(umount2(q.mountPoint("r"), 0) == 0)
        #expect(waitUntil(seconds: 5) { (try? q.hostState().loops.count) == before.loops.count + 1 })
        // The crashed run's leftovers.
        for name in ["ghost", "stranger"] {
            let image = f.data + "/volumes/\(name).img"
            #expect(FileManager.default.createFile(atPath: image, contents: nil))
            #expect(truncate(image, 16 << 20) == 0)
            #expect(try q.run(["/usr/sbin/mkfs.ext4", "-q", "-F", "-O", "^has_journal", image]).0 == 0)
        }
        let ghost = try q.run(["/usr/sbin/losetup", "--find", "--show", f.data + "/volumes/ghost.img"])
        #expect(ghost.0 == 0)
        try FileManager.default.createDirectory(atPath: q.mountPoint("ghost"), withIntermediateDirectories: true)
        let ghostDevice = ghost.1.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(try q.run(["/bin/mount", ghostDevice, q.mountPoint("ghost")]).0 == 0)
        #expect(try q.run(["/usr/sbin/losetup", "--find", f.data + "/volumes/stranger.img"]).0 == 0)
        let planted = try q.hostState()
        #expect(planted.mounts == before.mounts + 2)
        #expect(planted.loops.count == before.loops.count + 3)

        let second = try await q.open()
        #expect(
            second.recovery
                == RecoveryReport(
                    adopted: ["p", "r"], swept: 1, lost: [], orphaned: ["stranger.img"], unmounted: 1, detached: 1))
        // p is the very mount the first run made; r was mounted again.
        #expect(q.device(p.path) == pDevice)
        #expect(try await second.materialize("p").path == p.path)
        #expect(try await second.isDirty("p"))
        #expect(q.holds(p.path, files))
        #expect(FileManager.default.contents(atPath: p.path + "/notes.txt") == Data("unsaved".utf8))
        #expect(describeTree(try await second.materialize("r").path) == CacheFixture.projectTree)
        #expect(try await second.isDirty("r") == false)
        let adopted = try q.hostState()
        #expect(adopted.mounts == before.mounts + 2)
        #expect(adopted.loops.count == before.loops.count + 2)
        #expect(!FileManager.default.fileExists(atPath: q.image("ghost")))
        #expect(!FileManager.default.fileExists(atPath: q.mountPoint("ghost")))
        #expect(try await second.status("ghost").state == .cold)

        try await second.evict("p")
        try await second.evict("r")
        #expect(try q.hostState() == before)
        let again = try await second.materialize("p")
        #expect(FileManager.default.contents(atPath: again.path + "/notes.txt") == Data("unsaved".utf8))
        try await second.evict("p", discard: true)
        #expect(try q.hostState() == before)
    }
}
