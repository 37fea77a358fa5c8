import Foundation
import Sandbox

/// What runs in a session (docs/SESSIONS.md).
public enum SessionKind: String, Sendable, Codable, CaseIterable {
    /// bash where the project's image has it, else the image's `/bin/sh`.
    case shell
    /// A python3 interpreter whose variables, imports and open files persist.
    case python
}

/// Where a session is in its life.
public enum SessionState: String, Sendable, Codable {
    /// Waiting for a run.
    case idle
    /// Running one.
    case busy
    /// Its process is gone (it exited, was killed, ran out of memory, or the project's
    /// sandbox was stopped); ``SessionService/restart(_:_:caller:)`` starts it again.
    case dead
}

/// A request to start a session: `POST /v1/projects/{id}/sessions`.
public struct SessionRequest: Sendable, Codable, Equatable {
    public var kind: SessionKind
    /// The working directory it starts in; relative to /workspace unless absolute.
    public var cwd: String
    /// Variables on top of the policy's environment.
    public var environment: [String: String]
    /// How long it may sit idle before it ends; nil takes the policy's default. Capped by
    /// the policy's maximum.
    public var idleTimeoutSeconds: Int?

    public init(
        kind: SessionKind, cwd: String = "/workspace", environment: [String: String] = [:],
        idleTimeoutSeconds: Int? = nil
    ) {
        self.kind = kind
        self.cwd = cwd
        self.environment = environment
        self.idleTimeoutSeconds = idleTimeoutSeconds
    }

    enum CodingKeys: String, CodingKey {
        case kind, cwd
        case environment = "env"
        case idleTimeoutSeconds = "idle_timeout_s"
    }
}

/// How a session's process ended, when it did.
public struct SessionEnd: Sendable, Codable, Equatable {
    /// Why, for the model: "the shell exited with code 3", "the kernel's OOM killer...".
    public var reason: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var oomKilled: Bool

    public init(reason: String, exitCode: Int32? = nil, signal: Int32? = nil, oomKilled: Bool = false) {
        self.reason = reason
        self.exitCode = exitCode
        self.signal = signal
        self.oomKilled = oomKilled
    }

    enum CodingKeys: String, CodingKey {
        case reason, signal
        case exitCode = "exit_code"
        case oomKilled = "oom_killed"
    }
}

/// A session as `GET /v1/projects/{id}/sessions/{sid}` shows it.
public struct SessionInfo: Sendable, Codable, Equatable {
    public var sessionID: String
    public var project: String
    public var kind: SessionKind
    public var state: SessionState
    /// The shell's directory after its last command (python: where it started).
    public var cwd: String
    /// The token that created it; only it (or an admin) may use it.
    public var owner: String
    public var startedAt: Date
    public var lastUsedAt: Date
    /// Runs since it (re)started.
    public var commandsRun: Int
    /// Memory charged to its process tree now (its cgroup); nil without cgroups or once dead.
    public var memoryBytes: UInt64?
    public var idleTimeoutSeconds: Int
    /// The run in progress, when busy.
    public var runID: String?
    /// How its process ended, when dead.
    public var ended: SessionEnd?
    /// The interpreter's or shell's name and version (`bash`, `sh`, `python 3.11.2`).
    public var interpreter: String

    public init(
        sessionID: String, project: String, kind: SessionKind, state: SessionState, cwd: String, owner: String,
        startedAt: Date, lastUsedAt: Date, commandsRun: Int, memoryBytes: UInt64?, idleTimeoutSeconds: Int,
        runID: String?, ended: SessionEnd?, interpreter: String
    ) {
        self.sessionID = sessionID
        self.project = project
        self.kind = kind
        self.state = state
        self.cwd = cwd
        self.owner = owner
        self.startedAt = startedAt
        self.lastUsedAt = lastUsedAt
        self.commandsRun = commandsRun
        self.memoryBytes = memoryBytes
        self.idleTimeoutSeconds = idleTimeoutSeconds
        self.runID = runID
        self.ended = ended
        self.interpreter = interpreter
    }

    enum CodingKeys: String, CodingKey {
        case project, kind, state, cwd, owner, ended, interpreter
        case sessionID = "session_id"
        case startedAt = "started_at"
        case lastUsedAt = "last_used_at"
        case commandsRun = "commands_run"
        case memoryBytes = "memory_bytes"
        case idleTimeoutSeconds = "idle_timeout_s"
        case runID = "run_id"
    }
}

/// One input for a session: `POST .../sessions/{sid}/run`.
public struct SessionRunRequest: Sendable, Codable, Equatable {
    /// A shell command line (several lines are fine), or python code.
    public var input: String
    /// Standard input of a shell command; nil gives it /dev/null (so `cat` returns).
    public var stdin: String?
    /// Wall-clock limit; nil takes the project's default job timeout.
    public var timeoutSeconds: Double?

    public init(input: String, stdin: String? = nil, timeoutSeconds: Double? = nil) {
        self.input = input
        self.stdin = stdin
        self.timeoutSeconds = timeoutSeconds
    }

    enum CodingKeys: String, CodingKey {
        case input, stdin
        case timeoutSeconds = "timeout_s"
    }
}

/// Where a run is: running, or how it ended.
public enum SessionRunStatus: String, Sendable, Codable {
    case running, completed
    /// Its timeout passed: the command was interrupted (INT, then KILL) and the session kept.
    case timedOut = "timed_out"
    /// Cancelled by a caller, the same way.
    case cancelled
    /// The session's process died during the run (it exited, was killed or ran out of
    /// memory); ``SessionRunView/session`` says how.
    case sessionLost = "session_lost"

    public var isFinal: Bool { self != .running }
}

/// A python error as a REPL shows it.
public struct PythonError: Sendable, Codable, Equatable {
    public var name: String
    public var value: String
    public var traceback: String

    public init(name: String, value: String, traceback: String) {
        self.name = name
        self.value = value
        self.traceback = traceback
    }
}

/// A value a python run displayed: a figure (`image/png`, base64), a table (`text/html`
/// and `text/plain`), or anything with a `_repr_png_` or `_repr_html_`.
public struct RichOutput: Sendable, Codable, Equatable {
    public var mimeType: String
    /// Text, or base64 for images.
    public var data: String

    public init(mimeType: String, data: String) {
        self.mimeType = mimeType
        self.data = data
    }

    enum CodingKeys: String, CodingKey {
        case data
        case mimeType = "mime_type"
    }
}

/// A run as every session route reports it. Every key is always present (null when it
/// does not apply or is not known yet).
public struct SessionRunView: Sendable, Codable, Equatable {
    public var sessionID: String
    public var runID: String
    public var kind: SessionKind
    public var status: SessionRunStatus
    /// Shell: the command's exit status (130 after a timeout or a cancel: the driver's trap).
    public var exitCode: Int32?
    public var stdout: String?
    public var stderr: String?
    /// stdout and stderr as the host read them, interleaved, from `cursor`'s request on.
    public var output: String
    /// Pass back as `since` to get only what comes after.
    public var cursor: Int
    /// Output before `since` no longer held.
    public var skippedBytes: Int
    /// Shell: its directory after the command.
    public var cwd: String?
    public var durationMs: Int?
    /// Whether the answer leaves out output: `skippedBytes` before ``output``, or bytes of
    /// ``stdout`` and ``stderr``.
    public var truncated: Bool
    /// Bytes of stdout and stderr their fields leave out (together).
    public var omittedBytes: Int
    /// Bytes ``stdout`` and ``stderr`` each leave out: the policy's output cap and the
    /// answer's window (``OutputWindow/bytes``) cut their middle. Nil until the run ends.
    public var stdoutOmittedBytes: Int?
    public var stderrOmittedBytes: Int?
    /// Python: the repr of the last expression, as a REPL prints it; nil when it was not an
    /// expression or was None.
    public var result: String?
    /// Python: the exception the code raised.
    public var error: PythonError?
    /// Python: displayed values, figures first as they were shown.
    public var outputs: [RichOutput]
    /// How the session's process ended, for `session_lost`.
    public var session: SessionEnd?
    /// What the model should know or do next, when the plain result does not say it.
    public var message: String?

    public init(
        sessionID: String, runID: String, kind: SessionKind, status: SessionRunStatus, exitCode: Int32? = nil,
        stdout: String? = nil, stderr: String? = nil, output: String = "", cursor: Int = 0, skippedBytes: Int = 0,
        cwd: String? = nil, durationMs: Int? = nil, truncated: Bool = false, omittedBytes: Int = 0,
        result: String? = nil, error: PythonError? = nil, outputs: [RichOutput] = [], session: SessionEnd? = nil,
        message: String? = nil, stdoutOmittedBytes: Int? = nil, stderrOmittedBytes: Int? = nil
    ) {
        self.stdoutOmittedBytes = stdoutOmittedBytes
        self.stderrOmittedBytes = stderrOmittedBytes
        self.sessionID = sessionID
        self.runID = runID
        self.kind = kind
        self.status = status
        self.exitCode = exitCode
        self.stdout = stdout
        self.stderr = stderr
        self.output = output
        self.cursor = cursor
        self.skippedBytes = skippedBytes
        self.cwd = cwd
        self.durationMs = durationMs
        self.truncated = truncated
        self.omittedBytes = omittedBytes
        self.result = result
        self.error = error
        self.outputs = outputs
        self.session = session
        self.message = message
    }

    enum CodingKeys: String, CodingKey {
        case kind, status, stdout, stderr, output, cursor, cwd, truncated, result, error, outputs, session, message
        case sessionID = "session_id"
        case runID = "run_id"
        case exitCode = "exit_code"
        case skippedBytes = "skipped_bytes"
        case durationMs = "duration_ms"
        case omittedBytes = "omitted_bytes"
        case stdoutOmittedBytes = "stdout_omitted_bytes"
        case stderrOmittedBytes = "stderr_omitted_bytes"
    }

    /// What a model reads first when ``output`` leaves out bytes of what was asked for (the
    /// first part of ``message``); nil when it leaves out nothing.
    public var outputNote: String? {
        guard skippedBytes > 0 else { return nil }
        return OutputWindow.note(
            shown: output.utf8.count, skipped: skippedBytes, total: cursor, follow: false, source: .nowhere)
    }

    /// What ``message`` says when ``stdout`` or ``stderr`` leave out bytes: where to read
    /// them only when ``outputNote`` has not said it. Nil when they leave out nothing.
    public var fieldsNote: String? {
        OutputWindow.fieldsNote(
            stdout: stdoutOmittedBytes ?? 0, stderr: stderrOmittedBytes ?? 0, source: skippedBytes > 0 ? nil : .nowhere)
    }

    /// Every key, nulls included: callers read a fixed shape.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sessionID, forKey: .sessionID)
        try c.encode(runID, forKey: .runID)
        try c.encode(kind, forKey: .kind)
        try c.encode(status, forKey: .status)
        try c.encode(exitCode, forKey: .exitCode)
        try c.encode(stdout, forKey: .stdout)
        try c.encode(stderr, forKey: .stderr)
        try c.encode(output, forKey: .output)
        try c.encode(cursor, forKey: .cursor)
        try c.encode(skippedBytes, forKey: .skippedBytes)
        try c.encode(cwd, forKey: .cwd)
        try c.encode(durationMs, forKey: .durationMs)
        try c.encode(truncated, forKey: .truncated)
        try c.encode(omittedBytes, forKey: .omittedBytes)
        try c.encode(stdoutOmittedBytes, forKey: .stdoutOmittedBytes)
        try c.encode(stderrOmittedBytes, forKey: .stderrOmittedBytes)
        try c.encode(result, forKey: .result)
        try c.encode(error, forKey: .error)
        try c.encode(outputs, forKey: .outputs)
        try c.encode(session, forKey: .session)
        try c.encode(message, forKey: .message)
    }
}

/// Why a session call was refused. Each has the API's status and code.
public enum SessionError: Error, Sendable, Equatable, CustomStringConvertible {
    case notFound(project: String, session: String)
    /// The session lived on a host process that no longer serves the project (a restart,
    /// or a cluster failover): its state is gone and is never silently replaced.
    case lost(project: String, session: String)
    /// It is dead; restart it or delete it.
    case dead(session: String, end: SessionEnd)
    /// A run is in progress; one at a time.
    case busy(session: String, run: String)
    case runNotFound(session: String, run: String)
    /// The project's policy allows no more sessions.
    case tooMany(project: String, limit: Int)
    /// The kind cannot run in this project's image (no python3).
    case unavailable(String)
    case invalid(String)
    /// The host is shutting down.
    case shuttingDown

    /// The HTTP status the API answers.
    public var status: Int {
        switch self {
        case .notFound, .runNotFound: 404
        case .lost: 410
        case .dead, .busy: 409
        case .tooMany: 429
        case .unavailable, .invalid: 422
        case .shuttingDown: 503
        }
    }

    /// The API's error code.
    public var code: String {
        switch self {
        case .notFound: "session_not_found"
        case .lost: "session_lost"
        case .dead: "session_dead"
        case .busy: "session_busy"
        case .runNotFound: "run_not_found"
        case .tooMany: "too_many_sessions"
        case .unavailable: "session_unavailable"
        case .invalid: "invalid_argument"
        case .shuttingDown: "shutting_down"
        }
    }

    public var description: String {
        switch self {
        case .notFound(let project, let session):
            "no session \(session) in project \(project); list them with GET /v1/projects/\(project)/sessions"
        case .lost(let project, let session):
            "session \(session) is lost: the host that kept it no longer serves project \(project) (it restarted, or the project moved to another host), and its state went with it; start a new session with POST /v1/projects/\(project)/sessions"
        case .dead(let session, let end):
            "session \(session) has ended (\(end.reason)); restart it with POST .../sessions/\(session)/restart, or delete it"
        case .busy(let session, let run):
            "session \(session) is still running \(run); wait for it (GET .../sessions/\(session)/runs/\(run)?wait=30), or cancel it (POST .../sessions/\(session)/runs/\(run)/cancel)"
        case .runNotFound(let session, let run): "no run \(run) in session \(session)"
        case .tooMany(let project, let limit):
            "project \(project) already has \(limit) sessions, the most its policy allows; delete one (DELETE /v1/projects/\(project)/sessions/{session_id}) first"
        case .unavailable(let why): why
        case .invalid(let why): why
        case .shuttingDown: "the host is shutting down"
        }
    }
}

/// Sessions as the API sees them, wherever they live: ``CorralHost`` keeps them in its
/// projects' sandboxes; in a cluster an API node forwards each call to the project's owner.
/// `caller` is the token's name: a session belongs to the token that created it, and nil
/// (an admin) may see and use every session.
public protocol SessionService: Sendable {
    func create(_ project: String, _ request: SessionRequest, caller: String) async throws -> SessionInfo
    func list(_ project: String, caller: String?) async throws -> [SessionInfo]
    func info(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo
    /// Starts a run and waits up to `budget`; if the budget runs out first the view says
    /// `running` and the run goes on.
    func run(_ project: String, _ session: String, _ request: SessionRunRequest, budget: Duration, caller: String?)
        async throws -> SessionRunView
    /// Long-poll: answers when the run has output after `since`, ends, or `wait` passes.
    func poll(_ project: String, _ session: String, run: String, wait: Duration, since: Int, caller: String?)
        async throws -> SessionRunView
    /// Interrupts the run (SIGINT to the shell or interpreter, `signal` to what the run
    /// started, KILL after the grace); the session stays. Returns once the run has ended.
    func cancel(_ project: String, _ session: String, run: String, signal: JobSignal, caller: String?)
        async throws -> SessionRunView
    /// Ends the session's process (if alive) and starts a fresh one with the same id.
    func restart(_ project: String, _ session: String, caller: String?) async throws -> SessionInfo
    func delete(_ project: String, _ session: String, caller: String?) async throws
}
