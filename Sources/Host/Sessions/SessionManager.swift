import Foundation
import Logging

/// The host's sessions, by id: the limits per project, who may use which, idle reaping, and
/// ending them with their project.
actor SessionManager {
    /// Random per host process: a session id names the process that made it, so an id from
    /// a previous process (a restart, or another host before a failover) is reported lost,
    /// never "not found" and never silently replaced.
    nonisolated let instance: String
    private var sessions: [String: Session] = [:]
    /// Sessions ended because their project left this host (``depart(project:)``), by id,
    /// with their project: answered `lost`, as another process's ids are. The latest
    /// ``departedCap`` are kept.
    private var departed: [String: String] = [:]
    private var departedOrder: [String] = []
    static let departedCap = 10_000
    private var reaper: Task<Void, Never>?
    private var closed = false
    private let logger = Logger(label: "corral.sessions")

    init() {
        var bytes = [UInt8](repeating: 0, count: 4)
        for i in bytes.indices { bytes[i] = UInt8.random(in: 0...255) }
        instance = bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// A new session id of this process.
    nonisolated func newID() -> String {
        let random = (0..<12).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
        return "ses_\(instance)_\(random)"
    }

    /// Adds a started session, unless the project is at `limit` live sessions.
    func add(_ session: Session, limit: Int) throws {
        // Again: others may have been added while this one started.
        try checkRoom(project: session.project, limit: limit)
        sessions[session.id] = session
        startReaper()
    }

    /// Checks a new session would fit, before its process is started.
    func checkRoom(project: String, limit: Int) throws {
        guard !closed else { throw SessionError.shuttingDown }
        if limit == 0 {
            throw SessionError.unavailable(
                "the policy of project \(project) allows no sessions (sessions.max_sessions = 0); run commands with POST /v1/projects/\(project)/exec"
            )
        }
        let live = sessions.values.filter { $0.project == project }.count
        guard live < limit else { throw SessionError.tooMany(project: project, limit: limit) }
    }

    /// The session `id` of `project`, if `caller` (nil: an admin) may use it.
    func session(_ project: String, _ id: String, caller: String?) throws -> Session {
        guard let session = sessions[id], session.project == project, caller == nil || caller == session.owner else {
            if id.hasPrefix("ses_"), !id.hasPrefix("ses_\(instance)_") || departed[id] == project {
                throw SessionError.lost(project: project, session: id)
            }
            throw SessionError.notFound(project: project, session: id)
        }
        return session
    }

    func list(_ project: String, caller: String?) -> [Session] {
        sessions.values.filter { $0.project == project && (caller == nil || caller == $0.owner) }
            .sorted { $0.id < $1.id }
    }

    /// Removes a session and ends its process.
    func remove(_ session: Session, reason: String) async {
        sessions[session.id] = nil
        await session.end(reason: reason)
    }

    /// Ends every session of `project` (its eviction, a new upload, its sandbox's end).
    func endAll(project: String, reason: String) async {
        let ending = sessions.values.filter { $0.project == project }
        for session in ending { sessions[session.id] = nil }
        await withTaskGroup(of: Void.self) { group in
            for session in ending { group.addTask { await session.end(reason: reason) } }
        }
    }

    /// Ends every session of `project` because the project left this host (another host
    /// owns it now, or this one takes it back from a newer owner): its ids are reported
    /// lost from now on, never "not found", so a caller knows the state went with the move.
    func depart(project: String) async {
        for id in sessions.values.filter({ $0.project == project }).map(\.id).sorted() {
            departed[id] = project
            departedOrder.append(id)
        }
        if departedOrder.count > Self.departedCap {
            for id in departedOrder.prefix(departedOrder.count - Self.departedCap) { departed[id] = nil }
            departedOrder.removeFirst(departedOrder.count - Self.departedCap)
        }
        await endAll(project: project, reason: "the project moved to another host")
    }

    /// Ends every session and accepts no more.
    func shutdown() async {
        closed = true
        reaper?.cancel()
        let ending = Array(sessions.values)
        sessions = [:]
        await withTaskGroup(of: Void.self) { group in
            for session in ending { group.addTask { await session.end(reason: "the host shut down") } }
        }
    }

    var count: Int { sessions.count }

    private func startReaper() {
        guard reaper == nil else { return }
        reaper = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                await self?.reapIdle()
            }
        }
    }

    private func reapIdle() async {
        let now = ContinuousClock.now
        let idle = sessions.values.filter { $0.isIdle(now: now) }
        for session in idle {
            sessions[session.id] = nil
            logger.info(
                "session ended after its idle timeout",
                metadata: [
                    "project": "\(session.project)", "session": "\(session.id)",
                    "idle_timeout_s": "\(session.idleTimeoutSeconds)",
                ])
            await session.end(reason: "idle for \(session.idleTimeoutSeconds) s, its idle timeout")
        }
    }
}
