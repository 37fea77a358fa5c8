import Foundation
import Logging
import Sandbox

/// The running sandboxes, one per project, created on first use (single flight) and
/// replaced when their init died or their workspace was materialized anew.
actor SandboxPool {
    struct Live {
        let sandbox: ProjectSandbox
        /// The materialization the sandbox mounts: a new one needs a new sandbox.
        let workspace: Workspace
        let policyDigest: String
        /// The egress proxy's listener inside it, if the host runs one.
        let egress: EgressEndpoint?

        func destroy() async {
            await egress?.close()
            await sandbox.destroy()
        }
    }

    private var live: [String: Task<Live, any Error>] = [:]
    private let logger: Logger
    /// Sandboxes whose init died on its own since the host started
    /// (`corral_sandbox_deaths_total`).
    private(set) var deaths = 0
    /// Serves every sandbox's `127.0.0.1:3128`; nil: sandboxes get no proxy (tests of
    /// other things).
    let proxy: EgressProxy?
    /// The project's egress rules as its policy says now, asked for each connection.
    let rules: @Sendable (String) -> EgressRules?

    init(
        proxy: EgressProxy? = nil, rules: @escaping @Sendable (String) -> EgressRules? = { _ in nil },
        logger: Logger = Logger(label: "corral.sandboxes")
    ) {
        self.proxy = proxy
        self.rules = rules
        self.logger = logger
    }

    /// The project's sandbox over `workspace` with `config`, creating or replacing it as
    /// needed.
    func sandbox(
        _ project: String, workspace: Workspace, policyDigest: String,
        configure: @escaping @Sendable (Workspace) -> SandboxConfiguration
    ) async throws -> ProjectSandbox {
        if let task = live[project] {
            if let current = try? await task.value, current.sandbox.isAlive, current.workspace == workspace {
                return current.sandbox
            }
            // Dead, or over a workspace that was evicted and materialized again: replace.
            if live[project] == task {
                live[project] = nil
                if let stale = try? await task.value {
                    // A death was logged as a warning when it happened (``died(_:project:)``).
                    logger.info(
                        "replacing the sandbox of \(project)",
                        metadata: ["project": "\(project)", "reason": stale.sandbox.isAlive ? "new workspace" : "dead"])
                    await stale.destroy()
                }
            }
            if let task = live[project] { return try await task.value.sandbox }
        }
        let task = Task { [logger, proxy, rules] in
            let sandbox = try await ProjectSandbox.create(configure(workspace))
            // Every sandbox gets the proxy, whatever its policy says now: the policy is read
            // per connection, so a reload that grants network applies without a new sandbox,
            // and under mode "none" a program that tries the proxy is told why it is refused.
            var egress: EgressEndpoint?
            if let proxy {
                do {
                    egress = try await proxy.open(
                        project: project, namespace: try sandbox.networkNamespace(), rules: { rules(project) })
                } catch {
                    await sandbox.destroy()
                    throw error
                }
            }
            for (resource, reason) in sandbox.unenforcedLimits.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
                // Allowed by the project's policy (require_limits = false), never silent.
                logger.warning(
                    "sandbox runs without its \(resource.rawValue) limit",
                    metadata: ["project": "\(project)", "limit": "\(resource.rawValue)", "reason": "\(reason)"])
            }
            return Live(sandbox: sandbox, workspace: workspace, policyDigest: policyDigest, egress: egress)
        }
        live[project] = task
        // A death is reported when it happens, not at the project's next call.
        Task { [weak self] in
            guard let made = try? await task.value, await made.sandbox.waitForInitExit() else { return }
            await self?.died(made.sandbox, project: project)
        }
        do {
            return try await task.value.sandbox
        } catch {
            if live[project] == task { live[project] = nil }
            throw error
        }
    }

    /// A sandbox's init died on its own (not by ``destroy(_:)``): a warning, and a count.
    private func died(_ sandbox: ProjectSandbox, project: String) {
        deaths += 1
        logger.warning(
            "the sandbox of \(project) died: its init process was killed, and every job and session in it with it; the next call starts a fresh sandbox",
            metadata: ["project": "\(project)", "init_pid": "\(sandbox.initPID)"])
    }

    /// The project's sandbox if one runs.
    func existing(_ project: String) async -> ProjectSandbox? {
        guard let task = live[project], let current = try? await task.value, current.sandbox.isAlive else { return nil }
        return current.sandbox
    }

    /// Destroys the project's sandbox (before its workspace is evicted).
    func destroy(_ project: String) async {
        guard let task = live.removeValue(forKey: project) else { return }
        if let current = try? await task.value { await current.destroy() }
    }

    /// Destroys the project's sandbox unless it mounts `workspace`: after the workspace was
    /// replaced, a sandbox over the old tree goes, one made over the new tree stays.
    func destroy(_ project: String, unlessOver workspace: Workspace) async {
        guard let task = live[project] else { return }
        if let current = try? await task.value, current.workspace == workspace { return }
        guard live[project] == task else { return }
        live[project] = nil
        if let current = try? await task.value { await current.destroy() }
    }

    func destroyAll() async {
        for project in live.keys { await destroy(project) }
    }

    var projects: [String] { Array(live.keys) }
}
