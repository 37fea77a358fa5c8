import Foundation

/// What the host remembers about one project across restarts.
struct ProjectRecord: Sendable, Equatable {
    var id: String
    var source: String
    /// Expected hex SHA-256 of the source archive, when the registration gave one.
    var sha256: String?
    /// A workspace was fully extracted and renamed into place.
    var ready = false
    /// Identifies what the workspace was materialized from (``BlobInfo/version``).
    var sourceVersion: String?
    var materializedAt: Date?
    var lastUsed: Date
    var diskBytes: Int64 = 0
    /// The manifest digest of the last clean state (materialization or snapshot).
    var manifestDigest: String?
    /// The latest write-back snapshot in the primary store.
    var snapshotKey: String?
    var snapshotVersion: String?
    var snapshotAt: Date?
    /// The project's own workspace cap; nil: ``CacheConfiguration/workspaceQuotaBytes``.
    var quotaBytes: Int64?
    /// The size of the filesystem the ready workspace lives in; nil: a plain directory.
    var volumeBytes: Int64?
    /// The version of the source the workspace descends from (the uploaded archive's or the
    /// registered source's, never a snapshot's): part of its setup's ``SetupKey``.
    var baseVersion: String?
    /// The project's setup as it stands on this workspace; nil: it never ran on these files.
    var setup: SetupRecord?
    /// The read-only layers under a ready workspace that is an overlay (a fork, or a source
    /// since it was forked), top first; empty: a workspace of its own (docs/CACHE.md, "Forks").
    var layers: [String] = []
    /// A write-back between "pack stored under a temporary name" and "index updated": what
    /// the store's object will be once it is renamed into place. Recorded before the put, so
    /// a host killed in between finds on restart whether the object is the new one and makes
    /// the index agree with the store (``ProjectCache/settlePendingSnapshots(_:)``).
    var pendingSnapshot: PendingSnapshot?
}

/// The write-back in flight of a ``ProjectRecord``.
struct PendingSnapshot: Sendable, Equatable, Codable {
    /// ``BlobInfo/version`` of the packed archive (`sha256:…`).
    var version: String
    /// The manifest digest of what was packed; nil when the setup changed while packing.
    var digest: String?
    var diskBytes: Int64
}

/// The persistent cache index: one SQLite table of ``ProjectRecord``s under the data directory.
///
/// Writes happen on state changes (register, materialized, snapshot, evicted), and
/// `last_used` is flushed by the sweep, not on every touch. A row is written *after* the
/// file-system change it describes, so a crash leaves either an old row (and an orphaned
/// directory the next start sweeps) or the new one, never a row pointing at nothing.
final class CacheIndex {
    private let db: SQLiteDatabase

    init(path: String) throws(SQLiteError) {
        db = try SQLiteDatabase(path: path, name: "cache index")
        try db.execute(
            """
            CREATE TABLE IF NOT EXISTS projects (
                id TEXT PRIMARY KEY,
                source TEXT NOT NULL,
                sha256 TEXT,
                ready INTEGER NOT NULL DEFAULT 0,
                source_version TEXT,
                materialized_at REAL,
                last_used REAL NOT NULL,
                disk_bytes INTEGER NOT NULL DEFAULT 0,
                manifest_digest TEXT,
                snapshot_key TEXT,
                snapshot_version TEXT,
                snapshot_at REAL,
                quota_bytes INTEGER,
                volume_bytes INTEGER
            );
            """)
        // Version 1 had no disk caps; its rows keep working as uncapped directories.
        let columns = Set(try db.query("PRAGMA table_info(projects)").compactMap { $0["name"].text })
        for column in ["quota_bytes", "volume_bytes"] where !columns.contains(column) {
            try db.execute("ALTER TABLE projects ADD COLUMN \(column) INTEGER")
        }
        // Version 5 adds forks: a project's layer stack, and the layers themselves.
        if !columns.contains("layers") { try db.execute("ALTER TABLE projects ADD COLUMN layers TEXT") }
        try db.execute(
            """
            CREATE TABLE IF NOT EXISTS layers (
                id TEXT PRIMARY KEY,
                tree TEXT NOT NULL,
                lowers TEXT NOT NULL,
                owner INTEGER,
                snapshot_project TEXT,
                snapshot_name TEXT,
                snapshot_sha256 TEXT,
                bytes INTEGER NOT NULL,
                created_at REAL NOT NULL
            );
            """)
        // Version 3 adds named snapshots: a table of their own, created where it is missing,
        // so an index of version 2 keeps every row and simply has none yet.
        try db.execute(
            """
            CREATE TABLE IF NOT EXISTS named_snapshots (
                project TEXT NOT NULL,
                name TEXT NOT NULL,
                created_at REAL NOT NULL,
                bytes INTEGER NOT NULL,
                files INTEGER NOT NULL,
                sha256 TEXT NOT NULL,
                PRIMARY KEY (project, name)
            );
            """)
        // Version 4 keeps each workspace's setup with it; older rows have none, so a project
        // with setup commands runs them once on its next materialization.
        for column in ["base_version", "setup"] where !columns.contains(column) {
            try db.execute("ALTER TABLE projects ADD COLUMN \(column) TEXT")
        }
        // Version 6 records a write-back in flight, so a crash mid-put is settled on restart.
        if !columns.contains("snapshot_pending") {
            try db.execute("ALTER TABLE projects ADD COLUMN snapshot_pending TEXT")
        }
        try db.execute("PRAGMA user_version = 6")
    }

    func load() throws(SQLiteError) -> [ProjectRecord] {
        try db.query("SELECT * FROM projects ORDER BY id").map { row in
            ProjectRecord(
                id: row["id"].text ?? "", source: row["source"].text ?? "", sha256: row["sha256"].text,
                ready: row["ready"].integer == 1, sourceVersion: row["source_version"].text,
                materializedAt: row["materialized_at"].real.map(Date.init(timeIntervalSince1970:)),
                lastUsed: Date(timeIntervalSince1970: row["last_used"].real ?? 0),
                diskBytes: row["disk_bytes"].integer ?? 0, manifestDigest: row["manifest_digest"].text,
                snapshotKey: row["snapshot_key"].text, snapshotVersion: row["snapshot_version"].text,
                snapshotAt: row["snapshot_at"].real.map(Date.init(timeIntervalSince1970:)),
                quotaBytes: row["quota_bytes"].integer, volumeBytes: row["volume_bytes"].integer,
                baseVersion: row["base_version"].text,
                // A record this version cannot read is no record: setup runs again.
                setup: row["setup"].text.flatMap { try? JSONDecoder().decode(SetupRecord.self, from: Data($0.utf8)) },
                layers: Self.stack(row["layers"].text),
                pendingSnapshot: row["snapshot_pending"].text.flatMap {
                    try? JSONDecoder().decode(PendingSnapshot.self, from: Data($0.utf8))
                })
        }
    }

    func save(_ r: ProjectRecord) throws(SQLiteError) {
        try db.run(
            """
            INSERT INTO projects (id, source, sha256, ready, source_version, materialized_at, last_used,
                disk_bytes, manifest_digest, snapshot_key, snapshot_version, snapshot_at, quota_bytes, volume_bytes,
                base_version, setup, layers, snapshot_pending)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET source = excluded.source, sha256 = excluded.sha256,
                ready = excluded.ready, source_version = excluded.source_version,
                materialized_at = excluded.materialized_at, last_used = excluded.last_used,
                disk_bytes = excluded.disk_bytes, manifest_digest = excluded.manifest_digest,
                snapshot_key = excluded.snapshot_key, snapshot_version = excluded.snapshot_version,
                snapshot_at = excluded.snapshot_at, quota_bytes = excluded.quota_bytes,
                volume_bytes = excluded.volume_bytes, base_version = excluded.base_version, setup = excluded.setup,
                layers = excluded.layers, snapshot_pending = excluded.snapshot_pending
            """,
            .text(r.id), .text(r.source), SQLiteValue(r.sha256), .integer(r.ready ? 1 : 0),
            SQLiteValue(r.sourceVersion), SQLiteValue(r.materializedAt?.timeIntervalSince1970),
            .real(r.lastUsed.timeIntervalSince1970), .integer(r.diskBytes), SQLiteValue(r.manifestDigest),
            SQLiteValue(r.snapshotKey), SQLiteValue(r.snapshotVersion),
            SQLiteValue(r.snapshotAt?.timeIntervalSince1970), SQLiteValue(r.quotaBytes), SQLiteValue(r.volumeBytes),
            SQLiteValue(r.baseVersion), SQLiteValue(r.setup.flatMap(Self.json)),
            SQLiteValue(r.layers.isEmpty ? nil : r.layers.joined(separator: ":")),
            SQLiteValue(
                r.pendingSnapshot.flatMap { try? JSONEncoder().encode($0) }.map { String(decoding: $0, as: UTF8.self) })
        )
    }

    static func json(_ setup: SetupRecord) -> String? {
        (try? JSONEncoder().encode(setup)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// A stored layer stack (`a:b:c`, layer ids never hold a colon).
    static func stack(_ text: String?) -> [String] {
        (text ?? "").split(separator: ":").map(String.init)
    }

    /// Writes several records in one transaction (the sweep's `last_used` flush).
    func save(_ records: [ProjectRecord]) throws {
        try db.transaction {
            for r in records { try save(r) }
        }
    }

    /// Removes the project's row and the rows of its named snapshots.
    func delete(_ id: String) throws(SQLiteError) {
        try db.run("DELETE FROM named_snapshots WHERE project = ?", .text(id))
        try db.run("DELETE FROM projects WHERE id = ?", .text(id))
    }

    // MARK: - Named snapshots

    func loadSnapshots() throws(SQLiteError) -> [NamedSnapshot] {
        try db.query("SELECT * FROM named_snapshots ORDER BY project, created_at, name").map { row in
            NamedSnapshot(
                name: row["name"].text ?? "", project: row["project"].text ?? "",
                createdAt: Date(timeIntervalSince1970: row["created_at"].real ?? 0), bytes: row["bytes"].integer ?? 0,
                files: Int(row["files"].integer ?? 0), sha256: row["sha256"].text ?? "")
        }
    }

    func save(_ s: NamedSnapshot) throws(SQLiteError) {
        try db.run(
            """
            INSERT OR REPLACE INTO named_snapshots (project, name, created_at, bytes, files, sha256)
            VALUES (?, ?, ?, ?, ?, ?)
            """,
            .text(s.project), .text(s.name), .real(s.createdAt.timeIntervalSince1970), .integer(s.bytes),
            .integer(Int64(s.files)), .text(s.sha256))
    }

    func deleteSnapshots(project: String) throws(SQLiteError) {
        try db.run("DELETE FROM named_snapshots WHERE project = ?", .text(project))
    }

    func deleteSnapshot(project: String, name: String) throws(SQLiteError) {
        try db.run("DELETE FROM named_snapshots WHERE project = ? AND name = ?", .text(project), .text(name))
    }

    // MARK: - Layers (forks)

    func loadLayers() throws(SQLiteError) -> [LayerRecord] {
        try db.query("SELECT * FROM layers ORDER BY created_at, id").map { row in
            var snapshot: LayerRecord.SnapshotOrigin?
            if let project = row["snapshot_project"].text, let name = row["snapshot_name"].text {
                snapshot = .init(project: project, name: name, sha256: row["snapshot_sha256"].text ?? "")
            }
            return LayerRecord(
                id: row["id"].text ?? "", tree: row["tree"].text ?? "workspace", lowers: Self.stack(row["lowers"].text),
                owner: row["owner"].integer.map { UInt32(truncatingIfNeeded: $0) }, snapshot: snapshot,
                bytes: row["bytes"].integer ?? 0, createdAt: Date(timeIntervalSince1970: row["created_at"].real ?? 0))
        }
    }

    func save(_ l: LayerRecord) throws(SQLiteError) {
        try db.run(
            """
            INSERT OR REPLACE INTO layers (id, tree, lowers, owner, snapshot_project, snapshot_name, snapshot_sha256,
                bytes, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            .text(l.id), .text(l.tree), .text(l.lowers.joined(separator: ":")), SQLiteValue(l.owner.map(Int64.init)),
            SQLiteValue(l.snapshot?.project), SQLiteValue(l.snapshot?.name), SQLiteValue(l.snapshot?.sha256),
            .integer(l.bytes), .real(l.createdAt.timeIntervalSince1970))
    }

    func deleteLayer(_ id: String) throws(SQLiteError) {
        try db.run("DELETE FROM layers WHERE id = ?", .text(id))
    }
}
