import Foundation

/// A Python helper process: a one-shot script (archive builders, reference signers) or a
/// long-running server that prints its port on the first line of stdout.
public final class PythonProcess: @unchecked Sendable {
    private let process: Process
    private let output: Pipe
    /// The first line the script printed (servers print their port there).
    public let firstLine: String

    /// Starts `script` with `arguments` and waits for its first line of output.
    public init(script: String, arguments: [String] = [], environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        self.process = process
        self.output = out
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let text = String(data: line, encoding: .utf8), !text.isEmpty else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw TestSupportError("python helper printed nothing (exit \(process.terminationStatus))")
        }
        firstLine = text.split(separator: "\n").first.map(String.init) ?? ""
    }

    /// Stops the process with SIGKILL (the test runner blocks SIGTERM, see LoopbackHTTPServer).
    public func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }

    /// Runs a script to completion and returns its stdout; throws on a non-zero exit.
    @discardableResult
    public static func run(_ script: String, _ arguments: [String] = [], stdin: Data? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script] + arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(stdin) }
        try input.fileHandleForWriting.close()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errors = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestSupportError("python failed: \(String(decoding: errors, as: UTF8.self))")
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// Whether `import module` works in the test machine's python3.
    public static func hasModule(_ module: String) -> Bool {
        (try? run("import \(module)")) != nil
    }
}
