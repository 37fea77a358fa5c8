import Foundation
import Host
import Sandbox

/// A job as every endpoint and tool reports it: `{status, exit_code, signal, oom_killed,
/// duration_ms, cpu_ms, peak_memory_bytes, output, stdout, stderr, truncated,
/// omitted_bytes, stdout_omitted_bytes, stderr_omitted_bytes, log_path, unenforced_limits,
/// leftover_processes, job_id}`, every key always present (null until known, or when nothing
/// applies), plus `cursor`, `skipped_bytes`, `queue_position`, `error`, `error_code` and,
/// when there is something to do or something left out, `message`.
///
/// An answer is bounded: `output` holds at most ``OutputWindow/bytes`` (the job's channel),
/// and so do `stdout` and `stderr` each (their first and last halves), whatever the policy's
/// output cap lets the result keep.
struct JobView {
    let snapshot: JobSnapshot
    /// The wait budget that ran out, for the `running` message.
    var waited: Double?
    /// `stdout` and `stderr` cut to the window, and the bytes each leaves out; nil until
    /// the job has a result.
    let stdout: (text: String, omitted: Int)?
    let stderr: (text: String, omitted: Int)?

    init(snapshot: JobSnapshot, waited: Double? = nil) {
        self.snapshot = snapshot
        self.waited = waited
        let result = snapshot.record.result
        let log = result?.logPath.map(Self.sandboxPath)
        stdout = result.map { OutputWindow.clip($0.stdout, omitted: $0.stdoutOmittedBytes ?? 0, logPath: log) }
        stderr = result.map { OutputWindow.clip($0.stderr, omitted: $0.stderrOmittedBytes ?? 0, logPath: log) }
    }

    var record: JobRecord { snapshot.record }
    var result: JobResult? { snapshot.record.result }

    /// Bytes of stdout and stderr their fields leave out.
    var omitted: Int { (stdout?.omitted ?? 0) + (stderr?.omitted ?? 0) }

    var json: JSON {
        [
            "status": .string(record.state.rawValue),
            "exit_code": .optional(result.map { .int($0.exitCode) }),
            "signal": .optional(result?.signal.map { .int($0) }),
            "oom_killed": .optional(result.map { .bool($0.oomKilled) }),
            "duration_ms": .optional(result.map { .int($0.durationMs) }),
            "cpu_ms": .optional(result.map { .int($0.cpuMs) }),
            "peak_memory_bytes": .optional(result.map { .int($0.peakMemoryBytes) }),
            "output": .string(snapshot.output),
            "stdout": .optional(stdout.map { .string($0.text) }),
            "stderr": .optional(stderr.map { .string($0.text) }),
            "truncated": .bool(snapshot.skippedBytes > 0 || omitted > 0),
            "omitted_bytes": .int(omitted),
            "stdout_omitted_bytes": .optional(stdout.map { .int($0.omitted) }),
            "stderr_omitted_bytes": .optional(stderr.map { .int($0.omitted) }),
            "log_path": .optional(result?.logPath.map { .string(Self.sandboxPath($0)) }),
            "unenforced_limits": .optional(result?.unenforcedLimits.map { .object($0.mapValues { .string($0) }) }),
            "leftover_processes": .optional(result?.leftoverProcesses.map { .int($0) }),
            "job_id": .string(record.id),
            "cursor": .int(snapshot.cursor),
            "skipped_bytes": .int(snapshot.skippedBytes),
            "queue_position": .optional(snapshot.queuePosition.map { .int($0) }),
            "error": .optional(record.error.map { .string($0) }),
            "error_code": .optional(record.errorCode.map { .string($0) }),
            "message": .optional(message.map { .string($0) }),
        ]
    }

    /// What the model should do next, and what the answer leaves out, when the plain
    /// result does not say it.
    var message: String? {
        let notes = [stateMessage, outputNote, fieldsNote, leftoverMessage].compactMap { $0 }
        return notes.isEmpty ? nil : notes.joined(separator: " ")
    }

    /// Where what this answer leaves out can be read: the job's log once it holds the whole
    /// output, the log it is writing while it runs (the output has passed the window then),
    /// or nowhere.
    var source: OutputWindow.Source {
        if let path = result?.logPath { return .log(Self.sandboxPath(path)) }
        if !record.state.isFinal && record.request.writesLog {
            // A cluster's worker names its log after its own id for the job, not this one.
            return .writing(snapshot.skippedBytesFollow ? nil : JobLog.sandboxPath(record.id))
        }
        return .nowhere
    }

    /// Says that `output` leaves out bytes of what the caller asked for, and how to read
    /// them; nil when it leaves out nothing.
    var outputNote: String? {
        guard snapshot.skippedBytes > 0 else { return nil }
        return OutputWindow.note(
            shown: snapshot.output.utf8.count, skipped: snapshot.skippedBytes, total: snapshot.cursor,
            follow: snapshot.skippedBytesFollow, source: source)
    }

    /// Says that `stdout` or `stderr` leave out bytes; where to read them only when
    /// ``outputNote`` has not said it.
    var fieldsNote: String? {
        OutputWindow.fieldsNote(
            stdout: stdout?.omitted ?? 0, stderr: stderr?.omitted ?? 0, source: outputNote == nil ? source : nil)
    }

    var stateMessage: String? {
        let project = record.request.project
        let poll =
            "GET /v1/projects/\(project)/jobs/\(record.id)?wait=30&since=\(snapshot.cursor) (or the job_output tool)"
        switch record.state {
        case .timedOut:
            let seconds = Self.format(record.request.timeoutSeconds)
            return
                "The command did not finish within its timeout of \(seconds) s, so it and every process it started were killed (exit code 124). The output is what it printed before that. If it needs longer, run it again with a larger timeout, or in the background (background: true, or POST /v1/projects/\(project)/jobs) and read its output as it goes."
        case .running, .queued:
            let state = record.state == .queued ? "is still queued" : "is still running"
            let budget = waited.map { " after waiting \(Self.format($0)) s" } ?? ""
            return
                "The command \(state)\(budget); it goes on as job \(record.id). Read new output with \(poll), or cancel it with POST /v1/projects/\(project)/jobs/\(record.id)/cancel (job_kill)."
        case .cancelled:
            return "The job was cancelled; it and every process it started were killed."
        case .interrupted where record.errorCode == JobSystem.sandboxDiedCode:
            return
                "The files it wrote are kept, and the next command starts a fresh sandbox: run it again if it must finish."
        case .completed where result?.oomKilled == true:
            return
                "The command ran out of memory and the kernel killed it. Use less memory (smaller inputs, fewer parallel workers), or ask an admin for a policy with more."
        default:
            return nil
        }
    }

    /// A command that ended with processes still running (`server &`, `nohup … &`): they were
    /// killed with it, and a model that meant to start a server must learn where one belongs.
    var leftoverMessage: String? {
        guard record.state == .completed, let count = result?.leftoverProcesses, count > 0 else { return nil }
        let project = record.request.project
        let left =
            count == 1 ? "1 process the command left running was" : "\(count) processes the command left running were"
        return
            "\(left) stopped with it: when a command's main process exits, everything it started is killed. Start a server or watcher as a background job instead (background: true, or POST /v1/projects/\(project)/jobs) and read its output with job_output; for a shell whose processes last between commands, use a session."
    }

    /// Log paths are relative to the workspace; the model sees the path inside the sandbox.
    static func sandboxPath(_ path: String) -> String {
        path.hasPrefix("/") ? path : "/workspace/" + path
    }

    static func format(_ value: Double) -> String {
        value.rounded() == value ? String(Int(value)) : String(value)
    }

    /// The text a model reads for a job: first, on a line of its own, what the output
    /// leaves out and how to read it; then the output; then one line saying how it ended.
    var text: String {
        var out = outputNote.map { "[\($0)]\n" } ?? ""
        out += snapshot.output
        if !snapshot.output.isEmpty && !out.hasSuffix("\n") { out += "\n" }
        switch record.state {
        case .completed:
            let code = result?.exitCode ?? 0
            var line = "[exit code \(code)"
            if let signal = result?.signal { line += ", killed by signal \(signal)" }
            if let ms = result?.durationMs { line += ", \(ms) ms" }
            out += line + "]"
        case .timedOut: out += "[timed out: exit code 124]"
        case .running, .queued: out += "[\(record.state.rawValue): job \(record.id), cursor \(snapshot.cursor)]"
        default: out += "[\(record.state.rawValue)\(record.error.map { ": " + $0 } ?? "")]"
        }
        let notes = [stateMessage, leftoverMessage].compactMap { $0 }
        if !notes.isEmpty { out += "\n" + notes.joined(separator: " ") }
        return out
    }
}

/// One line of a job list.
struct JobSummary {
    let record: JobRecord

    var json: JSON {
        [
            "job_id": .string(record.id), "status": .string(record.state.rawValue),
            "command": .string(record.request.command), "lane": .string(record.lane.rawValue),
            "submitter": .string(record.request.submitter), "background": .bool(record.request.background),
            "created_at": .string(Wire.date(record.createdAt)),
            "started_at": .optional(record.startedAt.map { .string(Wire.date($0)) }),
            "finished_at": .optional(record.finishedAt.map { .string(Wire.date($0)) }),
            "exit_code": .optional(record.result.map { .int($0.exitCode) }),
        ]
    }
}
