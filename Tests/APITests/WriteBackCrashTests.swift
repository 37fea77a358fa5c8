import Foundation
import Host
import TestSupport
import Testing

/// `corral serve` killed with SIGKILL at random points of a write-back, fifty times: each
/// time the store holds the previous snapshot or the new one whole (never a torn or partial
/// object, never a leftover temporary file once the host is back), the restarted host's index
/// names exactly the object the store holds, and no edit is lost.
@Suite struct WriteBackCrashTests {
    static let rounds = 50

    @Test func aHostKilledAtRandomPointsOfWriteBacksKeepsEachSnapshotWholeAndTheIndexTrue() async throws {
        let dir = try TemporaryDirectory()
        let (data, policies) = try HostCrashTests.layout(in: dir)
        let port = try LoopbackPort.free()
        // Enough to pack for a while (a few hundred milliseconds), so kills land inside it.
        var files: [String: String] = [:]
        for index in 0..<600 {
            files["src/\(index / 50)/file\(index).txt"] = (0..<400).map { "line \($0) of file \(index)\n" }.joined()
        }
        let archive = try LiveArchive.make(files)
        defer { unlink(archive) }
        var server = try HostCrashTests.Server(data: data, policies: policies, port: port)
        defer {
            // A failure part-way: no host outlives the test, nor its cgroups.
            server.stop()
            TestCgroups.remove(prefix: HostCrashTests.cgroupPrefix)
        }
        _ = try server.curl([
            "-X", "PUT", "--data-binary", "@\(archive)", "http://127.0.0.1:\(port)/v1/projects/p/archive",
        ])
        let blob = data + "/cache/blobs/snapshots/p.tar.zst"
        _ = try server.json("POST", "/v1/projects/p/exec", #"{"command": "echo 0 > round"}"#)
        let start = ContinuousClock.now
        let first = try server.json("POST", "/v1/projects/p/snapshot")
        let packing = ContinuousClock.now - start
        #expect(first["snapshot"] != nil, "\(first)")
        var previous = try Self.sha256(blob)
        var landed = 0
        var generator = SystemRandomNumberGenerator()
        for round in 1...Self.rounds {
            let edit = try server.json("POST", "/v1/projects/p/exec", "{\"command\": \"echo \(round) > round\"}")
            #expect(edit["status"] as? String == "completed", "round \(round): \(edit)")
            let writeBack = Process()
            writeBack.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            writeBack.arguments = [
                "-s", "-o", "/dev/null", "-X", "POST", "http://127.0.0.1:\(port)/v1/projects/p/snapshot",
            ]
            try writeBack.run()
            // Anywhere from before the request arrives to after the write-back ended.
            let delay = Double.random(in: 0...1.3, using: &generator) * packing.timeInterval
            usleep(UInt32(delay * 1_000_000))
            server.kill(SIGKILL)
            writeBack.waitUntilExit()

            let stored = try Self.sha256(blob)
            if stored != previous {
                // A new object: whole, and the tree of this round.
                #expect(Self.bsdtar(["-tf", blob]) != nil, "round \(round): the stored snapshot is torn")
                #expect(Self.bsdtar(["-xOf", blob, "round"]) == "\(round)\n", "round \(round)")
                landed += 1
            }
            server = try HostCrashTests.Server(data: data, policies: policies, port: port)
            let leftovers = try Self.files(under: data + "/cache/blobs").filter { $0.contains(".tmp-") }
            #expect(leftovers.isEmpty, "round \(round): \(leftovers)")
            let index = try SQLiteDatabase(path: data + "/cache/index.sqlite")
            let version = try index.query("SELECT snapshot_version FROM projects WHERE id = 'p'").first?[0].text
            #expect(version == "sha256:" + stored, "round \(round): the index names another object than the store's")
            previous = stored
        }
        // Nothing was lost: the workspace holds the last edit, and so does a snapshot of it
        // after an eviction and a new materialization.
        let evicted = try server.curl(["-X", "DELETE", "http://127.0.0.1:\(port)/v1/projects/p/workspace"])
        #expect(!evicted.contains("\"error\""), "\(evicted)")
        let last = try server.json("POST", "/v1/projects/p/exec", #"{"command": "cat round; ls src | wc -l"}"#)
        #expect(last["stdout"] as? String == "\(Self.rounds)\n12\n", "\(last)")
        // Kills landed on both sides of the rename (fifty random points over the whole write-back).
        #expect(landed > 0 && landed < Self.rounds, "new snapshots stored in \(landed) of \(Self.rounds) rounds")
        server.kill(SIGTERM)
    }

    static func sha256(_ path: String) throws -> String {
        SHA256.hash(Array(try Data(contentsOf: URL(fileURLWithPath: path)))).hexString
    }

    /// bsdtar's standard output, or nil when it fails (a torn or unreadable archive).
    static func bsdtar(_ arguments: [String]) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let bytes = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return process.terminationStatus == 0 ? String(decoding: bytes, as: UTF8.self) : nil
    }

    static func files(under root: String) throws -> [String] {
        (FileManager.default.enumerator(atPath: root)?.allObjects as? [String]) ?? []
    }
}
