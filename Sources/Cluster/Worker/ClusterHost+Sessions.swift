import Foundation
import Host
import Sandbox

extension ClusterHost {
    /// The host's sessions, each call adopting its project first: a create registers a
    /// project registered elsewhere, and any call after another host owned the project
    /// drops the stale copy, whose sessions are then reported lost.
    public nonisolated var sessionService: any SessionService {
        AdoptingSessions(sessions: host.sessionService) { project in try await self.adopt(project) }
    }
}

/// A ``SessionService`` that brings each call's project in line with the cluster first.
struct AdoptingSessions: SessionService {
    let sessions: any SessionService
    let adopt: @Sendable (String) async throws -> Void

    func create(_ project: String, _ request: SessionRequest, caller: String) async throws -> SessionInfo {
        try await adopt(project)
        return try await sessions.create(project, request, caller: caller)
    }

    func list(_ project: String, caller: String?) async throws -> [SessionInfo] {
        try await adopt(project)
        return try await sessions.list(project, caller: caller)
    }

    func info(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo {
        try await adopt(project)
        return try await sessions.info(project, session, caller: caller)
    }

    func run(_ project: String, _ session: String, _ request: SessionRunRequest, budget: Duration, caller: String?)
        async throws -> SessionRunView
    {
        try await adopt(project)
        return try await sessions.run(project, session, request, budget: budget, caller: caller)
    }

    func poll(_ project: String, _ session: String, run: String, wait: Duration, since: Int, caller: String?)
        async throws -> SessionRunView
    {
        try await adopt(project)
        return try await sessions.poll(project, session, run: run, wait: wait, since: since, caller: caller)
    }

    func cancel(_ project: String, _ session: String, run: String, signal: JobSignal, caller: String?)
        async throws -> SessionRunView
    {
        try await adopt(project)
        return try await sessions.cancel(project, session, run: run, signal: signal, caller: caller)
    }

    func restart(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo {
        try await adopt(project)
        return try await sessions.restart(project, session, caller: caller)
    }

    func delete(_ project: String, _ session: String, caller: String?) async throws {
        try await adopt(project)
        try await sessions.delete(project, session, caller: caller)
    }
}
