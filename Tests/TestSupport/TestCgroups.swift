import Sandbox

/// The cgroup driver tests use: its own prefix, so tests never touch the cgroups of a real
/// Corral host on the same machine, and orphans of an earlier, crashed test run are swept
/// (killed and removed) once, before the first test uses it.
public enum TestCgroups {
    public static let driver: CgroupDriver? = {
        let driver = try? CgroupDriver.detect(prefix: "corral-tests")
        _ = try? driver?.sweepOrphans(keeping: [])
        return driver
    }()
}
