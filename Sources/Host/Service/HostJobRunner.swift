import Foundation
import Sandbox

/// Runs a job the way its project's policy says: in the project's sandbox, with the
/// policy's seccomp program, identity, capabilities, environment and output cap, and with
/// the workspace pinned in the cache while the job runs.
struct HostJobRunner: JobRunner {
    let cache: ProjectCache
    let pool: SandboxPool
    let resolve: @Sendable (String) throws -> ResolvedProject
    let configure: @Sendable (ResolvedProject, Workspace) -> SandboxConfiguration
    /// Runs before each job, once its workspace is there: the host waits for the project's
    /// setup here (``SetupRunner/ensure(_:progress:)``), and a failed setup refuses the job.
    var prepare: (@Sendable (ResolvedProject) async throws -> Void)? = nil

    func start(
        _ request: JobRequest, jobID: String, onOutput: @escaping @Sendable (Sandbox.OutputStream, [UInt8]) -> Void
    ) async throws -> any JobExecution {
        let project = try resolve(request.project)
        let sandbox = try await sandboxAndPin(project)
        do {
            try await prepare?(project)
            let policy = project.policy
            let environment = Self.environment(policy, network: policy.network.mode, requested: request.environment)
            let timeout = min(request.timeoutSeconds, Double(project.maxTimeoutSeconds))
            let shell = request.shell.program(rootfs: sandbox.configuration.rootfs)
            var spec = JobSpec(
                [shell, "-c", request.command], environment: environment, cwd: request.cwd,
                stdin: request.stdin.map { Array($0.utf8) }, timeout: .milliseconds(Int(timeout * 1000)),
                outputCap: Int(min(project.limits.stdoutBytes, UInt64(Int.max))),
                logPath: request.writesLog ? JobLog.path(jobID) : nil, uid: policy.user.uid, gid: policy.user.gid,
                keepCapabilities: policy.capabilities.mask, seccomp: try policy.seccompProgram().instructions,
                onOutput: onOutput)
            // An answer holds the last window of the output; past it, the log has the rest.
            spec.logThreshold = OutputWindow.bytes
            let running = try await sandbox.start(spec)
            return PinnedExecution(inner: running) { [cache] in try? await cache.release(request.project) }
        } catch {
            try? await cache.release(request.project)
            throw error
        }
    }

    /// A job's environment: the policy's, the egress proxy's when the job has network
    /// (`network`: the policy's `[network]` mode, or `[setup.network]`'s for setup; a
    /// policy's own value wins), then the request's.
    static func environment(_ policy: Policy, network: Policy.Network.Mode, requested: [String: String])
        -> [String: String]
    {
        var environment = policy.environment.resolvedDictionary(host: ProcessInfo.processInfo.environment)
        if network != .none {
            environment.merge(EgressProxy.environment) { policySet, _ in policySet }
        }
        environment.merge(requested) { _, requested in requested }
        return environment
    }

    /// Materializes (and pins) the workspace, then finds or builds the sandbox over it.
    func sandboxAndPin(_ project: ResolvedProject) async throws -> ProjectSandbox {
        // A policy edited since registration changes the cap of the next materialization.
        try await cache.setWorkspaceQuota(project.id, bytes: CorralHost.quota(project.limits))
        let workspace = try await cache.acquire(project.id)
        do {
            return try await pool.sandbox(project.id, workspace: workspace, policyDigest: project.policy.digest) {
                configure(project, $0)
            }
        } catch {
            try? await cache.release(project.id)
            throw error
        }
    }
}

extension JobShell {
    /// The program that runs a command in this shell, in the image at `rootfs` (a host
    /// path): bash only where the image has it, else `/bin/sh`, which every image has.
    func program(rootfs: String) -> String {
        guard self == .bash else { return "/bin/sh" }
        return ["/bin/bash", "/usr/bin/bash"].first { Self.isExecutable($0, in: rootfs) } ?? "/bin/sh"
    }

    /// Whether `path` inside the image is an executable file. The image is looked at from
    /// the host, so a symlink is followed only while it stays inside the image (`bin ->
    /// usr/bin`): an absolute one would name the host's file, not the image's.
    static func isExecutable(_ path: String, in rootfs: String) -> Bool {
        guard let root = realpath(rootfs, nil) else { return false }
        defer { free(root) }
        guard let file = realpath(rootfs + path, nil) else { return false }
        defer { free(file) }
        var info = stat()
        return String(cString: file).hasPrefix(String(cString: root) + "/") && stat(file, &info) == 0
            && info.st_mode & S_IFMT == S_IFREG && access(file, X_OK) == 0
    }
}

/// A project with its policy and effective limits looked up.
struct ResolvedProject: Sendable {
    let id: String
    let policy: Policy
    let limits: EffectiveLimits
    /// The longest a job may run: the policy's maximum, or less if the project asked for
    /// less at registration (`limits.timeoutSeconds` is the default a job gets).
    let maxTimeoutSeconds: Int
}

/// A job whose workspace is released (unpinned) once it ends.
struct PinnedExecution: JobExecution {
    let inner: any JobExecution
    let onEnd: @Sendable () async -> Void

    func wait() async -> JobResult {
        let result = await inner.wait()
        await onEnd()
        return result
    }

    func cancel() async -> JobResult {
        await inner.cancel()
    }

    func cancel(signal: JobSignal) async -> JobResult {
        await inner.cancel(signal: signal)
    }
}
