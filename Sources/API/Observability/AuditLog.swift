import Foundation
import Glibc
import Host
import Synchronization

/// `<data>/audit.log`: one JSON object per line for every command the host runs (who,
/// project, command, and how it ended) and every policy reload. Opened `O_APPEND`, so
/// lines are never overwritten, and written a whole line per `write(2)`.
public final class AuditLog: Sendable {
    private let fd: Int32
    private let lock = Mutex(())
    public let path: String

    /// Opens (creating, never following a symlink) the log for appending.
    public init(path: String) throws {
        self.path = path
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw ConfigurationError("cannot open audit log \(path): errno \(errno)") }
    }

    deinit { close(fd) }

    func append(_ event: String, _ fields: [String: JSON]) {
        var line = fields
        line["ts"] = .string(LineLogHandler.timestamp())
        line["event"] = .string(event)
        let bytes = line.isEmpty ? [] : JSON.object(line).serialized() + [0x0A]
        lock.withLock { _ in
            _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        }
    }

    /// A command was accepted as a job.
    func submitted(_ record: JobRecord, via: String) {
        append(
            "command",
            [
                "who": .string(record.request.submitter), "project": .string(record.request.project),
                "command": .string(record.request.command), "shell": .string(record.request.shell.rawValue),
                "cwd": .string(record.request.cwd),
                "job_id": .string(record.id), "via": .string(via), "background": .bool(record.request.background),
            ])
    }

    /// A command was refused before it became a job.
    func refused(_ request: JobRequest, via: String, error: APIError) {
        append(
            "command_refused",
            [
                "who": .string(request.submitter), "project": .string(request.project),
                "command": .string(request.command), "via": .string(via), "status": .int(error.status.code),
                "code": .string(error.code),
            ])
    }

    /// A job reached its final state.
    func finished(_ record: JobRecord) {
        append(
            "result",
            [
                "who": .string(record.request.submitter), "project": .string(record.request.project),
                "command": .string(record.request.command), "job_id": .string(record.id),
                "status": .string(record.state.rawValue),
                "exit_code": .optional(record.result.map { .int($0.exitCode) }),
                "oom_killed": .optional(record.result.map { .bool($0.oomKilled) }),
                "duration_ms": .optional(record.result.map { .int($0.durationMs) }),
                "error": .optional(record.error.map { .string($0) }),
            ])
    }

    /// A connection through the egress proxy, allowed (when it ended) or refused.
    func egress(_ event: EgressEvent) {
        append(
            "egress",
            [
                "project": .string(event.project), "host": .string(event.host), "port": .int(event.port),
                "address": .optional(event.address.map { .string($0) }), "kind": .string(event.kind),
                "decision": .string(event.decision.rawValue), "rule": .optional(event.rule.map { .string($0) }),
                "bytes_out": .int(Int(clamping: event.bytesOut)), "bytes_in": .int(Int(clamping: event.bytesIn)),
                "duration_ms": .int(event.durationMs),
            ])
    }

    func policyReload(generation: Int, digests: [String: String], errors: [String]) {
        append(
            "policy_reload",
            [
                "generation": .int(generation), "policies": .object(digests.mapValues { .string($0) }),
                "errors": .array(errors.map { .string($0) }),
            ])
    }
}
