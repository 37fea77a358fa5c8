import Foundation
import Sandbox

/// What `GET /status` reports: what runs, what waits, what is enforced, what is broken.
public struct HostStatus: Sendable, Codable, Equatable {
    public var version: String
    public var projects: Int
    public var sandboxes: Int
    public var queuedJobs: Int
    public var runningJobs: Int
    /// Job slots per lane, host-wide and per project.
    public var workerSlots: [String: Int]
    /// unified, hybrid, legacy, or none.
    public var cgroupMode: String
    /// Per limit (cpu, memory, swap, pids, kill): which hierarchy enforces it, or why not.
    public var enforcedLimits: [String: String]
    /// Digest of each policy in force.
    public var policies: [String: String]
    /// Policy files that failed to load (their last good version stays in force).
    public var policyErrors: [String]

    public init(
        version: String, projects: Int, sandboxes: Int, queuedJobs: Int, runningJobs: Int, workerSlots: [String: Int],
        cgroupMode: String, enforcedLimits: [String: String], policies: [String: String], policyErrors: [String]
    ) {
        self.version = version
        self.projects = projects
        self.sandboxes = sandboxes
        self.queuedJobs = queuedJobs
        self.runningJobs = runningJobs
        self.workerSlots = workerSlots
        self.cgroupMode = cgroupMode
        self.enforcedLimits = enforcedLimits
        self.policies = policies
        self.policyErrors = policyErrors
    }

    enum CodingKeys: String, CodingKey {
        case version, projects, sandboxes, policies
        case queuedJobs = "queued_jobs"
        case runningJobs = "running_jobs"
        case workerSlots = "worker_slots"
        case cgroupMode = "cgroup_mode"
        case enforcedLimits = "enforced_limits"
        case policyErrors = "policy_errors"
    }
}

extension CorralHost {
    public func status() async -> HostStatus {
        let depth = await jobs.depth()
        let policyStatus = policies.status
        var slots: [String: Int] = [:]
        for lane in JobLane.allCases {
            slots[lane.rawValue] = configuration.jobLimits.slots[lane]
            slots["\(lane.rawValue)_per_project"] = configuration.jobLimits.perProject[lane]
        }
        return HostStatus(
            version: HostModule.version, projects: await cache.list().count, sandboxes: await pool.projects.count,
            queuedJobs: depth.queued, runningJobs: depth.running, workerSlots: slots,
            cgroupMode: configuration.cgroups?.mode.rawValue ?? "none",
            enforcedLimits: configuration.cgroups?.enforcement().dictionary ?? [:],
            policies: policyStatus.digests, policyErrors: policyStatus.errors.map(\.description))
    }

    /// Readiness of each dependency: the job queue accepts, the blob store and the rootfs
    /// images of the policies in force exist, a cgroup driver is present.
    public func readiness() async -> [String: Bool] {
        var checks: [String: Bool] = ["cgroups": configuration.cgroups != nil]
        checks["blob_store"] = FileManager.default.fileExists(atPath: configuration.dataDirectory + "/cache")
        let images = Set(policies.status.digests.keys.compactMap { policies.policy(named: $0)?.rootfs })
        checks["rootfs"] =
            !images.isEmpty
            && images.allSatisfy {
                FileManager.default.fileExists(atPath: configuration.rootfsDirectory + "/" + $0 + "/.corral-rootfs")
            }
        checks["queue"] = await jobs.depth().queued < configuration.jobLimits.maxQueued
        return checks
    }
}
