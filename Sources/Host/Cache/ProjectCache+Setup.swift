import Foundation
import Glibc

/// What the cache knows of a project's setup: it goes with the workspace it prepared.
public struct WorkspaceSetup: Sendable, Equatable {
    /// The materialization it is about; nil while the project is cold.
    public var workspace: Workspace?
    /// What the workspace descends from (``SetupKey``); nil until the project has been
    /// materialized here.
    public var baseVersion: String?
    /// The setup that ran on these files; nil when none did.
    public var record: SetupRecord?
}

/// The small JSON object beside a write-back snapshot, `snapshots/<id>.setup.json`: the
/// setup the packed tree had, and which snapshot it describes, so a host that restores
/// the snapshot (this one after an eviction, another worker of a cluster) knows whether
/// setup already ran on it.
struct SetupSidecar: Codable, Equatable {
    /// ``BlobInfo/version`` of the snapshot it was written with: a snapshot whose sidecar
    /// names another (the host stopped between the two uploads) is one with no known setup.
    var snapshotVersion: String
    var baseVersion: String?
    var setup: SetupRecord?

    enum CodingKeys: String, CodingKey {
        case setup
        case snapshotVersion = "snapshot_version"
        case baseVersion = "base_version"
    }
}

// MARK: - Setup (docs/ENVIRONMENTS.md, "Setup")

extension ProjectCache {
    /// The project's workspace as it is now and the setup it carries.
    public func setupState(_ id: String) throws(CacheError) -> WorkspaceSetup {
        guard let record = entries[id]?.record else { throw .unknownProject(id) }
        return WorkspaceSetup(
            workspace: record.ready ? workspace(record) : nil, baseVersion: record.baseVersion, record: record.setup)
    }

    /// Records `setup` on the workspace `on`, persisted at once; false (and nothing done)
    /// when that workspace is no longer the project's (replaced, evicted, restored). A
    /// setup that ended leaves the workspace dirty, so the next write-back stores its state
    /// beside the tree it prepared.
    @discardableResult
    public func recordSetup(_ id: String, _ setup: SetupRecord?, on workspace: Workspace) throws(CacheError) -> Bool {
        guard let record = entries[id]?.record, record.ready, self.workspace(record) == workspace else { return false }
        entries[id]!.record.setup = setup
        if setup?.status != .running {
            entries[id]!.record.manifestDigest = nil
            entries[id]!.dirty = true
        }
        try persist(id)
        return true
    }

    /// The key of the sidecar beside the project's write-back snapshot.
    func setupKey(_ id: String) -> String { "snapshots/\(id).setup.json" }

    /// Uploads the sidecar of the snapshot just written. A failure is logged, not thrown:
    /// the snapshot is good, and without a sidecar that names it, setup merely runs again
    /// after a restore.
    func writeSetupSidecar(_ id: String, snapshotVersion: String, baseVersion: String?, setup: SetupRecord?) async {
        let sidecar = SetupSidecar(snapshotVersion: snapshotVersion, baseVersion: baseVersion, setup: setup)
        let path = layout.pack(id) + ".setup.json"
        defer { unlink(path) }
        do throws(CacheError) {
            guard let data = try? JSONEncoder().encode(sidecar) else { return }
            try await Self.spool(Array(data), to: path)
            _ = try await config.stores.primary.put(setupKey(id), from: path)
        } catch {
            logger.warning("setup sidecar not written", metadata: ["project": "\(id)", "error": "\(error)"])
        }
    }

    /// The sidecar of the snapshot of version `snapshotVersion`; nil when there is none, it
    /// names another snapshot, or it cannot be read (setup then runs again).
    func readSetupSidecar(_ id: String, snapshotVersion: String) async -> SetupSidecar? {
        let path = layout.download(id) + ".setup.json"
        defer { unlink(path) }
        do throws(CacheError) {
            _ = try await config.stores.primary.get(setupKey(id), to: path, limit: 1 << 20, progress: nil)
        } catch .notFound {
            return nil
        } catch {
            logger.warning("setup sidecar not read", metadata: ["project": "\(id)", "error": "\(error)"])
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path),
            let sidecar = try? JSONDecoder().decode(SetupSidecar.self, from: data),
            sidecar.snapshotVersion == snapshotVersion
        else { return nil }
        return sidecar
    }

    /// Deletes the project's write-back snapshot and its sidecar.
    func deleteWriteBack(_ id: String, key: String?) async throws(CacheError) {
        try await config.stores.primary.delete(key ?? layout.snapshotKey(id))
        try await config.stores.primary.delete(setupKey(id))
    }
}
