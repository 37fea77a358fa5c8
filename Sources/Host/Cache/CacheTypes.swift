import Foundation
import Logging
import Synchronization

/// How a ``ProjectCache`` behaves: where it keeps data, where blobs live, and its limits.
public struct CacheConfiguration: Sendable {
    /// Holds `index.sqlite`, `workspaces/`, `volumes/`, `mounts/`, `staging/`, `downloads/`,
    /// `snapshots/`, `trash/`.
    public var dataDirectory: String
    /// Source stores and the primary store for uploads and snapshots.
    public var stores: BlobStores
    /// A project unused for this long (no call, no running job) is written back and evicted.
    public var ttl: Duration
    /// Total workspace bytes to keep; least recently used projects go first. nil: no budget.
    public var diskBudget: Int64?
    /// How often a sweep checks each workspace and writes it back when dirty. nil: only
    /// before eviction and on demand.
    public var snapshotInterval: Duration?
    /// The largest archive a project may download.
    public var maxDownloadBytes: Int64
    public var extraction: ExtractionLimits
    /// The disk cap of every project that sets none of its own: its workspace then lives in
    /// a filesystem of this size (docs/CACHE.md, "Disk cap"), so a job that writes forever
    /// gets ENOSPC instead of filling the host's disk. nil: projects without a cap of their
    /// own are plain directories on the host's filesystem. Needs root and loop devices.
    public var workspaceQuotaBytes: Int64?
    /// Formatted workspace filesystems kept ready for each cap size in use (the last two
    /// asked for), so a new project's upload or a materialization takes one instead of
    /// running mkfs (docs/CACHE.md, "Spare filesystems"). 0: none, each is made when needed.
    public var spareVolumes: Int = 0
    /// The time source, injected by tests.
    public var clock: @Sendable () -> Date
    public var logger: Logger

    /// Defaults: primary store `<data>/blobs`, 24 h TTL, write-back every 15 min when dirty.
    public init(
        dataDirectory: String, stores: BlobStores? = nil, ttl: Duration = .seconds(24 * 3600),
        diskBudget: Int64? = nil, snapshotInterval: Duration? = .seconds(15 * 60), maxDownloadBytes: Int64 = 8 << 30,
        extraction: ExtractionLimits = ExtractionLimits(), workspaceQuotaBytes: Int64? = nil,
        clock: @escaping @Sendable () -> Date = Date.init, logger: Logger = Logger(label: "corral.cache")
    ) {
        self.dataDirectory = dataDirectory
        self.stores = stores ?? BlobStores(primary: LocalBlobStore(directory: dataDirectory + "/blobs"))
        self.ttl = ttl
        self.diskBudget = diskBudget
        self.snapshotInterval = snapshotInterval
        self.maxDownloadBytes = maxDownloadBytes
        self.extraction = extraction
        self.workspaceQuotaBytes = workspaceQuotaBytes
        self.clock = clock
        self.logger = logger
    }
}

/// A materialized project: the directory a sandbox mounts at `/workspace`.
public struct Workspace: Sendable, Equatable {
    public var project: String
    /// Absolute host path of the project root.
    public var path: String
    /// What it was materialized from (``BlobInfo/version`` of the source or snapshot).
    public var sourceVersion: String
    public var materializedAt: Date
    /// For an overlay workspace (a fork, docs/CACHE.md "Forks"): the identity range that owns
    /// its read-only layers, which its sandbox shares (``SandboxConfiguration/sharedIdentity``).
    public var sharedIdentity: UInt32? = nil
}

/// The cache state of a project, as `GET /v1/projects/{id}` reports it.
public enum ProjectState: String, Sendable, Equatable {
    case cold, fetching, ready
}

/// One project as the cache sees it.
public struct ProjectStatus: Sendable, Equatable {
    public var id: String
    /// The registered source, without credentials or SAS query.
    public var source: String
    public var state: ProjectState
    public var sourceVersion: String?
    /// Whether the workspace changed since it was materialized or last written back, as of
    /// the last check (nil: not checked since start). True as well when the last check
    /// failed: a workspace that cannot be checked is never reported clean.
    public var dirty: Bool?
    public var diskBytes: Int64
    /// The workspace's disk cap: the size of the filesystem a ready workspace lives in, or
    /// the cap the next materialization gets. nil: uncapped.
    public var quotaBytes: Int64?
    /// Running jobs (and other holders) that keep the project from eviction.
    public var pins: Int
    public var lastUsed: Date
    public var expiresAt: Date
    public var snapshotVersion: String?
    public var snapshotAt: Date?
    /// Archive bytes of the project's named snapshots in the primary store.
    public var snapshotBytes: Int64 = 0
}

/// What the cache has served since it opened, for `/metrics`.
public struct CacheCounters: Sendable, Equatable {
    /// Calls (``ProjectCache/materialize(_:progress:)``, so every ``ProjectCache/acquire(_:progress:)``:
    /// each job, file tool call and warm-up) that found the workspace ready.
    public var hits: Int
    /// Calls that did not, and waited for a download and extraction: the one they started, or
    /// one already in flight.
    public var misses: Int
    /// Bytes of sources and snapshots fetched by materializations that got them whole.
    public var downloadedBytes: Int64

    public init(hits: Int = 0, misses: Int = 0, downloadedBytes: Int64 = 0) {
        self.hits = hits
        self.misses = misses
        self.downloadedBytes = downloadedBytes
    }
}

/// What a materialization is doing, reported to every caller waiting on it.
public enum CacheProgress: Sendable, Equatable {
    case downloading(TransferProgress)
    case extracting
    case ready
    /// The project's setup, which a warm-up waits for after the workspace is ready.
    case setup(SetupProgress)
}

/// The outcome of a write-back.
/// Codable as it crosses the wire (`POST …/snapshot`, the node-worker hop): the field names
/// are the JSON keys.
public struct SnapshotResult: Sendable, Equatable, Codable {
    /// The key in the primary store.
    public var key: String
    public var version: String
    public var bytes: Int64
    public var files: Int
    /// Special files (FIFOs, sockets, devices) that were left out.
    public var skipped: Int

    public init(key: String, version: String, bytes: Int64, files: Int, skipped: Int) {
        self.key = key
        self.version = version
        self.bytes = bytes
        self.files = files
        self.skipped = skipped
    }
}

/// What one ``ProjectCache/sweep(now:)`` did.
public struct SweepReport: Sendable, Equatable {
    public var snapshotted: [String] = []
    public var expired: [String] = []
    /// Evicted to get under the disk budget, least recently used first.
    public var overBudget: [String] = []
    /// Projects whose write-back or eviction failed; their workspaces are kept.
    public var failed: [String: CacheError] = [:]
}

/// What a restart found on disk.
public struct RecoveryReport: Sendable, Equatable {
    /// Intact workspaces adopted from the index.
    public var adopted: [String] = []
    /// Half-finished leftovers removed (staging, downloads, temporary snapshots, trash).
    public var swept = 0
    /// Ready in the index but missing on disk: now cold.
    public var lost: [String] = []
    /// Workspace directories and images of unregistered projects (and images that could
    /// not be mounted again), moved to `orphans/` (never deleted).
    public var orphaned: [String] = []
    /// Mounts under `mounts/` that belonged to no ready project (a crashed run's), unmounted.
    public var unmounted = 0
    /// Loop devices bound to this cache's images but used by no mount, detached.
    public var detached = 0

    public init(
        adopted: [String] = [], swept: Int = 0, lost: [String] = [], orphaned: [String] = [], unmounted: Int = 0,
        detached: Int = 0
    ) {
        self.adopted = adopted
        self.swept = swept
        self.lost = lost
        self.orphaned = orphaned
        self.unmounted = unmounted
        self.detached = detached
    }
}

/// Delivers progress to every waiter of one materialization.
final class ProgressFanout: Sendable {
    private let handlers = Mutex<[@Sendable (CacheProgress) -> Void]>([])

    func add(_ handler: (@Sendable (CacheProgress) -> Void)?) {
        guard let handler else { return }
        handlers.withLock { $0.append(handler) }
    }

    func send(_ progress: CacheProgress) {
        for handler in handlers.withLock({ $0 }) { handler(progress) }
    }
}
