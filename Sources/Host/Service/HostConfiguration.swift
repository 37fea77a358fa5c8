import Foundation
import Sandbox

/// Where a Corral host keeps things and how it behaves. `corral serve` fills it from flags.
public struct HostConfiguration: Sendable {
    /// Cache, journal, blobs and logs live here.
    public var dataDirectory: String
    /// Built rootfs images: `<dir>/<name>` per policy's `rootfs`.
    public var rootfsDirectory: String
    /// Admin-edited policy files.
    public var policiesDirectory: String
    /// The policy of projects registered without one.
    public var defaultPolicy: String
    /// The addresses `http(s)://` project sources may reach (only public ones by default);
    /// it replaces the one in ``stores``, so every way of opening a host has this one knob.
    public var sourceAddresses = SourceAddressPolicy()
    public var jobLimits: JobLimits
    /// The cgroup driver; nil runs without limits (flagged in the status).
    public var cgroups: CgroupDriver?
    /// Whether a clean stop (``CorralHost/shutdown(grace:)``) removes the directories of
    /// ``cgroups``' prefix once every sandbox is gone (``CgroupDriver/removePrefix()``).
    /// `corral serve` and cluster workers set it: their driver is detected for them alone.
    /// Off by default, because a driver shared by several hosts in one process (the
    /// default ``CgroupDriver/host``, or the tests' one) must keep its prefix while any of
    /// them still creates sandboxes.
    public var removesCgroupPrefixOnStop = false
    /// Sandboxes and workspaces unused this long are written back and evicted.
    public var ttl: Duration
    /// Blob stores: the primary store (uploads, write-back snapshots) and what sources may
    /// name. nil: a local store under the data directory. Worker hosts of a cluster share
    /// one primary store, so any of them can materialize any project.
    public var stores: BlobStores?
    /// Formatted workspace filesystems the cache keeps ready for each cap size in use
    /// (``CacheConfiguration/spareVolumes``); the default policy's cap is prepared at start.
    public var spareVolumes = 2

    public init(
        dataDirectory: String, rootfsDirectory: String, policiesDirectory: String, defaultPolicy: String = "default",
        jobLimits: JobLimits = JobLimits(), cgroups: CgroupDriver? = CgroupDriver.host,
        ttl: Duration = .seconds(86_400),
        stores: BlobStores? = nil
    ) {
        self.stores = stores
        self.dataDirectory = dataDirectory
        self.rootfsDirectory = rootfsDirectory
        self.policiesDirectory = policiesDirectory
        self.defaultPolicy = defaultPolicy
        self.jobLimits = jobLimits
        self.cgroups = cgroups
        self.ttl = ttl
    }
}

/// Why the host refused a project call.
public enum HostError: Error, Equatable, Sendable, CustomStringConvertible {
    case unknownPolicy(String)
    /// The policy's file is there but has never loaded: what the loader found wrong with it.
    case invalidPolicy(String, problems: [PolicyError])
    case policyLimits(String)
    case projectNotFound(String)
    case rootfsMissing(String)
    /// The project's setup failed for its current files and commands: its jobs are refused
    /// with this (the failed command, its exit code, the end of its output).
    case setupFailed(project: String, message: String)
    /// Setup commands that cannot be a project's (``SetupCommands``).
    case invalidSetup(String)

    public var description: String {
        switch self {
        case .unknownPolicy(let name): "no such policy: \(name)"
        case .invalidPolicy(let name, let problems):
            "the file of policy \"\(name)\" is invalid and no good version of it has loaded: "
                + PolicyErrors(problems).summary()
        case .policyLimits(let why): why
        case .projectNotFound(let id): "no such project: \(id)"
        case .rootfsMissing(let path): "rootfs image is not built: \(path) (run make rootfs)"
        case .setupFailed(_, let message): message
        case .invalidSetup(let why): "`setup` \(why)"
        }
    }
}
