import Foundation
import Testing

@testable import Host

/// `corral policy check|show|import-seccomp`: the functions, and the built binary itself.
@Suite struct PolicyToolTests {
    static let root = PolicyLoaderTests.packageRoot
    static let binary = root + "/.build/debug/corral"

    @Test func checkAcceptsTheShippedDefault() throws {
        let report = PolicyTool.check(paths: [Self.root + "/policies/default.toml"])
        #expect(report.exitCode == 0)
        #expect(report.errors == "")
        let policy = try PolicyLoader(directory: Self.root + "/policies").load(named: "default")
        #expect(report.output.contains("# digest \(policy.digest)\n"))
        #expect(report.output.contains("memory = \"1GiB\"\n"))
        #expect(report.output.contains("args = [{ index = 0, op = \"masked_eq\", mask = 0x7e020000, value = 0 }]"))
    }

    @Test func checkFailsOnABadFileAndNamesIt() throws {
        let directory = try PolicyDirectory()
        try directory.write("good", "")
        try directory.write("bad", "[limits]\npids = -1\n")
        let report = PolicyTool.check(paths: [directory.path])
        #expect(report.exitCode == 1)
        #expect(
            report.errors == "\(directory.file("bad")):2: limits.pids: -1 is out of range (hint: use 8...4194304)\n")
        #expect(report.output.contains("# policy \"good\""))
    }

    @Test func showResolvesFromTheDirectory() {
        let report = PolicyTool.show(name: "default", directory: Self.root + "/policies")
        #expect(report.exitCode == 0)
        #expect(report.output.hasPrefix("# policy \"default\" resolved from \(Self.root)/policies/default.toml\n"))
        #expect(PolicyTool.show(name: "../etc/passwd", directory: Self.root + "/policies").exitCode == 1)
    }

    @Test(
        .enabled(if: FileManager.default.isExecutableFile(atPath: binary), "needs `swift build` to have built corral"))
    func theBuiltBinaryChecksTheShippedDefault() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["policy", "check", Self.root + "/policies/default.toml"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(String(decoding: data, as: UTF8.self).hasPrefix("# policy \"default\" resolved from "))
    }

    @Test(
        .enabled(if: FileManager.default.isExecutableFile(atPath: binary), "needs `swift build` to have built corral"))
    func theBuiltBinaryExitsNonZeroOnErrors() throws {
        let directory = try PolicyDirectory()
        try directory.write("bad", "rootfss = \"x\"\n")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["policy", "check", directory.file("bad")]
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = Pipe()
        try process.run()
        let data = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 1)
        #expect(
            String(decoding: data, as: UTF8.self)
                == "\(directory.file("bad")):1: rootfss: unknown key \"rootfss\" at the top level (hint: did you mean \"rootfs\"?)\n"
        )
    }
}
