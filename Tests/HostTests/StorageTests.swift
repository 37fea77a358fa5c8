import Foundation
import Host
import TestSupport
import Testing

/// The thin SQLite wrapper the cache index (and later the job journal) is built on.
@Suite struct StorageTests {
    func database() throws -> SQLiteDatabase {
        let db = try SQLiteDatabase(path: ":memory:")
        try db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, data BLOB)")
        return db
    }

    @Test func bindsAndReadsEveryType() throws {
        let db = try database()
        #expect(
            try db.run("INSERT INTO t (name, score, data) VALUES (?, ?, ?)", "ünï'code", 2.5, .blob([0, 1, 255])) == 1)
        #expect(try db.run("INSERT INTO t (name, score, data) VALUES (?, ?, ?)", "b", nil, .blob([])) == 1)
        #expect(db.lastInsertRowID == 2)
        let rows = try db.query("SELECT id, name, score, data FROM t ORDER BY id")
        #expect(rows.count == 2)
        #expect(rows[0]["name"] == .text("ünï'code"))
        #expect(rows[0]["score"] == .real(2.5))
        #expect(rows[0]["data"] == .blob([0, 1, 255]))
        #expect(rows[1]["score"] == .null)
        #expect(rows[1][0] == .integer(2))
        #expect(rows[1]["missing"] == .null)
    }

    @Test func preparedStatementsAreReusedWithFreshBindings() throws {
        let db = try database()
        for i in 0..<100 { try db.run("INSERT INTO t (name) VALUES (?)", .text("n\(i)")) }
        let statement = try db.prepare("SELECT count(*) AS n FROM t WHERE name LIKE ?")
        try statement.bind([.text("n1%")])
        #expect(try statement.step())
        #expect(statement.row()["n"] == .integer(11))
        try statement.bind([.text("n9_")])
        #expect(try statement.step())
        #expect(statement.row()["n"] == .integer(10))
        #expect(try statement.step() == false)
    }

    @Test func failedTransactionRollsEverythingBack() throws {
        let db = try database()
        try db.run("INSERT INTO t (id, name) VALUES (1, 'keep')")
        #expect(throws: SQLiteError.self) {
            try db.transaction {
                try db.run("INSERT INTO t (id, name) VALUES (2, 'gone')")
                try db.run("INSERT INTO t (id, name) VALUES (1, 'duplicate')")
            }
        }
        #expect(try db.query("SELECT id FROM t").map { $0["id"] } == [.integer(1)])
        let n: Int = try db.transaction {
            try db.run("INSERT INTO t (id, name) VALUES (3, 'committed')")
            return 7
        }
        #expect(n == 7)
        #expect(try db.query("SELECT count(*) AS c FROM t")[0]["c"] == .integer(2))
    }

    @Test func errorsNameTheCodeAndStatement() throws {
        let db = try database()
        do {
            try db.run("INSERT INTO t (name) VALUES (NULL)")
            Issue.record("NOT NULL was not enforced")
        } catch {
            #expect(error.code == 1299)  // SQLITE_CONSTRAINT_NOTNULL
            #expect(error.sql == "INSERT INTO t (name) VALUES (NULL)")
            #expect(error.message == "NOT NULL constraint failed: t.name")
        }
    }

    @Test func persistsAcrossConnections() throws {
        let dir = try TemporaryDirectory(prefix: "corral-sqlite")
        let path = dir.path + "/x.sqlite"
        do {
            let db = try SQLiteDatabase(path: path)
            try db.execute("CREATE TABLE kv (k TEXT PRIMARY KEY, v TEXT)")
            try db.run("INSERT INTO kv VALUES ('a', 'b')")
        }
        let again = try SQLiteDatabase(path: path)
        #expect(try again.query("SELECT v FROM kv WHERE k = ?", "a")[0]["v"] == .text("b"))
        #expect(try again.query("PRAGMA journal_mode")[0][0] == .text("wal"))
    }

    /// A damaged index or journal is refused at open, before anything reads from or writes
    /// to it, with the file, what SQLite found and how to recover; the file is left as it was.
    @Test func aDamagedFileIsRefusedWithWhereAndHowToRecoverAndLeftAsItWas() throws {
        let dir = try TemporaryDirectory(prefix: "corral-sqlite")
        let path = dir.path + "/index.sqlite"
        do {
            let db = try SQLiteDatabase(path: path, name: "cache index")
            try db.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT); CREATE INDEX kv_v ON kv(v)")
            for i in 0..<2000 { try db.run("INSERT INTO kv VALUES (?, ?)", .integer(Int64(i)), .text("value \(i)")) }
            try db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        }
        let good = try #require(FileManager.default.contents(atPath: path))
        #expect(good.count > 8 * 4096)
        func refusal() -> SQLiteError? {
            do {
                _ = try SQLiteDatabase(path: path, name: "cache index")
                return nil
            } catch {
                return error
            }
        }
        // Inside the file: pages of the table and its index overwritten.
        var damaged = good
        for offset in stride(from: 3 * 4096, to: 6 * 4096, by: 1) { damaged[offset] ^= 0xA5 }
        try damaged.write(to: URL(fileURLWithPath: path))
        let inside = try #require(refusal())
        #expect(inside.isDamage)
        #expect(inside.message.hasPrefix("the cache index \(path) is damaged ("), "\(inside.message)")
        #expect(
            inside.message.contains(
                "`sqlite3 \(path) .recover | sqlite3 \(path).recovered`, then move \(path) and its -wal and -shm files aside"
            ))
        #expect(FileManager.default.contents(atPath: path) == damaged)
        // Not a database at all.
        let garbage = Data(repeating: 0x42, count: good.count)
        try garbage.write(to: URL(fileURLWithPath: path))
        let header = try #require(refusal())
        #expect(header.isDamage)
        #expect(
            header.message.hasPrefix("the cache index \(path) is damaged (file is not a database)"), "\(header.message)"
        )
        #expect(FileManager.default.contents(atPath: path) == garbage)
        // Put back, it opens with every row.
        try good.write(to: URL(fileURLWithPath: path))
        #expect(try SQLiteDatabase(path: path).query("SELECT count(*) FROM kv")[0][0] == .integer(2000))
    }
}
