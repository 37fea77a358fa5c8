import Foundation
import TestSupport
import Testing

/// A project's setup in a real cluster: the commands travel with its registration in Redis,
/// and whether they ran travels with its write-back snapshot in the shared store, so the
/// next owner does not run them again.
@Suite(.serialized, .enabled(if: RedisServer.isAvailable, "needs redis-server (make test installs it)"))
struct ClusterSetupTests {
    typealias Cluster = ClusterAPITests.Cluster

    static func setup(_ cluster: Cluster, _ project: String) -> [String: Any] {
        cluster.api.json("GET", "/v1/projects/\(project)")["setup"] as? [String: Any] ?? [:]
    }

    @Test func aWorkerThatTakesAProjectOverFromItsSnapshotDoesNotRunItsSetupAgain() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        let archive = try LiveArchive.make(["a.txt": "a\n"])
        defer { unlink(archive) }
        let commands = #"["echo ran >> setup.log"]"#
        let made = ClusterAPITests.Node.curl([
            "-X", "PUT", "--data-binary", "@\(archive)", "--url-query", "setup=\(commands)",
            "http://127.0.0.1:\(cluster.api.port)/v1/projects/prep/archive",
        ])
        #expect(made.contains(#""commands":["echo ran >> setup.log"]"#), "\(made)")
        #expect(cluster.exec("prep", "cat setup.log")["stdout"] as? String == "ran\n")
        let first = Self.setup(cluster, "prep")
        #expect(first["status"] as? String == "succeeded", "\(first)")
        // The registry holds the commands, for whichever worker owns the project next.
        let spec = cluster.redisGet(["HGET", "\(cluster.prefix):project:prep", "spec"])
        #expect(spec.contains(#""setup":["echo ran >> setup.log"]"#), "\(spec)")

        // The owner leaves (writing the prepared workspace back); the other one takes over
        // from the snapshot and its setup record.
        let leaving = cluster.owner("prep")
        let staying = leaving == "w1" ? "w2" : "w1"
        cluster.workers[leaving]!.stop(SIGTERM)
        #expect(FileManager.default.fileExists(atPath: cluster.dir.path + "/blobs/snapshots/prep.setup.json"))
        #expect(cluster.exec("prep", "cat setup.log")["stdout"] as? String == "ran\n")
        #expect(cluster.owner("prep") == staying)
        let after = Self.setup(cluster, "prep")
        #expect(after["status"] as? String == "succeeded", "\(after)")
        #expect(after["started_at"] as? String == first["started_at"] as? String, "\(after)")

        // Changed commands, through the API node, run once on the new owner.
        let changed = cluster.api.json(
            "PUT", "/v1/projects/prep/setup", #"{"commands": ["echo ran >> setup.log", "echo two >> setup.log"]}"#)
        #expect((changed["setup"] as? [String: Any])?["commands"] as? [String] != nil, "\(changed)")
        #expect(cluster.exec("prep", "cat setup.log")["stdout"] as? String == "ran\nran\ntwo\n")
        let run = cluster.api.json("POST", "/v1/projects/prep/setup/run")
        #expect((run["setup"] as? [String: Any])?["status"] as? String == "succeeded", "\(run)")
        #expect(cluster.exec("prep", "cat setup.log")["stdout"] as? String == "ran\nran\ntwo\nran\ntwo\n")
    }

    @Test func aFailedSetupFailsTheJobsOnTheOwnerWithItsOutput() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        let archive = try LiveArchive.make(["a.txt": "a\n"])
        defer { unlink(archive) }
        _ = ClusterAPITests.Node.curl([
            "-X", "PUT", "--data-binary", "@\(archive)", "--url-query", #"setup=["echo nope; exit 5"]"#,
            "http://127.0.0.1:\(cluster.api.port)/v1/projects/bad/archive",
        ])
        let job = cluster.exec("bad", "true")
        #expect(job["status"] as? String == "failed_to_start", "\(job)")
        #expect(
            (job["error"] as? String)?.hasPrefix(
                "setup of project bad failed: command 1 of 1 (`echo nope; exit 5`) exited with 5.") == true, "\(job)")
        #expect((job["error"] as? String)?.hasSuffix("$ echo nope; exit 5\nnope\n") == true, "\(job)")
        let warm = cluster.api.json("POST", "/v1/projects/bad/warm")
        #expect((warm["error"] as? [String: Any])?["code"] as? String == "setup_failed", "\(warm)")
    }
}
