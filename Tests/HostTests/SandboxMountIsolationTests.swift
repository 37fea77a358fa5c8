import Foundation
import Host
import Sandbox
import TestSupport
import Testing

/// A sandbox's mount namespace holds its own project's mounts and nothing else of the
/// host's, so one project's eviction never depends on another project's sandbox.
@Suite struct SandboxMountIsolationTests {
    /// The loop devices bound to `image` right now.
    static func loops(backing image: String) -> [String] {
        let devices = (try? FileManager.default.contentsOfDirectory(atPath: "/sys/block")) ?? []
        return devices.filter { name in
            guard name.hasPrefix("loop"),
                let backing = try? String(contentsOfFile: "/sys/block/\(name)/loop/backing_file", encoding: .utf8)
            else { return false }
            return backing.trimmingCharacters(in: .whitespacesAndNewlines) == image
        }
    }

    @Test func evictingAProjectSucceedsWhileASandboxCreatedAfterItRuns() async throws {
        let data = try TemporaryDirectory()
        let host = try await CorralHostTests.host(data)
        for id in ["p1", "p2"] {
            _ = try await host.upload(id, archive: try CorralHostTests.archive(["a.txt": "\(id)\n"]))
        }
        // p1's volume is mounted (and its sandbox made) first; p2's sandbox is made while
        // p1's volume is mounted, which once copied p1's mount into p2's namespace.
        for id in ["p1", "p2"] {
            let r = try await host.jobService.run(JobRequest(project: id, command: "cat a.txt"), budget: .seconds(20))
            #expect(r.record.result?.stdout == "\(id)\n", "\(r.record.error ?? "")")
        }
        let p1Image = data.path + "/var/cache/volumes/p1.img"
        #expect(Self.loops(backing: p1Image).count == 1)

        // The whole of p2's mount table: the image, its own workspace and home and the
        // sandbox's own /dev, /tmp and /proc mounts; no host path, and nothing of p1's.
        let table = try await host.jobService.run(
            JobRequest(project: "p2", command: "awk '{print $5}' /proc/self/mountinfo"), budget: .seconds(20))
        let points = Set((table.record.result?.stdout ?? "").split(separator: "\n").map(String.init))
        let masks: Set<String> = [
            "/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/latency_stats",
            "/proc/timer_stats", "/proc/kmsg", "/proc/config.gz", "/proc/acpi", "/proc/scsi", "/proc/asound",
            "/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs",
        ]
        #expect(
            Set(points.filter { !$0.hasPrefix("/proc/") })
                == ["/", "/workspace", "/home/agent", "/dev", "/tmp", "/proc", "/dev/pts", "/dev/shm"],
            "\(points.sorted())")
        #expect(points.filter { $0.hasPrefix("/proc/") }.isSubset(of: masks), "\(points.sorted())")
        #expect(!points.contains { $0.contains("corral") || $0.contains(data.path) })

        // p2's sandbox stays up; p1 is evicted all the same, its loop device released.
        try await host.evict("p1")
        #expect(try await host.project("p1").state == "cold")
        #expect(Self.loops(backing: p1Image).isEmpty)
        #expect(try await host.project("p2").sandbox)

        // And back: p1 rematerializes from its write-back next to p2's live sandbox.
        let again = try await host.jobService.run(
            JobRequest(project: "p1", command: "cat a.txt"), budget: .seconds(20))
        #expect(again.record.result?.stdout == "p1\n")
        await host.shutdown(grace: .seconds(1))
    }

    @Test func theImageIsMountedReadOnlyNosuidNodev() async throws {
        let data = try TemporaryDirectory()
        let host = try await CorralHostTests.host(data)
        _ = try await host.upload("ro", archive: try CorralHostTests.archive(["a.txt": "x\n"]))
        // The root mount's flags, as the kernel reports them from inside the sandbox.
        let r = try await host.jobService.run(
            JobRequest(project: "ro", command: "awk '$5 == \"/\" {print $6}' /proc/self/mountinfo; touch /x"),
            budget: .seconds(20))
        let options = Set(
            (r.record.result?.stdout ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
                .split(separator: ","))
        #expect(options.isSuperset(of: ["ro", "nosuid", "nodev"]), "\(options)")
        #expect(r.record.result?.stderr.contains("Read-only file system") == true)
        await host.shutdown(grace: .seconds(1))
    }
}
