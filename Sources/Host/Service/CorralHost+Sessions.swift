import Foundation
import Sandbox

extension CorralHost {
    /// The host's sessions as the API runs them.
    public nonisolated var sessionService: any SessionService { HostSessionService(host: self) }

    /// The host pids of a session's process tree (for benchmarks and operators); empty when
    /// the session is unknown or dead.
    public nonisolated func sessionProcesses(_ project: String, _ session: String) async -> [pid_t] {
        (try? await sessions.session(project, session, caller: nil))?.processes ?? []
    }

    /// Starts a session's process in the project's sandbox, under the same policy, cgroup
    /// limits, seccomp program and identity as its jobs, in a cgroup leaf of its own. The
    /// workspace stays pinned while the process lives.
    nonisolated func launchSession(_ project: ResolvedProject, _ request: SessionRequest, events: SessionEvents)
        async throws -> SessionProcess
    {
        let runner = HostJobRunner(
            cache: cache, pool: pool,
            resolve: { [settings, policies] id in
                try Self.resolve(id, settings: settings, policies: policies)
            }
        ) { [configuration] project, workspace in
            Self.sandboxConfiguration(project, workspace: workspace, configuration: configuration)
        }
        let policy = project.policy
        let sandbox = try await runner.sandboxAndPin(project)
        do {
            // A session is a job like any other: it starts once the project's setup has run.
            try await setup.ensure(project.id)
            var environment = HostJobRunner.environment(policy, network: policy.network.mode, requested: [:])
            let argv: [String]
            let interpreter: String
            switch request.kind {
            case .shell:
                // bash where the image has it (inside the image, symlinks included), else sh.
                let shell = JobShell.bash.program(rootfs: configuration.rootfsDirectory + "/" + policy.rootfs)
                interpreter = shell == "/bin/sh" ? "sh" : "bash"
                argv =
                    shell == "/bin/sh"
                    ? [shell, "-c", SessionDrivers.shell, "corral-session"]
                    : [shell, "--noprofile", "--norc", "-c", SessionDrivers.shell, "corral-session"]
            case .python:
                interpreter = "python3"
                // Figures render off-screen; a caller's own MPLBACKEND still wins.
                environment["MPLBACKEND"] = "Agg"
                // The home directory is read-only: matplotlib would warn and rebuild its font
                // cache on every start.
                environment["MPLCONFIGDIR"] = "/tmp/.matplotlib"
                argv = ["python3", "-u", "-c", SessionDrivers.python]
            }
            environment.merge(request.environment) { _, requested in requested }
            var spec = JobSpec(
                argv, environment: environment, cwd: request.cwd, uid: policy.user.uid, gid: policy.user.gid,
                keepCapabilities: policy.capabilities.mask, seccomp: try policy.seccompProgram().instructions,
                onOutput: events.output)
            spec.channel = true
            let job: RunningJob
            do {
                job = try await sandbox.start(spec)
            } catch let error as SandboxError {
                throw Self.sessionStartError(error, kind: request.kind, cwd: request.cwd)
            }
            try job.watchReplies(events.reply)
            return SessionProcess(
                job: job, interpreter: interpreter, sandboxAlive: { sandbox.isAlive },
                release: { [cache] in try? await cache.release(project.id) })
        } catch {
            try? await cache.release(project.id)
            throw error
        }
    }

    /// A failed start in the model's terms: no python in the image, a cwd that is not there
    /// or leads out of /workspace, a process that could not start (the project's memory is
    /// full, an environment too large for execve). The host's own failures stay errors.
    nonisolated static func sessionStartError(_ error: SandboxError, kind: SessionKind, cwd: String) -> any Error {
        switch error {
        case .childFailed(stage: "execve", errno: ENOENT) where kind == .python:
            return SessionError.unavailable(
                "the project's image has no python3 on its PATH; choose a policy whose rootfs has python (the devtools image does), or run a shell session"
            )
        case .childFailed(stage: "chdir", errno: _), .cwdOutsideWorkspace:
            return SessionError.invalid("cwd \(cwd) is not a directory inside /workspace: \(error)")
        case .childFailed, .killedWhileStarting, .memoryFullWhileStarting, .stoppedWhileStarting:
            return SessionError.unavailable("the session's \(kind.rawValue) could not start: \(error)")
        case .sandboxGone, .invalidConfiguration, .system:
            return error
        }
    }
}

/// ``SessionService`` over a ``CorralHost``: the sessions live in its sandboxes.
struct HostSessionService: SessionService {
    let host: CorralHost

    var manager: SessionManager { host.sessions }

    func create(_ project: String, _ request: SessionRequest, caller: String) async throws -> SessionInfo {
        let resolved = try CorralHost.resolve(project, settings: host.settings, policies: host.policies)
        let limits = resolved.policy.sessions
        var request = request
        request.cwd = try Self.absolute(request.cwd)
        let idle = request.idleTimeoutSeconds ?? limits.idleTimeoutSeconds
        guard (1...limits.maxIdleTimeoutSeconds).contains(idle) else {
            throw SessionError.invalid(
                "idle_timeout_s \(idle) is outside 1...\(limits.maxIdleTimeoutSeconds), the range the project's policy allows"
            )
        }
        request.idleTimeoutSeconds = idle
        try await manager.checkRoom(project: project, limit: limits.maxSessions)
        let session = Session(
            id: manager.newID(), project: project, request: request, owner: caller, idleTimeoutSeconds: idle,
            outputCap: Int(min(resolved.limits.stdoutBytes, UInt64(Int.max))), killGrace: .seconds(2)
        ) { [host, request] events in
            // Re-resolved on each start, so a restart runs under the policy as it is now.
            let current = try CorralHost.resolve(project, settings: host.settings, policies: host.policies)
            return try await host.launchSession(current, request, events: events)
        }
        try await session.start()
        do {
            try await manager.add(session, limit: limits.maxSessions)
        } catch {
            await session.end(reason: "refused")
            throw error
        }
        return session.info
    }

    /// A relative cwd is relative to /workspace.
    static func absolute(_ cwd: String) throws -> String {
        guard !cwd.isEmpty, !cwd.utf8.contains(0) else { throw SessionError.invalid("cwd is empty") }
        return cwd.hasPrefix("/") ? cwd : "/workspace/" + cwd
    }

    func list(_ project: String, caller: String?) async throws -> [SessionInfo] {
        _ = try CorralHost.resolve(project, settings: host.settings, policies: host.policies)
        return await manager.list(project, caller: caller).map(\.info)
    }

    func info(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo {
        try await manager.session(project, session, caller: caller).info
    }

    func run(_ project: String, _ session: String, _ request: SessionRunRequest, budget: Duration, caller: String?)
        async throws -> SessionRunView
    {
        let found = try await manager.session(project, session, caller: caller)
        if found.kind == .python && request.stdin != nil {
            throw SessionError.invalid("stdin is for shell sessions; python code reads data from files")
        }
        let resolved = try CorralHost.resolve(project, settings: host.settings, policies: host.policies)
        let timeout = request.timeoutSeconds ?? Double(resolved.limits.timeoutSeconds)
        guard timeout > 0, timeout <= Double(resolved.maxTimeoutSeconds) else {
            throw HostError.policyLimits(
                "timeout \(timeout) s is outside (0, \(resolved.maxTimeoutSeconds)] s, the project's maximum")
        }
        let run = try await found.run(request, timeoutSeconds: timeout)
        return await run.waitFinished(budget: budget)
    }

    func poll(_ project: String, _ session: String, run: String, wait: Duration, since: Int, caller: String?)
        async throws -> SessionRunView
    {
        let found = try await manager.session(project, session, caller: caller)
        guard let run = found.run(run) else { throw SessionError.runNotFound(session: session, run: run) }
        return await run.wait(timeout: wait, since: since)
    }

    func cancel(_ project: String, _ session: String, run: String, signal: JobSignal, caller: String?)
        async throws -> SessionRunView
    {
        let found = try await manager.session(project, session, caller: caller)
        guard let run = found.run(run) else { throw SessionError.runNotFound(session: session, run: run) }
        await found.interrupt(run, as: .cancelled, signal: signal.number)
        return await run.waitFinished(budget: .seconds(10))
    }

    func restart(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo {
        let found = try await manager.session(project, session, caller: caller)
        try await found.restart()
        return found.info
    }

    func delete(_ project: String, _ session: String, caller: String?) async throws {
        let found = try await manager.session(project, session, caller: caller)
        await manager.remove(found, reason: "deleted")
    }
}
