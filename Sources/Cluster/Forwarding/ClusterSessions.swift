import Foundation
import Host
import Sandbox

/// The sessions of a cluster's API node: a session lives on its project's owner, so each
/// call goes to the owner's own session routes, with the worker token and, in
/// `X-Corral-Session-Caller`, whose sessions the call may touch (`*` for an admin).
///
/// Only a create leases a project nobody owns. Nobody owning it means no host holds a
/// session of it: a list is empty, and a call naming a session is answered as the owner
/// that gave the project up would have (`session_lost` for a session id, since its process
/// is gone with its state). After a failover the new owner answers the same for the old
/// owner's ids, which name another host process. A session is never silently replaced.
public struct ClusterSessions: SessionService {
    let backend: ClusterBackend

    public init(backend: ClusterBackend) { self.backend = backend }

    /// Names, on a forwarded call, the agent whose sessions it is for, or `*` for an admin;
    /// a worker believes it only from the worker token.
    public static let callerHeader = "X-Corral-Session-Caller"

    /// How much longer than its wait a forwarded call may take: the owner adopting the
    /// project, starting the run, encoding the answer.
    static let margin: Duration = .seconds(60)

    public func create(_ project: String, _ request: SessionRequest, caller: String) async throws -> SessionInfo {
        try await backend.requireRegistered(project)
        let response = try await backend.forward(
            project, "POST", Self.path(project), headers: Self.headers(caller) + [("Content-Type", "application/json")],
            body: try Wire.encode(request))
        return try Wire.decode(SessionInfo.self, from: response.body)
    }

    public func list(_ project: String, caller: String?) async throws -> [SessionInfo] {
        try await backend.requireRegistered(project)
        guard let owner = try await backend.currentOwner(of: project) else { return [] }
        let response = try await backend.send(to: owner, "GET", Self.path(project), headers: Self.headers(caller))
        return try Wire.decode(SessionList.self, from: response.body).sessions
    }

    public func info(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo {
        let response = try await send(project, session, "GET", "", caller: caller)
        return try Wire.decode(SessionInfo.self, from: response.body)
    }

    public func run(
        _ project: String, _ session: String, _ request: SessionRunRequest, budget: Duration, caller: String?
    ) async throws -> SessionRunView {
        let body = ForwardedRun(request: request, waitSeconds: budget.timeInterval)
        let response = try await send(
            project, session, "POST", "/run", caller: caller, body: try Wire.encode(body), timeout: budget + Self.margin
        )
        return try Wire.decode(SessionRunView.self, from: response.body)
    }

    public func poll(_ project: String, _ session: String, run: String, wait: Duration, since: Int, caller: String?)
        async throws -> SessionRunView
    {
        let response = try await send(
            project, session, "GET", "/runs/\(Forwarding.escape(run))", caller: caller,
            query: [("wait", String(wait.timeInterval)), ("since", String(since))], timeout: wait + Self.margin)
        return try Wire.decode(SessionRunView.self, from: response.body)
    }

    public func cancel(_ project: String, _ session: String, run: String, signal: JobSignal, caller: String?)
        async throws -> SessionRunView
    {
        let response = try await send(
            project, session, "POST", "/runs/\(Forwarding.escape(run))/cancel", caller: caller,
            body: try Wire.encode(["signal": signal.rawValue]))
        return try Wire.decode(SessionRunView.self, from: response.body)
    }

    public func restart(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo {
        let response = try await send(project, session, "POST", "/restart", caller: caller, body: Array("{}".utf8))
        return try Wire.decode(SessionInfo.self, from: response.body)
    }

    public func delete(_ project: String, _ session: String, caller: String?) async throws {
        _ = try await send(project, session, "DELETE", "", caller: caller)
    }

    // MARK: - Forwarding

    /// A call about one session, to the project's owner; never leases the project.
    private func send(
        _ project: String, _ session: String, _ method: String, _ tail: String, caller: String?,
        query: [(String, String)] = [], body: [UInt8]? = nil, timeout: Duration? = nil
    ) async throws -> WorkerResponse {
        try await backend.requireRegistered(project)
        guard let owner = try await backend.currentOwner(of: project) else {
            // The host that kept the session gave the project up (it stopped, or died and
            // its lease lapsed), and its sessions went with it.
            throw session.hasPrefix("ses_")
                ? SessionError.lost(project: project, session: session)
                : SessionError.notFound(project: project, session: session)
        }
        var headers = Self.headers(caller)
        if body != nil { headers.append(("Content-Type", "application/json")) }
        return try await backend.send(
            to: owner, method, Self.path(project) + "/" + Forwarding.escape(session) + tail, query: query,
            headers: headers, body: body, timeout: timeout)
    }

    static func path(_ project: String) -> String { "/v1/projects/\(project)/sessions" }

    /// Whose sessions: the name percent-encoded (a token's name may hold any character, and
    /// a token named `*` is not an admin), or `*`.
    static func headers(_ caller: String?) -> [(String, String)] {
        [(callerHeader, caller.map(Forwarding.escape) ?? "*")]
    }
}

/// `GET …/sessions` as the owner answers it.
private struct SessionList: Decodable {
    var sessions: [SessionInfo]
}

/// A run as the owner's route takes it: the request and how long to wait for it.
private struct ForwardedRun: Encodable {
    var request: SessionRunRequest
    var waitSeconds: Double

    enum CodingKeys: String, CodingKey {
        case waitSeconds = "wait_s"
    }

    func encode(to encoder: any Encoder) throws {
        try request.encode(to: encoder)
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(waitSeconds, forKey: .waitSeconds)
    }
}
