import CSQLite

// MARK: - Values and errors

/// One SQLite value, as bound to a parameter or read from a column.
public enum SQLiteValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])

    /// The integer, or nil for any other kind.
    public var integer: Int64? {
        if case .integer(let v) = self { return v }
        return nil
    }
    /// The real, or the integer widened to a real; nil otherwise.
    public var real: Double? {
        switch self {
        case .real(let v): return v
        case .integer(let v): return Double(v)
        default: return nil
        }
    }
    /// The text, or nil for any other kind.
    public var text: String? {
        if case .text(let v) = self { return v }
        return nil
    }
    /// The bytes of a blob, or nil for any other kind.
    public var blob: [UInt8]? {
        if case .blob(let v) = self { return v }
        return nil
    }
}

extension SQLiteValue: ExpressibleByIntegerLiteral, ExpressibleByStringLiteral, ExpressibleByNilLiteral,
    ExpressibleByFloatLiteral
{
    public init(integerLiteral value: Int64) { self = .integer(value) }
    public init(stringLiteral value: String) { self = .text(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(floatLiteral value: Double) { self = .real(value) }

    /// `.text(value)`, or `.null` when `value` is nil.
    public init(_ value: String?) { self = value.map { .text($0) } ?? .null }
    /// `.integer(value)`, or `.null` when `value` is nil.
    public init(_ value: Int64?) { self = value.map { .integer($0) } ?? .null }
    /// `.real(value)`, or `.null` when `value` is nil.
    public init(_ value: Double?) { self = value.map { .real($0) } ?? .null }
}

/// A failed SQLite call: the result code, SQLite's message and the statement it concerned.
public struct SQLiteError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The (extended) SQLite result code, e.g. `SQLITE_CONSTRAINT_PRIMARYKEY`.
    public let code: Int32
    public let message: String
    /// The SQL text, when the failure concerned one statement.
    public let sql: String?

    public var description: String {
        sql.map { "sqlite \(code): \(message) in `\($0)`" } ?? "sqlite \(code): \(message)"
    }

    /// The file is damaged (SQLITE_CORRUPT, SQLITE_NOTADB), as opposed to busy, full or
    /// misused: nothing read from it can be trusted.
    public var isDamage: Bool { code & 0xFF == SQLITE_CORRUPT || code & 0xFF == SQLITE_NOTADB }
}

// MARK: - Database

/// A SQLite connection with prepared statements and transactions.
///
/// Not thread-safe by design: one owner (an actor) serializes every call, which is what
/// SQLite's single-writer model wants anyway. Opened in WAL mode with `synchronous=NORMAL`:
/// a committed transaction survives a process crash; a power loss can drop the last few
/// commits but never corrupts the file.
public final class SQLiteDatabase {
    private let handle: OpaquePointer
    private var cache: [String: SQLiteStatement] = [:]

    /// Opens (creating if needed) the database at `path`; `":memory:"` for a private one.
    ///
    /// A damaged file is refused before anything reads from or writes to it: the open runs
    /// `PRAGMA quick_check` (every page and index, not the rows' meaning), and a damaged
    /// database named `name` fails with an error that says which file, what SQLite found, and
    /// how to recover it (``SQLiteError/isDamage``).
    public convenience init(path: String, name: String? = nil) throws(SQLiteError) {
        do throws(SQLiteError) {
            try self.init(opening: path)
        } catch  where error.isDamage {
            throw SQLiteError(code: error.code, message: Self.damage(path, name ?? "database", error.message), sql: nil)
        }
    }

    private init(opening path: String) throws(SQLiteError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE
        let rc = sqlite3_open_v2(path, &db, flags, nil)
        guard rc == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close_v2(db)
            throw SQLiteError(code: rc, message: message, sql: nil)
        }
        handle = db
        sqlite3_busy_timeout(db, 5_000)
        // Checked before the pragmas: switching a damaged file to WAL would write to it.
        let check = try query("PRAGMA quick_check(8)").compactMap { $0[0].text }
        guard check == ["ok"] else {
            throw SQLiteError(code: SQLITE_CORRUPT, message: check.joined(separator: "; "), sql: nil)
        }
        try execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
    }

    /// What a damaged database is, and the recovery an admin can run: SQLite's own
    /// `.recover` salvages every row it can still read into a new file.
    static func damage(_ path: String, _ name: String, _ found: String) -> String {
        """
        the \(name) \(path) is damaged (\(found)); Corral does not read from a damaged database and changed \
        nothing. Stop every corral using this data directory, then restore the file from a backup, or salvage \
        what SQLite can still read: `sqlite3 \(path) .recover | sqlite3 \(path).recovered`, then move \(path) \
        and its -wal and -shm files aside and \(path).recovered to \(path), and start again
        """
    }

    deinit {
        cache.removeAll()
        sqlite3_close_v2(handle)
    }

    /// Runs one or more statements that take no parameters and return no rows worth reading.
    public func execute(_ sql: String) throws(SQLiteError) {
        var message: UnsafeMutablePointer<CChar>?
        let rc = sqlite3_exec(handle, sql, nil, nil, &message)
        if rc != SQLITE_OK {
            let text = message.map { String(cString: $0) } ?? String(cString: sqlite3_errstr(rc))
            sqlite3_free(message)
            throw SQLiteError(code: rc, message: text, sql: sql)
        }
    }

    /// A prepared statement for `sql`, compiled once per connection and reused.
    public func prepare(_ sql: String) throws(SQLiteError) -> SQLiteStatement {
        if let statement = cache[sql] {
            statement.reset()
            return statement
        }
        var stmt: OpaquePointer?
        let rc = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &stmt, nil)
        guard rc == SQLITE_OK, let stmt else { throw error(rc, sql) }
        let statement = SQLiteStatement(stmt, database: self, sql: sql)
        cache[sql] = statement
        return statement
    }

    /// Runs a statement with `values` bound to its parameters and returns how many rows changed.
    @discardableResult
    public func run(_ sql: String, _ values: SQLiteValue...) throws(SQLiteError) -> Int {
        let statement = try prepare(sql)
        try statement.bind(values)
        while try statement.step() {}
        return Int(sqlite3_changes(handle))
    }

    /// Runs a query with `values` bound and returns every row.
    public func query(_ sql: String, _ values: SQLiteValue...) throws(SQLiteError) -> [SQLiteRow] {
        let statement = try prepare(sql)
        try statement.bind(values)
        var rows: [SQLiteRow] = []
        while try statement.step() { rows.append(statement.row()) }
        return rows
    }

    /// Runs `body` inside `BEGIN IMMEDIATE … COMMIT`; any error rolls everything back.
    ///
    /// IMMEDIATE takes the write lock up front, so two writers fail fast with SQLITE_BUSY
    /// (after the busy timeout) instead of deadlocking on a lock upgrade.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// The rowid of the last successful INSERT on this connection.
    public var lastInsertRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    func error(_ rc: Int32, _ sql: String?) -> SQLiteError {
        SQLiteError(code: rc, message: String(cString: sqlite3_errmsg(handle)), sql: sql)
    }
}

// MARK: - Statements and rows

/// A compiled statement. Bind, then `step()` until it returns false.
public final class SQLiteStatement {
    private let stmt: OpaquePointer
    private unowned let database: SQLiteDatabase
    public let sql: String

    init(_ stmt: OpaquePointer, database: SQLiteDatabase, sql: String) {
        self.stmt = stmt
        self.database = database
        self.sql = sql
    }

    deinit { sqlite3_finalize(stmt) }

    /// Clears earlier bindings and binds `values` to parameters 1…n.
    public func bind(_ values: [SQLiteValue]) throws(SQLiteError) {
        sqlite3_reset(stmt)
        sqlite3_clear_bindings(stmt)
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let rc: Int32
            switch value {
            case .null: rc = sqlite3_bind_null(stmt, index)
            case .integer(let v): rc = sqlite3_bind_int64(stmt, index, v)
            case .real(let v): rc = sqlite3_bind_double(stmt, index, v)
            case .text(let v): rc = cor_sqlite3_bind_text(stmt, index, v, -1)
            case .blob(let v):
                rc = v.withUnsafeBytes {
                    cor_sqlite3_bind_blob(
                        stmt, index, $0.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32($0.count))
                }
            }
            if rc != SQLITE_OK { throw database.error(rc, sql) }
        }
    }

    /// Advances: true when a row is available, false when the statement is done.
    public func step() throws(SQLiteError) -> Bool {
        switch sqlite3_step(stmt) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let rc:
            sqlite3_reset(stmt)
            throw database.error(rc, sql)
        }
    }

    /// Rewinds so the statement can run again with its current bindings.
    public func reset() { sqlite3_reset(stmt) }

    /// The current row's values.
    public func row() -> SQLiteRow {
        let count = sqlite3_column_count(stmt)
        var values: [SQLiteValue] = []
        var names: [String] = []
        values.reserveCapacity(Int(count))
        for i in 0..<count {
            names.append(String(cString: sqlite3_column_name(stmt, i)))
            values.append(column(i))
        }
        return SQLiteRow(names: names, values: values)
    }

    private func column(_ i: Int32) -> SQLiteValue {
        switch sqlite3_column_type(stmt, i) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(stmt, i))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(stmt, i))
        case SQLITE_TEXT: return .text(String(cString: sqlite3_column_text(stmt, i)))
        case SQLITE_BLOB:
            let n = Int(sqlite3_column_bytes(stmt, i))
            guard n > 0, let p = sqlite3_column_blob(stmt, i) else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: p, count: n)))
        default: return .null
        }
    }
}

/// One result row: values by position or by column name.
public struct SQLiteRow: Sendable, Equatable {
    public let names: [String]
    public let values: [SQLiteValue]

    public subscript(_ index: Int) -> SQLiteValue { values[index] }
    /// The value of the column called `name`, or `.null` when there is no such column.
    public subscript(_ name: String) -> SQLiteValue {
        names.firstIndex(of: name).map { values[$0] } ?? .null
    }
}
