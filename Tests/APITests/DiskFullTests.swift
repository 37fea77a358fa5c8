import Foundation
import Glibc
import HummingbirdTesting
import TestSupport
import Testing

@testable import API
@testable import Host

/// A data directory that fills up (a small ext4 filesystem, loop-mounted as the host's data
/// directory): an upload, a write-back and a job each fail with a clear error while it is
/// full, nothing already stored is damaged, and everything works again once space is freed.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs)"))
struct DiskFullTests {
    /// Mounts a fresh `megabytes` MiB ext4 at `path` (removed with the temporary directory).
    static func smallFilesystem(at path: String, megabytes: Int) throws {
        let image = path + ".img"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: image, contents: nil))
        #expect(truncate(image, off_t(megabytes << 20)) == 0)
        try run("/usr/sbin/mkfs.ext4", ["-q", "-F", "-m", "0", image])
        try run("/usr/bin/mount", ["-o", "loop", image, path])
    }

    static func run(_ tool: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TestSupportError("\(tool) \(arguments) failed") }
    }

    /// Fills the filesystem at `path` to its last few KiB with a file named `filler`.
    static func fill(_ path: String) -> String {
        let filler = path + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let chunk = [UInt8](repeating: 0x5a, count: 64 << 10)
        var small = chunk.count
        while small >= 512 {
            if chunk.withUnsafeBytes({ write(fd, $0.baseAddress, small) }) < 0 { small /= 2 }
        }
        fsync(fd)
        close(fd)
        return filler
    }

    static func randomArchive(bytes: Int) throws -> [UInt8] {
        var text = ""
        var generator = SystemRandomNumberGenerator()
        while text.utf8.count < bytes { text += String(generator.next() as UInt64, radix: 36) }
        return try LiveHost.archive(["big.txt": text])
    }

    @Test func aFullDataDirectoryFailsCleanlyAndRecovers() async throws {
        let data = try TemporaryDirectory()
        try Self.smallFilesystem(at: data.path + "/var", megabytes: 48)
        let host = try await LiveHost.open(data)
        do {
            _ = try await host.upload("demo", archive: try LiveHost.archive(LiveHost.demo))
            let app = try buildApplication(
                APIConfiguration(port: 0), host: host, jobs: host.jobService, files: HostFileTools(host: host),
                sessions: host.sessionService)
            try await app.test(.live) { client in
                let edited = try await client.call(
                    .post, "/v1/projects/demo/exec", json: ["command": "echo edited > notes.txt"])
                #expect(edited.json["exit_code"] == 0, "\(edited.text)")
                let saved = try await client.call(.post, "/v1/projects/demo/snapshot")
                #expect(saved.status == .ok, "\(saved.text)")
                let stored = data.path + "/var/cache/blobs/snapshots/demo.tar.zst"
                let before = try Data(contentsOf: URL(fileURLWithPath: stored))
                _ = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "echo again >> notes.txt"])
                let filler = Self.fill(data.path + "/var")

                // An upload: refused as the host's condition, and nothing of it is kept.
                let upload = try await client.call(
                    .put, "/v1/projects/big/archive", raw: try Self.randomArchive(bytes: 2 << 20))
                #expect(upload.status.code == 507 && upload.code == "disk_full", "\(upload.text)")
                #expect(upload.header("Retry-After") == "30")
                #expect((try await client.call(.get, "/v1/projects/big")).status == .notFound)
                let downloads = try FileManager.default.contentsOfDirectory(atPath: data.path + "/var/cache/downloads")
                #expect(downloads == [], "\(downloads)")
                // A write-back: refused, the workspace stays dirty, the stored snapshot intact.
                let snapshot = try await client.call(.post, "/v1/projects/demo/snapshot")
                #expect(snapshot.status.code == 507 && snapshot.code == "disk_full", "\(snapshot.text)")
                let info = try await client.call(.get, "/v1/projects/demo")
                #expect(info.status == .ok && info.json["dirty"] == true, "\(info.text)")
                #expect(try Data(contentsOf: URL(fileURLWithPath: stored)) == before)
                // A job, whose journal entry cannot be written.
                let exec = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "cat notes.txt"])
                #expect(exec.status.code == 507 && exec.code == "disk_full", "\(exec.text)")

                // A file tool's write into the workspace (a volume on the full disk): its error,
                // and neither the file nor its temporary copy left behind.
                let write = try await client.call(
                    .post, "/v1/projects/demo/tools/write_file",
                    json: ["path": "/workspace/new.txt", "content": .string(String(repeating: "x", count: 1 << 20))])
                #expect(write.json["structuredContent"]?["code"] == "io_error", "\(write.text)")
                #expect(write.text.contains("ENOSPC"), "\(write.text)")
                unlink(filler)
                let again = try await client.call(
                    .put, "/v1/projects/big/archive", raw: try Self.randomArchive(bytes: 2 << 20))
                #expect(again.status == .created, "\(again.text)")
                let resumed = try await client.call(.post, "/v1/projects/demo/snapshot")
                #expect(resumed.status == .ok, "\(resumed.text)")
                #expect((try await client.call(.get, "/v1/projects/demo")).json["dirty"] == false)
                let read = try await client.call(
                    .post, "/v1/projects/demo/exec", json: ["command": "cat notes.txt; ls -A /workspace"])
                #expect(
                    read.json["stdout"] == "edited\nagain\n.corral\nhello.py\nhello.sh\nnotes.txt\nsrc\n",
                    "\(read.text)")
            }
        } catch {
            await host.shutdown(grace: .seconds(1))
            throw error
        }
        await host.shutdown(grace: .seconds(1))
    }
}
