/// What a project's sandbox is made of. Built by the host from the project's policy; the
/// sandbox only executes it.
public struct SandboxConfiguration: Sendable {
    /// The project id; also the sandbox's hostname.
    public var projectID: String
    /// Host path of the project's workspace, mounted read-write at `/workspace`.
    public var workspace: String
    /// Host path of the root filesystem image, mounted read-only at `/`.
    public var rootfs: String
    /// Size of the `/tmp` tmpfs, in bytes.
    public var tmpBytes: UInt64
    /// Size of the `/dev/shm` tmpfs, in bytes.
    public var shmBytes: UInt64
    /// Extra read-only bind mounts: host path → path inside (which must exist in the image).
    public var readOnlyBinds: [(source: String, target: String)]
    /// Resource limits of the project's cgroup.
    public var limits: CgroupLimits
    /// The host's cgroup driver; nil runs without cgroups (no limits, no accounting, and a
    /// timeout's kill reaches only the job's session). `CgroupDriver.host` is the default.
    public var cgroups: CgroupDriver?
    /// Whether a limit of ``limits`` this host cannot enforce refuses the sandbox (true) or
    /// is skipped and reported in ``ProjectSandbox/unenforcedLimits`` (false).
    public var requireLimits: Bool
    /// Whether the next job's cgroup leaf is made while a job runs, so its `mkdir`s never sit
    /// between a request and its job. A sandbox for a single job (`corral exec`) turns this
    /// off: its spare would be made and removed for nothing.
    public var spareJobLeaves = true
    /// Whether the workspace's `.corral/home` is mounted read-write at `/home/agent`
    /// (``ProjectHome``). A project's sandbox has one; `corral exec` over a directory of the
    /// user's does not, so it never writes into that directory beyond what its job does.
    public var projectHome = false
    /// The identity range (its first host id) of the read-only layers under a forked
    /// project's workspace (docs/CACHE.md, "Forks"), or nil for a workspace of its own.
    /// The lower files are owned by that range's job user, so the sandbox takes the range
    /// (``IdentityRanges/allocate(sharing:)``) and its ownership walk changes nothing below:
    /// a chown of a lower file would copy the whole file up into the fork's own layer.
    public var sharedIdentity: UInt32?

    public init(
        projectID: String,
        workspace: String,
        rootfs: String,
        tmpBytes: UInt64 = 256 << 20,
        shmBytes: UInt64 = 64 << 20,
        readOnlyBinds: [(source: String, target: String)] = [],
        limits: CgroupLimits = CgroupLimits(),
        cgroups: CgroupDriver? = CgroupDriver.host,
        requireLimits: Bool = true,
        sharedIdentity: UInt32? = nil
    ) {
        self.projectID = projectID
        self.workspace = workspace
        self.rootfs = rootfs
        self.tmpBytes = tmpBytes
        self.shmBytes = shmBytes
        self.readOnlyBinds = readOnlyBinds
        self.limits = limits
        self.cgroups = cgroups
        self.requireLimits = requireLimits
        self.sharedIdentity = sharedIdentity
    }
}

extension CgroupDriver {
    /// The driver for this host's cgroup hierarchies, detected once; nil where none is usable.
    public static let host: CgroupDriver? = try? CgroupDriver.detect()
}
