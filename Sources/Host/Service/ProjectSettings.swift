import Foundation
import Synchronization

/// What a project was registered with beyond its source: its policy and the limits it
/// asked for (never above the policy's). Kept in `<data>/projects.json`.
struct ProjectSettings: Sendable, Codable, Equatable {
    var policy: String
    var cpus: Double?
    var memoryBytes: UInt64?
    var pids: Int?
    var timeoutSeconds: Int?
    /// Absent in files written before workspaces were capped: then the policy's cap.
    var workspaceBytes: UInt64?
    /// The ownership epoch this host's copy of the project belongs to, when a registry
    /// outside the host (a cluster's) hands projects between hosts; nil on an all-in-one host.
    var epoch: Int? = nil
    /// Commands run once per file set before the project's other jobs (docs/ENVIRONMENTS.md,
    /// "Setup"); nil or empty: none.
    var setup: [String]? = nil

    var requested: RequestedLimits {
        RequestedLimits(
            cpus: cpus, memoryBytes: memoryBytes, pids: pids, workspaceBytes: workspaceBytes,
            timeoutSeconds: timeoutSeconds)
    }
}

/// The settings of every registered project, saved atomically on each change.
///
/// A project being deleted is *closing*: it is still saved here (a deletion that fails
/// leaves it registered), but lookups no longer find it, so no new job, session, file call
/// or registration can start on it while its work is ended.
final class ProjectSettingsStore: Sendable {
    private let path: String
    private let state: Mutex<[String: ProjectSettings]>
    private let closing = Mutex<Set<String>>([])

    init(path: String) {
        self.path = path
        let data = FileManager.default.contents(atPath: path) ?? Data("{}".utf8)
        state = Mutex((try? JSONDecoder().decode([String: ProjectSettings].self, from: data)) ?? [:])
    }

    subscript(_ project: String) -> ProjectSettings? {
        if closing.withLock({ $0.contains(project) }) { return nil }
        return state.withLock { $0[project] }
    }

    /// Every project with settings here, closing ones included.
    var projects: [String] { state.withLock { $0.keys.sorted() } }

    /// Hides a project from lookups while it is deleted; false when it is not registered or
    /// already closing (a deletion is in progress).
    func close(_ project: String) -> Bool {
        guard state.withLock({ $0[project] != nil }) else { return false }
        return closing.withLock { $0.insert(project).inserted }
    }

    /// Ends ``close(_:)``: after a deletion (the settings are gone by then) or a failed one.
    func reopen(_ project: String) { _ = closing.withLock { $0.remove(project) } }

    func set(_ project: String, _ settings: ProjectSettings?) throws {
        let snapshot = state.withLock { all in
            all[project] = settings
            return all
        }
        let data = try JSONEncoder().encode(snapshot)
        try data.write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}
