import Foundation

// MARK: - Named snapshots

/// A named, immutable snapshot of a project's workspace, as `POST /v1/projects/{id}/snapshots`
/// creates it and the listing reports it (docs/CACHE.md, "Named snapshots").
///
/// The archive is a write-back archive (pax tar + zstd) at ``key`` in the primary blob store;
/// `bytes` is its size and `sha256` its hash, checked again on every restore.
public struct NamedSnapshot: Sendable, Codable, Equatable {
    public var name: String
    public var project: String
    public var createdAt: Date
    /// Size of the archive in the blob store.
    public var bytes: Int64
    /// Regular files packed (each inode once; further names are hard links).
    public var files: Int
    /// Hex SHA-256 of the archive.
    public var sha256: String

    public init(name: String, project: String, createdAt: Date, bytes: Int64, files: Int, sha256: String) {
        self.name = name
        self.project = project
        self.createdAt = createdAt
        self.bytes = bytes
        self.files = files
        self.sha256 = sha256
    }

    enum CodingKeys: String, CodingKey {
        case name, project, bytes, files, sha256
        case createdAt = "created_at"
    }

    /// The key of the archive in the primary store.
    public var key: String { Self.key(project: project, name: name) }

    /// `named/<project>/<name>.tar.zst`: beside the write-back (`snapshots/<id>.tar.zst`),
    /// never the same key, so a write-back can never overwrite a named snapshot.
    public static func key(project: String, name: String) -> String { "named/\(project)/\(name).tar.zst" }

    /// The rule for names: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-` (so a
    /// name is never a hidden file, `.`/`..`, or read as an option by a tool).
    public static let rule = "1-64 of A-Z a-z 0-9 . _ -, not starting with . or -"

    /// Whether `name` may name a snapshot.
    public static func isValid(_ name: String) -> Bool {
        guard (1...64).contains(name.utf8.count), let first = name.utf8.first, first != 0x2E, first != 0x2D else {
            return false
        }
        return name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
    }
}

/// The answer to `GET /v1/projects/{id}/snapshots`: oldest first.
public struct NamedSnapshotList: Sendable, Codable, Equatable {
    public var project: String
    public var snapshots: [NamedSnapshot]

    public init(project: String, snapshots: [NamedSnapshot]) {
        self.project = project
        self.snapshots = snapshots
    }
}

/// The answer to `POST /v1/projects/{id}/snapshots/{name}/restore`.
public struct SnapshotRestoreReply: Sendable, Codable, Equatable {
    public var project: String
    /// The snapshot the workspace now holds.
    public var restored: NamedSnapshot

    public init(project: String, restored: NamedSnapshot) {
        self.project = project
        self.restored = restored
    }
}
