import ArgumentParser
import Foundation
import Host
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

    @Option(
        help:
            "Rootfs image name (a directory under --rootfs-dir) or an absolute path; default: the policy's, else minimal."
    )
    var rootfs: String?

    @Option(help: "Directory holding built rootfs images.")
    var rootfsDir: String = ProcessInfo.processInfo.environment["CORRAL_ROOTFS_DIR"] ?? "rootfs/out"

    @Option(help: "A policy file (TOML); without one, policies/default.toml when it exists.")
    var policy: String?

    @Option(help: "Wall-clock timeout in seconds (at most the policy's maximum).")
    var timeout: Double?

    @Option(help: "Working directory inside the sandbox.")
    var cwd: String = "/workspace"

    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments, after --.")
    var command: [String]

    func run() async throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        guard !argv.isEmpty else { throw ValidationError("no command given after --") }
        let dir = URL(fileURLWithPath: projectDir).standardizedFileURL.path
        let policyFile =
            policy ?? (FileManager.default.fileExists(atPath: "policies/default.toml") ? "policies/default.toml" : nil)
        let loaded: Policy? = try policyFile.map { path in
            do { return try PolicyLoader.load(file: path) } catch { throw ValidationError("\(error)") }
        }
        let imageName = rootfs ?? loaded?.rootfs ?? "minimal"
        let image =
            imageName.hasPrefix("/")
            ? imageName : URL(fileURLWithPath: rootfsDir).appendingPathComponent(imageName).path
        let id = URL(fileURLWithPath: dir).lastPathComponent.filter { $0.isLetter || $0.isNumber || $0 == "-" }
        var config = SandboxConfiguration(
            projectID: id.isEmpty ? "project" : String(id.prefix(63)), workspace: dir, rootfs: image)
        var job = JobSpec(argv, cwd: cwd, timeout: timeout.map { .milliseconds(Int($0 * 1000)) })
        if let loaded {
            // The policy as a job on the host would get it: limits, identity, capabilities,
            // environment, output cap, seccomp.
            let limits = loaded.limits
            config.tmpBytes = limits.tmpfsBytes
            config.shmBytes = limits.tmpfsBytes
            config.readOnlyBinds = loaded.mounts.map { ($0.source, $0.target) }
            config.limits = CgroupLimits(cpus: limits.cpus, memoryBytes: limits.memoryBytes, pids: limits.pids)
            let maxSeconds = Double(loaded.timeouts.maxSeconds)
            let seconds = min(timeout ?? Double(loaded.timeouts.defaultSeconds), maxSeconds)
            job.timeout = .milliseconds(Int(seconds * 1000))
            job.uid = loaded.user.uid
            job.gid = loaded.user.gid
            job.keepCapabilities = loaded.capabilities.mask
            job.outputCap = Int(min(loaded.output.stdoutBytes, UInt64(Int.max)))
            job.seccomp = try loaded.seccompProgram().instructions
            job.environment = loaded.environment.resolvedDictionary(host: ProcessInfo.processInfo.environment)
        }
        // One job: no spare cgroup leaf to make and remove for a job that never comes.
        config.spareJobLeaves = false
        let sandbox = try await ProjectSandbox.create(config)
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
