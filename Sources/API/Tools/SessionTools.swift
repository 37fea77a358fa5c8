import Foundation
import Host
import Sandbox

/// Which session a caller's `bash` and `python` calls use when they name none: one of each
/// kind per project and caller (an MCP session, or a client's `X-Session-Id`), made on first
/// use and made again if it was lost. An MCP session's end deletes its sessions.
actor DefaultSessions {
    private var ids: [String: String] = [:]

    private static func key(_ project: String, _ caller: String, _ kind: SessionKind) -> String {
        project + "\u{0}" + caller + "\u{0}" + kind.rawValue
    }

    func id(_ project: String, _ caller: String, _ kind: SessionKind) -> String? {
        ids[Self.key(project, caller, kind)]
    }

    func set(_ id: String?, _ project: String, _ caller: String, _ kind: SessionKind) {
        ids[Self.key(project, caller, kind)] = id
    }

    /// Forgets every session of `caller` and returns them (project, id), to be deleted.
    func removeAll(caller: String) -> [(String, String)] {
        var removed: [(String, String)] = []
        for (key, id) in ids {
            let parts = key.split(separator: "\u{0}", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[1] == caller else { continue }
            removed.append((String(parts[0]), id))
            ids[key] = nil
        }
        return removed
    }
}

/// `python`, and `bash` when it runs in a session: over the ``SessionService``.
struct SessionTools {
    let sessions: any SessionService
    let defaults: DefaultSessions
    let limits: APILimits
    let project: String
    let principal: Principal
    /// The caller's session key (``ToolRoutes/caller(_:_:)`` or an MCP session's).
    let caller: String

    /// Whether the call comes from a caller with a session of its own (an MCP session or an
    /// `X-Session-Id`), whose shell then persists between `bash` calls.
    var callerHasSession: Bool { caller != principal.name }

    /// Whose sessions the caller may use: an admin's are all.
    var owner: String? { principal.admin ? nil : principal.name }

    func bash(_ args: inout Arguments, progress: ToolProgress?) async throws -> ToolOutcome {
        let named = try args.string("session_id", maxBytes: 128)
        let restart = try args.bool("restart") == true
        let command = try args.string("command", aliases: ["cmd"], maxBytes: limits.maxCommandBytes)
        let timeout = try args.number("timeout", aliases: ["timeout_s"], in: 0.001...604_800)
        let stdin = try args.string("stdin", maxBytes: limits.maxJSONBytes)
        // In a session these act as if typed first, so they persist like a `cd` or `export`.
        let cwd = try args.string("cwd", maxBytes: 4096)
        let environment = try args.stringMap("env") ?? [:]
        try CommandBody.check(environment: environment)
        _ = try args.bool("background", aliases: ["run_in_background"])
        _ = try args.string("description", maxBytes: 4096)
        try args.finish("bash")
        // Refused before any session is made or restarted for it.
        guard command != nil || restart else { throw APIError.missingArgument("command") }
        if let command, command.allSatisfy(\.isWhitespace) { throw APIError.invalidArgument("command", "is empty") }
        let session = try await session(.shell, named: named, restart: restart)
        guard let command else {
            return Self.restarted("shell", session, "a fresh shell in /workspace")
        }
        var prefix = environment.sorted { $0.key < $1.key }.map { "export \($0.key)=\(Self.quoted($0.value))\n" }
            .joined()
        if let cwd { prefix += "cd -- \(Self.quoted(cwd)) || return 1\n" }
        let view = try await run(
            session, SessionRunRequest(input: prefix + command, stdin: stdin, timeoutSeconds: timeout),
            progress: progress)
        return ToolOutcome(text: Self.shellText(view), structured: JSON.from(view), isError: false)
    }

    func python(_ args: inout Arguments) async throws -> ToolOutcome {
        let named = try args.string("session_id", maxBytes: 128)
        let restart = try args.bool("restart") == true
        let code = try args.string("code", aliases: ["input"], maxBytes: limits.maxCommandBytes)
        let timeout = try args.number("timeout", aliases: ["timeout_s"], in: 0.001...604_800)
        try args.finish("python")
        guard code != nil || restart else { throw APIError.missingArgument("code") }
        let session = try await session(.python, named: named, restart: restart)
        guard let code else {
            return Self.restarted("python", session, "every variable and import is gone")
        }
        let view = try await run(session, SessionRunRequest(input: code, timeoutSeconds: timeout))
        var outcome = ToolOutcome(text: Self.pythonText(view), structured: JSON.from(view), isError: false)
        outcome.images = view.outputs.filter { $0.mimeType.hasPrefix("image/") }.map { ($0.mimeType, $0.data) }
        return outcome
    }

    /// Runs and waits for the end: a tool call answers once, so it waits out the run's own
    /// timeout (its interrupt included) rather than a shorter budget.
    /// With a progress sink, it reports every 2 s what the run printed last.
    private func run(_ session: String, _ request: SessionRunRequest, progress: ToolProgress? = nil) async throws
        -> SessionRunView
    {
        let slice: Duration = progress == nil ? .seconds(30) : .seconds(2)
        var view = try await sessions.run(project, session, request, budget: slice, caller: owner)
        let start = ContinuousClock.now
        var tick = 0.0
        while !view.status.isFinal {
            if let progress {
                tick += 1
                let elapsed = (ContinuousClock.now - start).components.seconds
                let tail = String(view.output.suffix(200))
                await progress(tick, "running \(elapsed) s" + (tail.isEmpty ? "" : ": " + tail))
            }
            view = try await sessions.poll(
                project, session, run: view.runID, wait: slice, since: view.cursor, caller: owner)
        }
        return try await sessions.poll(project, session, run: view.runID, wait: .zero, since: 0, caller: owner)
    }

    /// The session to use: the named one, else the caller's default of that kind (made when
    /// missing, lost or dead); restarted first when asked.
    private func session(_ kind: SessionKind, named: String?, restart: Bool) async throws -> String {
        if let named {
            let info = try await sessions.info(project, named, caller: owner)
            guard info.kind == kind else {
                throw APIError.invalidArgument(
                    "session_id",
                    "names a \(info.kind.rawValue) session; the \(kind == .shell ? "bash" : "python") tool needs a \(kind.rawValue) one"
                )
            }
            if restart || info.state == .dead { _ = try await sessions.restart(project, named, caller: owner) }
            return named
        }
        if let known = await defaults.id(project, caller, kind) {
            do {
                let info = try await sessions.info(project, known, caller: owner)
                if restart || info.state == .dead { _ = try await sessions.restart(project, known, caller: owner) }
                return known
            } catch let error as SessionError where error.code == "session_not_found" || error.code == "session_lost" {
                await defaults.set(nil, project, caller, kind)
            }
        }
        let made = try await sessions.create(project, SessionRequest(kind: kind), caller: principal.name)
        await defaults.set(made.sessionID, project, caller, kind)
        return made.sessionID
    }

    /// The answer to a restart that came without input.
    static func restarted(_ kind: String, _ session: String, _ what: String) -> ToolOutcome {
        ToolOutcome(
            text: "The \(kind) session \(session) was restarted: \(what).",
            structured: ["session_id": .string(session), "restarted": true], isError: false)
    }

    /// A shell word that is exactly `text`.
    static func quoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// The note on what the output leaves out, for the top of a run's text, and the rest
    /// of its message, for the end. The note on `stdout` and `stderr` is left out, as for a
    /// job: the text shows `output`, and the first note says what that lacks.
    static func notes(_ view: SessionRunView) -> (first: String?, rest: String?) {
        guard let message = view.message else { return (nil, nil) }
        // The message is its notes joined by spaces: drop those two whole.
        var rest = " " + message + " "
        let first = view.outputNote.flatMap { message.hasPrefix($0) ? $0 : nil }
        for note in [first, view.fieldsNote].compactMap({ $0 }) {
            if let range = rest.range(of: " " + note + " ") { rest.replaceSubrange(range, with: " ") }
        }
        let kept = rest.dropFirst().dropLast()
        return (first, kept.isEmpty ? nil : String(kept))
    }

    static func shellText(_ view: SessionRunView) -> String {
        let (first, rest) = notes(view)
        var out = first.map { "[\($0)]\n" } ?? ""
        out += view.output
        if !view.output.isEmpty && !out.hasSuffix("\n") { out += "\n" }
        switch view.status {
        case .completed: out += "[exit code \(view.exitCode ?? 0), cwd \(view.cwd ?? "?")]"
        case .sessionLost:
            out +=
                "[exit code \(view.exitCode.map(String.init) ?? "none"), session ended: \(view.session?.reason ?? "its process ended"); the next call starts a fresh shell]"
        default: out += "[\(view.status.rawValue), exit code \(view.exitCode.map(String.init) ?? "none")]"
        }
        if let rest { out += "\n" + rest }
        return out
    }

    static func pythonText(_ view: SessionRunView) -> String {
        let (first, rest) = notes(view)
        var parts = [first.map { "[\($0)]" }].compactMap { $0 }
        if !view.output.isEmpty {
            parts.append(view.output.hasSuffix("\n") ? String(view.output.dropLast()) : view.output)
        }
        for output in view.outputs where output.mimeType == "text/plain" && output.data != view.result {
            parts.append(output.data)
        }
        if let result = view.result { parts.append(result) }
        if let error = view.error { parts.append(error.traceback) }
        let images = view.outputs.filter { $0.mimeType.hasPrefix("image/") }.count
        if images > 0 { parts.append("[\(images) image\(images == 1 ? "" : "s") attached]") }
        if view.status != .completed { parts.append("[\(view.status.rawValue)]") }
        if let rest { parts.append(rest) }
        return parts.isEmpty ? "[no output]" : parts.joined(separator: "\n")
    }
}
