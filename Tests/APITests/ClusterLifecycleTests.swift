import Foundation
import TestSupport
import Testing

/// Deleting, replacing and patching a project through a real cluster's API node: the
/// owner does the work, and Redis forgets the project and its lease.
@Suite(.serialized, .enabled(if: RedisServer.isAvailable, "needs redis-server (make test installs it)"))
struct ClusterLifecycleTests {
    typealias Cluster = ClusterAPITests.Cluster

    /// The HTTP status of a call to the API node.
    static func status(_ cluster: Cluster, _ method: String, _ path: String, _ file: String? = nil) -> String {
        var args = ["-o", "/dev/null", "-w", "%{http_code}", "-X", method]
        if let file { args += ["--data-binary", "@\(file)"] }
        return ClusterAPITests.Node.curl(args + ["http://127.0.0.1:\(cluster.api.port)\(path)"])
    }

    @Test func deleteThroughTheAPINodeEndsTheJobAndForgetsTheProjectEverywhere() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        _ = try cluster.upload("gone", ["a.txt": "v1\n"])
        #expect(cluster.exec("gone", "cat a.txt")["stdout"] as? String == "v1\n")
        let owner = cluster.owner("gone")
        #expect(["w1", "w2"].contains(owner))
        let submitted = cluster.api.json("POST", "/v1/projects/gone/jobs", #"{"command": "sleep 300"}"#)
        let job = try #require(submitted["job_id"] as? String, "\(submitted)")
        let running = cluster.api.json("GET", "/v1/projects/gone/jobs/\(job)?wait=10&since=0")
        #expect(running["status"] as? String == "running", "\(running)")

        #expect(Self.status(cluster, "DELETE", "/v1/projects/gone") == "204")
        let ended = cluster.api.json("GET", "/v1/projects/gone/jobs/\(job)?wait=10")
        #expect(ended["status"] as? String == "cancelled", "\(ended)")
        #expect(Self.status(cluster, "GET", "/v1/projects/gone") == "404")
        #expect(Self.status(cluster, "DELETE", "/v1/projects/gone") == "404")
        // Redis: no registration, no lease, not in the holder's lease set; only the epoch
        // stays behind, and it expires.
        let p = cluster.prefix
        #expect(cluster.redisGet(["EXISTS", "\(p):owner:gone"]) == "0")
        #expect(cluster.redisGet(["SISMEMBER", "\(p):projects", "gone"]) == "0")
        #expect(cluster.redisGet(["SISMEMBER", "\(p):leases:\(owner)", "gone"]) == "0")
        #expect(cluster.redisGet(["HGET", "\(p):project:gone", "spec"]) == "")
        #expect((Int(cluster.redisGet(["PTTL", "\(p):project:gone"])) ?? -1) > 0)
        // The shared blob store and the owner's disk hold nothing of it.
        let fm = FileManager.default
        #expect(!fm.fileExists(atPath: cluster.dir.path + "/blobs/uploads/gone"))
        #expect(!fm.fileExists(atPath: cluster.dir.path + "/blobs/snapshots/gone.tar.zst"))
        #expect(!fm.fileExists(atPath: cluster.dir.path + "/\(owner)/cache/volumes/gone.img"))
        #expect(!fm.fileExists(atPath: cluster.dir.path + "/\(owner)/cache/mounts/gone"))

        // The id is free again: a new project, with nothing of the old one.
        _ = try cluster.upload("gone", ["b.txt": "v2\n"])
        let ran = cluster.exec("gone", "ls; cat b.txt")
        #expect(ran["stdout"] as? String == "b.txt\nv2\n", "\(ran)")
        #expect(cluster.redisGet(["PTTL", "\(p):project:gone"]) == "-1")
    }

    @Test func replaceAndPatchThroughTheAPINodeChangeTheOwnersWorkspace() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        _ = try cluster.upload("files", ["old.txt": "old\n", "keep.txt": "keep\n"])
        #expect(cluster.exec("files", "cat old.txt")["stdout"] as? String == "old\n")
        let replaced = try cluster.upload("files", ["new.txt": "new\n", "keep.txt": "kept\n"])
        #expect(replaced["state"] as? String == "ready", "\(replaced)")
        #expect(cluster.exec("files", "ls")["stdout"] as? String == "keep.txt\nnew.txt\n")
        let patch = try LiveArchive.make(["added.txt": "added\n", ".wh.new.txt": ""])
        defer { unlink(patch) }
        let text = ClusterAPITests.Node.curl([
            "-X", "PATCH", "--data-binary", "@\(patch)",
            "http://127.0.0.1:\(cluster.api.port)/v1/projects/files/archive",
        ])
        let summary = (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:]
        #expect(summary["files_written"] as? Int == 1, "\(text)")
        #expect(summary["paths_deleted"] as? Int == 1, "\(text)")
        #expect(cluster.exec("files", "ls")["stdout"] as? String == "added.txt\nkeep.txt\n")
    }

    @Test func aSnapshotTakenThroughTheAPINodeIsRestoredAfterTheOwnerChanges() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        _ = try cluster.upload("snap", ["a.txt": "v1\n", "b.txt": "b\n"])
        #expect(cluster.exec("snap", "chmod 600 a.txt && ls")["stdout"] as? String == "a.txt\nb.txt\n")
        let made = cluster.api.json("POST", "/v1/projects/snap/snapshots", #"{"name": "base"}"#)
        // Its two files and `.corral/.gitignore`, written with the project's home.
        #expect(made["name"] as? String == "base" && made["files"] as? Int == 3, "\(made)")
        let blob = cluster.dir.path + "/blobs/named/snap/base.tar.zst"
        #expect(FileManager.default.fileExists(atPath: blob))
        let changed = cluster.exec("snap", "echo v2 > a.txt && rm b.txt && echo c > c.txt && ls")
        #expect(changed["stdout"] as? String == "a.txt\nc.txt\n", "\(changed)")

        // The owner leaves (its changes handed over); the other worker answers from the
        // shared store's catalog.
        let leaving = cluster.owner("snap")
        let staying = leaving == "w1" ? "w2" : "w1"
        cluster.workers[leaving]!.stop(SIGTERM)
        let listed = cluster.api.json("GET", "/v1/projects/snap/snapshots")
        let names = (listed["snapshots"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
        #expect(names == ["base"], "\(listed)")
        #expect(cluster.owner("snap") == staying)
        let restored = cluster.api.json("POST", "/v1/projects/snap/snapshots/base/restore")
        #expect(
            (restored["restored"] as? [String: Any])?["sha256"] as? String == made["sha256"] as? String, "\(restored)")
        let after = cluster.exec("snap", "ls -l | tail -n +2 | cut -c1-10; cat a.txt b.txt")
        #expect(after["stdout"] as? String == "-rw-------\n-rw-r--r--\nv1\nb\n", "\(after)")

        #expect(Self.status(cluster, "POST", "/v1/projects/snap/snapshots/nope/restore") == "404")
        #expect(Self.status(cluster, "DELETE", "/v1/projects/snap/snapshots/base") == "204")
        #expect(!FileManager.default.fileExists(atPath: blob))
        _ = cluster.api.json("POST", "/v1/projects/snap/snapshots", #"{"name": "again"}"#)
        #expect(Self.status(cluster, "DELETE", "/v1/projects/snap") == "204")
        #expect(!FileManager.default.fileExists(atPath: cluster.dir.path + "/blobs/named/snap"))
    }

    @Test func aForkThroughTheAPINodeIsMadeOnTheSourcesOwner() throws {
        let cluster = try Cluster()
        defer {
            cluster.stop()
            #expect(cluster.leftovers == [])
        }
        _ = try cluster.upload("src", ["a.txt": "a\n"])
        #expect(cluster.exec("src", "echo s > s.txt && ls")["stdout"] as? String == "a.txt\ns.txt\n")
        let forked = cluster.api.json("POST", "/v1/projects/src/fork", #"{"id": "fk"}"#)
        #expect(forked["id"] as? String == "fk" && forked["state"] as? String == "ready", "\(forked)")
        // The fork's layers are the owner's mounts: it lives there, registered in the cluster.
        #expect(cluster.owner("fk") == cluster.owner("src"))
        #expect(cluster.exec("fk", "echo f > f.txt && ls")["stdout"] as? String == "a.txt\nf.txt\ns.txt\n")
        #expect(cluster.exec("src", "ls")["stdout"] as? String == "a.txt\ns.txt\n")
        let again = cluster.api.json("POST", "/v1/projects/src/fork", #"{"id": "fk"}"#)
        #expect((again["error"] as? [String: Any])?["code"] as? String == "project_exists", "\(again)")
        #expect(Self.status(cluster, "DELETE", "/v1/projects/src") == "204")
        #expect(cluster.exec("fk", "cat s.txt f.txt")["stdout"] as? String == "s\nf\n")
        #expect(Self.status(cluster, "DELETE", "/v1/projects/fk") == "204")
    }
}
