import Foundation
import TestSupport
import Testing

@testable import Sandbox

/// A job's whole output in its log: made once the output passes the threshold (an answer
/// holds only a window of it), both streams in one file, never following what a job
/// planted, and never more than a few dozen of them in a workspace.
@Suite struct OutputLogTests {
    func log(_ f: SandboxFixture, _ name: String) throws -> Data {
        try Data(contentsOf: f.workspace.url.appendingPathComponent(".corral/logs/\(name)"))
    }

    @Test func outputPastTheThresholdIsLoggedWholeAndBelowItNoFileIsMade() async throws {
        let f = try await SandboxFixture()
        var job = JobSpec(
            ["/bin/sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done"],
            logPath: ".corral/logs/long.log")
        job.outputCap = 1 << 20
        job.logThreshold = 1000
        let long = try await f.sandbox.exec(job)
        let expected = (0..<2000).map { "line-\($0)\n" }.joined()
        // Nothing was cut from the result (the cap is above the output), yet the log holds it.
        #expect(!long.truncated)
        #expect(long.stdout == expected)
        #expect(long.logPath == "/workspace/.corral/logs/long.log")
        #expect(try log(f, "long.log") == Data(expected.utf8))

        job.argv = ["/bin/sh", "-c", "echo short"]
        job.logPath = ".corral/logs/short.log"
        let short = try await f.sandbox.exec(job)
        #expect(short.logPath == nil)
        #expect(!FileManager.default.fileExists(atPath: f.workspace.path + "/.corral/logs/short.log"))
        await f.destroy()
    }

    /// Each stream once opened the log for itself, truncating it: with both over the cap,
    /// the second overwrote the first's bytes.
    @Test func bothStreamsOverTheCapShareOneLogThatHoldsEveryByte() async throws {
        let f = try await SandboxFixture()
        let job = JobSpec(
            ["/bin/sh", "-c", "head -c 30000 /dev/zero | tr '\\0' o; head -c 20000 /dev/zero | tr '\\0' e >&2"],
            outputCap: 1000, logPath: ".corral/logs/both.log")
        let r = try await f.sandbox.exec(job)
        #expect(r.truncated)
        #expect(r.stdoutOmittedBytes == 29_000)
        #expect(r.stderrOmittedBytes == 19_000)
        #expect(r.omittedBytes == 48_000)
        #expect(r.logPath == "/workspace/.corral/logs/both.log")
        let bytes = try log(f, "both.log")
        #expect(bytes.count == 50_000)
        #expect(bytes.filter { $0 == UInt8(ascii: "o") }.count == 30_000)
        #expect(bytes.filter { $0 == UInt8(ascii: "e") }.count == 20_000)
        await f.destroy()
    }

    /// A workspace keeps the newest 32 logs: a new one removes the oldest, and only regular
    /// `*.log` files; a symlink a job planted there is neither followed nor removed.
    @Test func aNewLogRemovesTheOldestBeyondThirtyTwo() async throws {
        let f = try await SandboxFixture()
        let logs = f.workspace.path + "/.corral/logs"
        try FileManager.default.createDirectory(atPath: logs, withIntermediateDirectories: true)
        let outside = try TemporaryDirectory()
        try "keep\n".write(toFile: outside.path + "/target.log", atomically: false, encoding: .utf8)
        try FileManager.default.createSymbolicLink(
            atPath: logs + "/planted.log", withDestinationPath: outside.path + "/target.log")
        try "notes\n".write(toFile: logs + "/notes.txt", atomically: false, encoding: .utf8)
        let now = Date()
        for n in 0..<40 {
            let path = logs + "/old-\(n).log"
            try "old \(n)\n".write(toFile: path, atomically: false, encoding: .utf8)
            try FileManager.default.setAttributes(
                [.modificationDate: now.addingTimeInterval(Double(n - 100))], ofItemAtPath: path)
        }
        var job = JobSpec(["/bin/sh", "-c", "head -c 3000 /dev/zero"], logPath: ".corral/logs/new.log")
        job.logThreshold = 1000
        #expect(try await f.sandbox.exec(job).logPath == "/workspace/.corral/logs/new.log")
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: logs))
        let kept = Set((9..<40).map { "old-\($0).log" })
        #expect(left == kept.union(["new.log", "planted.log", "notes.txt"]))
        #expect(try String(contentsOfFile: outside.path + "/target.log", encoding: .utf8) == "keep\n")
        outside.remove()
        await f.destroy()
    }

    /// A log that cannot be made (a file planted where its directory belongs) is named
    /// nowhere: a result never points to a file that does not hold the whole output.
    @Test func aLogThatCannotBeMadeIsNamedNowhere() async throws {
        let f = try await SandboxFixture()
        // A file where the logs' directory belongs: the log cannot be made.
        try FileManager.default.createDirectory(
            atPath: f.workspace.path + "/.corral", withIntermediateDirectories: true)
        try "x".write(toFile: f.workspace.path + "/.corral/logs", atomically: false, encoding: .utf8)
        var job = JobSpec(["/bin/sh", "-c", "head -c 3000 /dev/zero | tr '\\0' z"], logPath: ".corral/logs/x.log")
        job.logThreshold = 1000
        let r = try await f.sandbox.exec(job)
        #expect(r.logPath == nil)
        #expect(r.stdout == String(repeating: "z", count: 3000))
        await f.destroy()
    }
}
