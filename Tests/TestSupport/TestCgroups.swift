import Foundation
import Glibc
import Sandbox

/// The cgroup driver tests use: a prefix of their own per test process (`corral-tests-PID`),
/// so tests never touch a real Corral host's cgroups nor those of another test run on the
/// same machine. Tests that need a prefix of their own (a `corral serve` child, a host that
/// stops) name it `corral-tests-PID-<what>`.
///
/// Before first use, the prefixes of test processes that died are swept (their sandboxes
/// killed, their cgroups removed); when the process exits, its own prefixes go the same way,
/// so a finished run leaves no cgroup directory behind.
public enum TestCgroups {
    public static let driver: CgroupDriver? = {
        sweepDeadRuns()
        // Swift Testing has no hook for the end of a run; exit() runs atexit handlers once
        // every test is done. The closure captures nothing, as a C function pointer must.
        atexit { TestCgroups.removeOwnPrefixes() }
        return try? CgroupDriver.detect(prefix: ownPrefix)
    }()

    /// `corral-tests-PID` of this process.
    public static var ownPrefix: String { "corral-tests-\(getpid())" }

    /// Kills what is left under `prefix` and removes its directories in every hierarchy;
    /// the directories that stayed (see ``CgroupDriver/removePrefix()``).
    @discardableResult
    public static func remove(prefix: String) -> [String] {
        guard let driver = try? CgroupDriver.detect(prefix: prefix) else { return [] }
        _ = try? driver.sweepOrphans(keeping: [])
        return driver.removePrefix()
    }

    /// Every directory named `name` directly under a cgroup hierarchy mounted here (cgroup
    /// and cgroup2 mounts in `/proc/self/mountinfo`, whether or not the driver uses them),
    /// sorted: what a test expects of a prefix before, during and after its use.
    public static func directories(named name: String) -> [String] {
        mountpoints().map { $0 + "/" + name }.filter { FileManager.default.fileExists(atPath: $0) }.sorted()
    }

    /// Where a driver with the one-level prefix `name` has its directories on this host,
    /// sorted: beside the tests' own prefix in each hierarchy the driver uses.
    public static func expectedDirectories(named name: String) -> [String] {
        (driver?.directories ?? []).map { URL(fileURLWithPath: $0).deletingLastPathComponent().path + "/" + name }
            .sorted()
    }

    /// The mountpoints of cgroup and cgroup2 filesystems, read independently of the driver.
    static func mountpoints() -> [String] {
        let text = (try? KernelFile.read("/proc/self/mountinfo")) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ")
            guard let dash = fields.firstIndex(of: "-"), dash + 1 < fields.count, fields.count > 4,
                ["cgroup", "cgroup2"].contains(fields[dash + 1])
            else { return nil }
            return String(fields[4])
        }
    }

    /// The names starting with `corral-tests` directly under the hierarchies.
    private static func testPrefixes() -> Set<String> {
        var prefixes = Set<String>()
        for root in mountpoints() {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
            where name.hasPrefix("corral-tests") {
                prefixes.insert(name)
            }
        }
        return prefixes
    }

    private static func sweepDeadRuns() {
        for prefix in testPrefixes() {
            // corral-tests-PID[-suffix] of a live process is another run in progress: leave it.
            let parts = prefix.split(separator: "-")
            if parts.count > 2, let pid = Int32(parts[2]), kill(pid, 0) == 0 { continue }
            remove(prefix: prefix)
        }
    }

    /// `corral-tests-PID` and every `corral-tests-PID-<what>` of this process.
    private static func removeOwnPrefixes() {
        for prefix in testPrefixes() where prefix == ownPrefix || prefix.hasPrefix(ownPrefix + "-") {
            remove(prefix: prefix)
        }
    }
}
