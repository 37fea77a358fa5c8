import Foundation
import Host
import Sandbox

/// A job as every endpoint and tool reports it: `{status, exit_code, signal, oom_killed,
/// duration_ms, cpu_ms, peak_memory_bytes, output, stdout, stderr, truncated,
/// omitted_bytes, log_path, unenforced_limits, leftover_processes, job_id}`, every key always
/// present (null until known, or when nothing applies), plus
/// `cursor`, `queue_position`, `error` and, when there is something to do, `message`.
struct JobView {
    let snapshot: JobSnapshot
    /// The wait budget that ran out, for the `running` message.
    var waited: Double?

    var record: JobRecord { snapshot.record }
    var result: JobResult? { snapshot.record.result }

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
            "stdout": .optional(result.map { .string($0.stdout) }),
            "stderr": .optional(result.map { .string($0.stderr) }),
            "truncated": .bool(result?.truncated ?? false),
            "omitted_bytes": .int(result?.omittedBytes ?? 0),
            "log_path": .optional(result?.logPath.map { .string(Self.sandboxPath($0)) }),
            "unenforced_limits": .optional(result?.unenforcedLimits.map { .object($0.mapValues { .string($0) }) }),
            "leftover_processes": .optional(result?.leftoverProcesses.map { .int($0) }),
            "job_id": .string(record.id),
            "cursor": .int(snapshot.cursor),
            "skipped_bytes": .int(snapshot.skippedBytes),
            "queue_position": .optional(snapshot.queuePosition.map { .int($0) }),
            "error": .optional(record.error.map { .string($0) }),
            "message": .optional(message.map { .string($0) }),
        ]
    }

    /// What the model should do next, when the plain result does not say it.
    var message: String? {
        let notes = [stateMessage, leftoverMessage].compactMap { $0 }
        return notes.isEmpty ? nil : notes.joined(separator: " ")
    }

    private var stateMessage: String? {
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
        case .completed where result?.oomKilled == true:
            return
                "The command ran out of memory and the kernel killed it. Use less memory (smaller inputs, fewer parallel workers), or ask an admin for a policy with more."
        case .completed where result?.truncated == true:
            let path = result?.logPath.map(Self.sandboxPath) ?? "the job's log"
            return
                "The output was longer than the cap: \(result?.omittedBytes ?? 0) bytes in the middle were cut. The whole output is in \(path); read it with read_file (offset/limit) or grep it."
        default:
            return nil
        }
    }

    /// A command that ended with processes still running (`server &`, `nohup … &`): they were
    /// killed with it, and a model that meant to start a server must learn where one belongs.
    private var leftoverMessage: String? {
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

    /// The text a model reads for a job: its new output, then one line saying how it ended.
    var text: String {
        var out = snapshot.output
        if !out.isEmpty && !out.hasSuffix("\n") { out += "\n" }
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
        if let message { out += "\n" + message }
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
