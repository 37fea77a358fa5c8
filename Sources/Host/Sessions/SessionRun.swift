import Foundation
import Sandbox
import Synchronization

/// One run of a session: its output as it arrives, and its result once the driver replied
/// (or the session's process died).
final class SessionRun: Sendable {
    let id: String
    /// The number the driver echoes in its reply.
    let number: Int
    let sessionID: String
    let project: String
    let kind: SessionKind
    let started = ContinuousClock.now
    let timeoutSeconds: Double
    /// stdout and stderr interleaved, with a cursor for long-polls.
    let channel = JobChannel()
    /// The session's processes just before the run started: what an interrupt spares.
    let baseline: Set<pid_t>
    private let state: Mutex<State>

    struct State: ~Copyable {
        var stdout: OutputCapture
        var stderr: OutputCapture
        var status = SessionRunStatus.running
        /// Set by an interrupt: what the run becomes when the driver replies.
        var interruptedAs: SessionRunStatus?
        var exitCode: Int32?
        var cwd: String?
        var result: String?
        var error: PythonError?
        var outputs: [RichOutput] = []
        var session: SessionEnd?
        var note: String?
        var durationMs: Int?
    }

    init(
        number: Int, sessionID: String, project: String, kind: SessionKind, timeoutSeconds: Double, outputCap: Int,
        baseline: Set<pid_t>
    ) {
        self.id = "run-\(number)"
        self.number = number
        self.sessionID = sessionID
        self.project = project
        self.kind = kind
        self.timeoutSeconds = timeoutSeconds
        self.baseline = baseline
        state = Mutex(State(stdout: OutputCapture(cap: outputCap), stderr: OutputCapture(cap: outputCap)))
    }

    var isFinished: Bool { state.withLock { $0.status.isFinal } }

    /// A chunk of the session's output while this run is current (event loop thread).
    func append(_ stream: Sandbox.OutputStream, _ bytes: [UInt8]) {
        state.withLock { state in
            if stream == .stdout { state.stdout.append(bytes) } else { state.stderr.append(bytes) }
        }
        channel.append(bytes)
    }

    /// Marks the run as interrupted for `reason`; false when it had already ended or was
    /// already being interrupted.
    func markInterrupted(_ reason: SessionRunStatus) -> Bool {
        state.withLock { state in
            guard !state.status.isFinal, state.interruptedAs == nil else { return false }
            state.interruptedAs = reason
            return true
        }
    }

    /// The shell driver's reply.
    func finish(status: Int32, cwd: String) {
        end { state in
            state.exitCode = status
            state.cwd = cwd
        }
    }

    /// The python driver's reply.
    func finish(python reply: [String: JSONValue]) {
        end { state in
            if case .string(let result)? = reply["result"] { state.result = result }
            if case .object(let error)? = reply["error"] {
                state.error = PythonError(
                    name: error["name"]?.asString ?? "Error", value: error["value"]?.asString ?? "",
                    traceback: error["traceback"]?.asString ?? "")
            }
            if case .array(let outputs)? = reply["outputs"] {
                state.outputs = outputs.compactMap { output in
                    guard case .object(let fields) = output, let mime = fields["mime_type"]?.asString,
                        let data = fields["data"]?.asString
                    else { return nil }
                    return RichOutput(mimeType: mime, data: data)
                }
            }
        }
    }

    /// The session's process died before the driver replied.
    func lose(_ end: SessionEnd) {
        self.end { state in
            state.status = .sessionLost
            state.session = end
            // A shell that ran `exit 3` ended the command with 3, as a terminal would show.
            state.exitCode = end.exitCode
        }
    }

    /// Adds a note for the model to the result.
    func note(_ text: String) { state.withLock { $0.note = text } }

    private func end(_ fill: (inout State) -> Void) {
        let done = state.withLock { state -> Bool in
            guard !state.status.isFinal else { return false }
            fill(&state)
            if state.status != .sessionLost { state.status = state.interruptedAs ?? .completed }
            state.durationMs = Int((ContinuousClock.now - started) / .milliseconds(1))
            return true
        }
        if done { channel.touch(closing: true) }
    }

    /// The run as the API shows it, with interleaved output from `since`.
    func view(since: Int) -> SessionRunView {
        let (text, cursor, skipped) = channel.read(since: since)
        return state.withLock { state in
            // Each stream cut to the answer's window: a session keeps no log, so what falls
            // out is said, with how to keep a long output whole.
            let final = state.status.isFinal
            let stdout =
                final
                ? OutputWindow.clip(state.stdout.text(logPath: nil), omitted: state.stdout.omitted, logPath: nil) : nil
            let stderr =
                final
                ? OutputWindow.clip(state.stderr.text(logPath: nil), omitted: state.stderr.omitted, logPath: nil) : nil
            let omitted = (stdout?.omitted ?? 0) + (stderr?.omitted ?? 0)
            var view = SessionRunView(
                sessionID: sessionID, runID: id, kind: kind, status: state.status, exitCode: state.exitCode,
                stdout: stdout?.text, stderr: stderr?.text, output: text, cursor: cursor,
                skippedBytes: skipped, cwd: state.cwd, durationMs: state.durationMs,
                truncated: skipped > 0 || omitted > 0, omittedBytes: omitted, result: state.result,
                error: state.error, outputs: state.outputs, session: state.session,
                stdoutOmittedBytes: stdout?.omitted, stderrOmittedBytes: stderr?.omitted)
            let parts =
                [view.outputNote].compactMap { $0 } + messages(state) + [view.fieldsNote, state.note].compactMap { $0 }
            view.message = parts.isEmpty ? nil : parts.joined(separator: " ")
            return view
        }
    }

    /// What to do next, by how the run stands.
    private func messages(_ state: borrowing State) -> [String] {
        let base = "/v1/projects/\(project)/sessions/\(sessionID)/runs/\(id)"
        var parts: [String] = []
        switch state.status {
        case .running:
            parts.append(
                "The run is still going on as \(id) in session \(sessionID). Read new output with GET \(base)?wait=30&since={cursor}, or interrupt it with POST \(base)/cancel."
            )
        case .timedOut:
            parts.append(
                "The run did not finish within its timeout of \(Self.format(timeoutSeconds)) s, so what it started was interrupted (SIGINT, then SIGKILL); the session is kept with its state. Run it again with a larger timeout_s, or start long work in the background (`cmd > log 2>&1 &`) and read its log."
            )
        case .cancelled:
            parts.append("The run was cancelled: what it started was interrupted; the session is kept with its state.")
        case .sessionLost:
            let how = state.session?.reason ?? "its process ended"
            parts.append(
                "The session ended during the run (\(how)); its state is gone. Restart it with POST /v1/projects/\(project)/sessions/\(sessionID)/restart."
            )
        case .completed:
            break
        }
        return parts
    }

    static func format(_ value: Double) -> String {
        value.rounded() == value ? String(Int(value)) : String(value)
    }

    /// Long-poll: returns when there is output after `since`, the run ends, or `timeout`
    /// passes.
    func wait(timeout: Duration, since: Int) async -> SessionRunView {
        let deadline = ContinuousClock.now + timeout
        while true {
            let version = channel.version
            let view = view(since: since)
            let remaining = deadline - .now
            if view.status.isFinal || !view.output.isEmpty || remaining <= .zero { return view }
            await channel.wait(after: version, timeout: remaining)
        }
    }

    /// Waits until the run ends or `budget` passes; the view has all the output held.
    func waitFinished(budget: Duration) async -> SessionRunView {
        await channel.waitClosed(timeout: budget)
        return view(since: 0)
    }
}

extension JSONValue {
    /// The string a `.string` holds; nil for any other value.
    var asString: String? {
        if case .string(let value) = self { return value }
        return nil
    }
}
