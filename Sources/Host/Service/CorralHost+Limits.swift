import Sandbox

extension CorralHost {
    /// Which limits the kernel enforces for a project, per resource (`cpu`, `memory`,
    /// `swap`, `pids`, `kill`): `enforced by <directory> (<files>)` or `not enforced: <why>`.
    ///
    /// A running sandbox that was started without some of its limits (its policy says
    /// `require_limits = false`) reports those as not enforced, with the reason it recorded.
    func limitReport(sandbox: ProjectSandbox?) -> [String: String] {
        guard let enforcement = configuration.cgroups?.enforcement() else {
            var report = Dictionary(
                uniqueKeysWithValues: CgroupResource.allCases.map {
                    ($0.rawValue, "not enforced: no cgroup hierarchy is usable on this host")
                })
            report["kill"] =
                "not enforced: no cgroup hierarchy is usable on this host; a kill reaches the job's session"
            return report
        }
        var report: [String: String] = [:]
        for (resource, status) in enforcement.dictionary {
            report[resource] = status.hasPrefix("not enforced: ") ? status : "enforced by \(status)"
        }
        for (resource, reason) in sandbox?.unenforcedLimits ?? [:] {
            report[resource.rawValue] = "not enforced: \(reason)"
        }
        return report
    }
}
