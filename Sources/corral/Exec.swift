import ArgumentParser
import Foundation
import Sandbox

/// `corral exec`: create a sandbox for a directory, run one command in it, print the
/// result as JSON, destroy the sandbox. For admins and tests.
struct Exec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one command in a fresh sandbox for a project directory and print the result as JSON.",
        discussion: "Exits 0 whenever the command ran; its own exit code is in the JSON."
    )

    @Option(help: "The project directory, mounted read-write at /workspace.")
    var projectDir: String

    @Option(help: "Rootfs image name (a directory under --rootfs-dir) or an absolute path.")
    var rootfs: String = "minimal"

    @Option(help: "Directory holding built rootfs images.")
    var rootfsDir: String = ProcessInfo.processInfo.environment["CORRAL_ROOTFS_DIR"] ?? "rootfs/out"

    @Option(help: "Wall-clock timeout in seconds.")
    var timeout: Double?

    @Option(help: "Working directory inside the sandbox.")
    var cwd: String = "/workspace"

    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, after --.")
    var command: [String]

    func run() async throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        guard !argv.isEmpty else { throw ValidationError("no command given after --") }
        let dir = URL(fileURLWithPath: projectDir).standardizedFileURL.path
        let image = rootfs.hasPrefix("/") ? rootfs : URL(fileURLWithPath: rootfsDir).appendingPathComponent(rootfs).path
        let id = URL(fileURLWithPath: dir).lastPathComponent.filter { $0.isLetter || $0.isNumber || $0 == "-" }
        let sandbox = try await ProjectSandbox.create(
            SandboxConfiguration(
                projectID: id.isEmpty ? "project" : String(id.prefix(63)), workspace: dir, rootfs: image)
        )
        let job = JobSpec(argv, cwd: cwd, timeout: timeout.map { .milliseconds(Int($0 * 1000)) })
        let outcome: Result<JobResult, any Error>
        do {
            outcome = .success(try await sandbox.exec(job))
        } catch {
            outcome = .failure(error)
        }
        await sandbox.destroy()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        print(String(decoding: try encoder.encode(try outcome.get()), as: UTF8.self))
    }
}
