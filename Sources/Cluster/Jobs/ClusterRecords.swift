import Foundation
import Host
import Sandbox

/// Job records as Redis holds them: one hash per job whose scalar fields (state, host,
/// times) the Lua scripts change, and JSON fields (request, result) only Swift reads.
enum ClusterRecords {
    static func json(_ value: some Encodable) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    static func timestamp(_ date: Date = Date()) -> String { String(date.timeIntervalSince1970) }

    /// The record in a job hash; nil for an empty hash (no such job, or it expired).
    static func record(_ fields: [String: String]) throws -> JobRecord? {
        guard let id = fields["id"], let requestJSON = fields["request"] else { return nil }
        let decoder = JSONDecoder()
        let request = try decoder.decode(JobRequest.self, from: Data(requestJSON.utf8))
        guard let state = fields["state"].flatMap(JobState.init(rawValue:)) else {
            throw ClusterError.protocolViolation("job \(id) has state \(fields["state"] ?? "nil")")
        }
        return JobRecord(
            id: id, request: request, lane: fields["lane"].flatMap(JobLane.init(rawValue:)) ?? .short, state: state,
            createdAt: date(fields["created"]) ?? Date(timeIntervalSince1970: 0), startedAt: date(fields["started"]),
            finishedAt: date(fields["finished"]),
            result: try fields["result"].map { try decoder.decode(JobResult.self, from: Data($0.utf8)) },
            error: fields["error"], errorCode: fields["error_code"])
    }

    private static func date(_ text: String?) -> Date? {
        text.flatMap(Double.init).map(Date.init(timeIntervalSince1970:))
    }

    /// A snapshot from a job hash and its stored output read from `since`.
    static func snapshot(_ record: JobRecord, fields: [String: String], stored: String, storedBytes: Int, since: Int)
        -> JobSnapshot
    {
        let total = fields["outlen"].flatMap(Int.init) ?? 0
        // Bytes past the cap were counted but not kept: say how many of those the caller
        // missed, which come after what the snapshot holds.
        let skipped = max(0, total - max(since, storedBytes))
        return JobSnapshot(
            record: record, queuePosition: nil, output: since < storedBytes ? stored : "", cursor: total,
            skippedBytes: skipped, skippedBytesFollow: true)
    }
}

/// The JobSystem's lane rule, applied by API nodes before a job reaches any worker.
extension JobRequest {
    func lane(shortThresholdSeconds: Double) -> JobLane {
        background || timeoutSeconds > shortThresholdSeconds ? .long : .short
    }
}
