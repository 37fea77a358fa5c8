import Foundation
import Glibc
import Sandbox

/// The cgroup driver tests use: a prefix of their own per test process (`corral-tests-PID`),
/// so tests never touch a real Corral host's cgroups nor those of another test run on the
/// same machine. Before first use, the prefixes of test processes that died are swept (their
/// sandboxes killed, their cgroups removed).
public enum TestCgroups {
    public static let driver: CgroupDriver? = {
        sweepDeadRuns()
        return try? CgroupDriver.detect(prefix: "corral-tests-\(getpid())")
    }()

    private static func sweepDeadRuns() {
        let roots = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        var prefixes = Set<String>()
        for root in roots {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
            where name.hasPrefix("corral-tests") {
                prefixes.insert(name)
            }
        }
        for prefix in prefixes {
            // corral-tests-PID[-suffix] of a live process is another run in progress: leave it.
            let parts = prefix.split(separator: "-")
            if parts.count > 2, let pid = Int32(parts[2]), kill(pid, 0) == 0 { continue }
            guard let driver = try? CgroupDriver.detect(prefix: prefix) else { continue }
            _ = try? driver.sweepOrphans(keeping: [])
            for directory in driver.directories { rmdir(directory) }
        }
    }
}
