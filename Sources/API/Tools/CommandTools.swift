import Foundation
import Host
import Sandbox

/// `bash`, `job_output`, `job_kill` and `project_info`, over the host's job system.
struct CommandTools {
    let backend: any HostBackend
    let jobs: any JobService
    let commands: Commands
    let limits: APILimits
    let project: String
    let principal: Principal

    func bash(_ args: inout Arguments, progress: ToolProgress?) async throws -> ToolOutcome {
        // Anthropic's bash tool restarts its shell; here every command gets a fresh one, so a
        // restart alone is answered at once, and a restart with a command runs the command.
        let restart = try args.bool("restart") == true
        let given = try args.string("command", aliases: ["cmd"], maxBytes: limits.maxCommandBytes)
        if restart && given == nil {
            try args.finish("bash")
            return ToolOutcome(
                text: "Each command runs in a fresh shell in the project's sandbox; there is no session to restart.",
                structured: ["restarted": true], isError: false)
        }
        guard let command = given else { throw APIError.missingArgument("command") }
        guard !command.allSatisfy(\.isWhitespace) else { throw APIError.invalidArgument("command", "is empty") }
        let timeout = try args.number("timeout", aliases: ["timeout_s"], in: 0.001...604_800)
        let cwd = try CommandBody.cwd(&args)
        let environment = try CommandBody.environment(&args)
        let background = try args.bool("background", aliases: ["run_in_background"]) ?? false
        _ = try args.string("description", maxBytes: 4096)
        try args.finish("bash")
        let request = JobRequest(
            project: project, command: command, shell: .bash, cwd: cwd, environment: environment,
            timeoutSeconds: try await timeoutOrDefault(timeout), background: background, submitter: principal.name,
            submitterCap: principal.jobCap(limits))
        if background {
            let record = try await commands.launch(request, via: "tool:bash")
            return ToolOutcome(
                text:
                    "Started in the background as job \(record.id). Read its output with job_output {\"job_id\": \"\(record.id)\"}; stop it with job_kill.",
                structured: JobView(snapshot: try await jobs.snapshot(record.id, since: 0)).json, isError: false)
        }
        let budget = limits.defaultWaitSeconds
        let snapshot = try await run(request, budget: budget, progress: progress)
        let view = JobView(snapshot: snapshot, waited: budget)
        // A command that never started (a cwd outside the workspace or missing) is an error
        // the model can act on; a non-zero exit is a result.
        let failed = snapshot.record.state == .failedToStart
        return ToolOutcome(
            text: view.text, structured: view.json, isError: failed, errorCode: failed ? "failed_to_start" : nil)
    }

    /// Runs and waits; with a progress sink, wakes on new output to report it.
    private func run(_ request: JobRequest, budget: Double, progress: ToolProgress?) async throws -> JobSnapshot {
        guard let progress else { return try await commands.run(request, budget: .seconds(budget), via: "tool:bash") }
        let record = try await commands.launch(request, via: "tool:bash")
        let deadline = ContinuousClock.now + .seconds(budget)
        let start = ContinuousClock.now
        var cursor = 0
        var tick = 0.0
        while true {
            let remaining = deadline - .now
            let slice = min(remaining, .seconds(2))
            let snapshot = try await jobs.wait(record.id, timeout: slice, since: cursor, untilFinished: false)
            if snapshot.record.state.isFinal || remaining <= .zero { break }
            tick += 1
            let elapsed = (ContinuousClock.now - start).components.seconds
            let tail = String(snapshot.output.suffix(200))
            await progress(tick, "\(snapshot.record.state.rawValue) \(elapsed) s" + (tail.isEmpty ? "" : ": " + tail))
            cursor = snapshot.cursor
        }
        return try await jobs.snapshot(record.id, since: 0)
    }

    func jobOutput(_ args: inout Arguments) async throws -> ToolOutcome {
        let id = try args.requiredString("job_id", aliases: ["id"], maxBytes: 128)
        let wait = try args.number("wait", aliases: ["wait_s"], in: 0...limits.maxWaitSeconds) ?? 30
        let since = try args.int("since", in: JobSnapshot.cursors) ?? 0
        try args.finish("job_output")
        try await checkOwned(id)
        let snapshot = try await jobs.wait(
            id, timeout: .milliseconds(Int(wait * 1000)), since: since, untilFinished: false)
        let view = JobView(snapshot: snapshot)
        return ToolOutcome(text: view.text, structured: view.json, isError: false)
    }

    func jobKill(_ args: inout Arguments) async throws -> ToolOutcome {
        let id = try args.requiredString("job_id", aliases: ["id"], maxBytes: 128)
        let signal = try args.signal()
        try args.finish("job_kill")
        try await checkOwned(id)
        // A job that had already ended (a second job_kill, say) was not stopped by this call:
        // say so, not which signal this call would have sent.
        let before = try await jobs.snapshot(id, since: 0)
        // The signal goes to the whole tree, then KILL after the grace: whichever is asked
        // for, the tree ends up gone, which is what the model wants.
        let snapshot = before.record.state.isFinal ? before : try await jobs.cancel(id, signal: signal)
        var view = JobView(snapshot: snapshot)
        view.waited = nil
        let text =
            !before.record.state.isFinal && snapshot.record.state == .cancelled
            ? Self.stopped(id, signal: signal, view: view)
            : "Job \(id) had already ended (\(snapshot.record.state.rawValue))."
        return ToolOutcome(text: text, structured: view.json, isError: false)
    }

    /// What the model reads after job_kill: how the job was stopped, what it printed (a job
    /// that handles INT may print a summary on its way out) and how it ended.
    static func stopped(_ id: String, signal: JobSignal, view: JobView) -> String {
        let how =
            signal == .kill
            ? "SIGKILL" : "SIG\(signal.rawValue), then SIGKILL for anything left after the grace period"
        let snapshot = view.snapshot
        var text = "Job \(id) was stopped with \(how); it and every process it started are gone."
        if !snapshot.output.isEmpty {
            text +=
                "\nIts output:\n" + (view.outputNote.map { "[\($0)]\n" } ?? "") + snapshot.output
                + (snapshot.output.hasSuffix("\n") ? "" : "\n")
        } else {
            text += "\n"
        }
        if let result = snapshot.record.result {
            text += "[exit code \(result.exitCode)" + (result.signal.map { ", killed by signal \($0)" } ?? "") + "]"
        }
        return text
    }

    func projectInfo(_ args: inout Arguments) async throws -> ToolOutcome {
        try args.finish("project_info")
        let info = try await backend.project(project)
        let active = try await jobs.list(project: project, limit: 200).filter { !$0.state.isFinal }
        var structured = JSON.from(info)
        if case .object(var fields) = structured {
            fields["root"] = "/workspace"
            fields["active_jobs"] = .array(active.map { JobSummary(record: $0).json })
            structured = .object(fields)
        }
        var lines = [
            "project: \(info.id)", "root: /workspace", "state: \(info.state)",
            "dirty: \(info.dirty.map { String($0) } ?? "unknown")", "expires_at: \(Wire.date(info.expiresAt))",
            "running jobs: \(info.runningJobs), queued: \(info.queuedJobs)",
        ]
        lines += active.map { "  \($0.id) [\($0.state.rawValue)] \($0.request.command.prefix(80))" }
        lines.append(info.ports.isEmpty ? "listening ports: none" : "listening ports (reach them through the API):")
        lines += info.ports.map { "  \($0.port) on \($0.addresses.joined(separator: ", ")): \($0.url)" }
        lines.append(
            "limits: "
                + info.limits.wireFields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(
                    separator: ", "))
        return ToolOutcome(text: lines.joined(separator: "\n"), structured: structured, isError: false)
    }

    private func timeoutOrDefault(_ requested: Double?) async throws -> Double {
        if let requested { return requested }
        return try await commands.defaultTimeout(project: project)
    }

    /// A job of another project is "not found", never "forbidden": ids reveal nothing.
    private func checkOwned(_ id: String) async throws {
        guard let snapshot = try? await jobs.snapshot(id, since: Int.max / 2),
            snapshot.record.request.project == project
        else { throw APIError.jobNotFound(id, project: project) }
    }
}
