import Foundation

/// Job records on disk (SQLite), so an async job survives a restart as a record: finished,
/// or marked interrupted. Never used to re-run a command.
final class JobJournal {
    private let db: SQLiteDatabase
    private let encoder = JSONEncoder()
    private let decoder = JSONDecoder()

    init(path: String) throws {
        db = try SQLiteDatabase(path: path, name: "job journal")
        try db.execute(
            """
            CREATE TABLE IF NOT EXISTS jobs (
                id TEXT PRIMARY KEY, project TEXT NOT NULL, submitter TEXT NOT NULL, idem_key TEXT,
                state TEXT NOT NULL, record TEXT NOT NULL, created REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS jobs_project ON jobs(project, created);
            CREATE UNIQUE INDEX IF NOT EXISTS jobs_idem ON jobs(submitter, idem_key) WHERE idem_key IS NOT NULL;
            """)
    }

    /// Marks every job left queued or running by a previous run as interrupted and returns
    /// how many there were.
    func recover(now: Date) throws -> Int {
        var count = 0
        for row in try db.query("SELECT record FROM jobs WHERE state IN ('queued', 'running')") {
            guard var record = decode(row[0].text) else { continue }
            record.error = "the host stopped while this job was \(record.state.rawValue); it was not re-run"
            record.state = .interrupted
            record.finishedAt = now
            try save(record)
            count += 1
        }
        return count
    }

    func save(_ record: JobRecord) throws {
        let json = String(decoding: try encoder.encode(record), as: UTF8.self)
        _ = try db.run(
            """
            INSERT INTO jobs (id, project, submitter, idem_key, state, record, created) VALUES (?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET state = excluded.state, record = excluded.record
            """,
            .text(record.id), .text(record.request.project), .text(record.request.submitter),
            SQLiteValue(record.request.idempotencyKey), .text(record.state.rawValue), .text(json),
            .real(record.createdAt.timeIntervalSince1970))
    }

    func load(_ id: String) throws -> JobRecord? {
        try db.query("SELECT record FROM jobs WHERE id = ?", .text(id)).first.flatMap { decode($0[0].text) }
    }

    func find(submitter: String, project: String, idempotencyKey: String) throws -> JobRecord? {
        try db.query(
            "SELECT record FROM jobs WHERE submitter = ? AND project = ? AND idem_key = ?", .text(submitter),
            .text(project), .text(idempotencyKey)
        ).first.flatMap { decode($0[0].text) }
    }

    func recent(project: String, limit: Int) throws -> [JobRecord] {
        try db.query(
            "SELECT record FROM jobs WHERE project = ? ORDER BY created DESC LIMIT ?", .text(project),
            .integer(Int64(limit))
        ).compactMap { decode($0[0].text) }
    }

    private func decode(_ text: String?) -> JobRecord? {
        text.flatMap { try? decoder.decode(JobRecord.self, from: Data($0.utf8)) }
    }
}
