import Foundation
import TestSupport
import Testing

/// `corral exec`, the admin's one-shot sandbox, through the built binary.
@Suite struct CorralExecCLITests {
    static var binary: String {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("corral").path
    }

    static var rootfsDir: String { TestPaths.rootfsDirectory }

    /// Runs `corral exec` and decodes its JSON; the process itself must exit 0.
    func exec(_ dir: String, _ extra: [String], _ script: String) throws -> [String: Any] {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments =
            ["exec", "--project-dir", dir, "--rootfs-dir", Self.rootfsDir] + extra + ["--", "/bin/sh", "-c", script]
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func printsTheResultAndExitsZeroWhateverTheJobsExitCode() throws {
        let dir = try TemporaryDirectory()
        try "hi\n".write(toFile: dir.path + "/f", atomically: false, encoding: .utf8)
        let r = try exec(dir.path, ["--rootfs", "minimal"], "cat f; exit 9")
        #expect(r["exit_code"] as? Int == 9)
        #expect(r["stdout"] as? String == "hi\n")
        #expect(r["status"] as? String == "completed")
    }

    @Test func aPolicyFileDrivesTheSeccompFilter() throws {
        let dir = try TemporaryDirectory()
        let strict = dir.path + "/strict.toml"
        let open = dir.path + "/open.toml"
        try "rootfs = \"minimal\"\n".write(toFile: strict, atomically: false, encoding: .utf8)
        try "rootfs = \"minimal\"\n[seccomp]\nallow = [\"unshare\"]\n".write(
            toFile: open, atomically: false, encoding: .utf8)
        let denied = try exec(dir.path, ["--policy", strict], "unshare -U true 2>/dev/null; echo rc=$?")
        #expect(denied["stdout"] as? String == "rc=1\n")
        let allowed = try exec(dir.path, ["--policy", open], "unshare -U true; echo rc=$?")
        #expect(allowed["stdout"] as? String == "rc=0\n")
    }
}
