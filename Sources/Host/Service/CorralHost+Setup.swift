import Foundation

// MARK: - Setup commands (docs/ENVIRONMENTS.md, "Setup")

extension CorralHost {
    /// Replaces the project's setup commands (`[]` removes them). On a materialized project
    /// whose commands changed, the new ones start at once in the background, and its jobs
    /// wait for them; a cold project runs them when it is next materialized.
    public func setSetup(_ id: String, commands: [String]) async throws -> ProjectInfo {
        guard var chosen = settings[id] else { throw HostError.projectNotFound(id) }
        chosen.setup = try setupCommands(id, commands)
        try settings.set(id, chosen)
        await setup.startInBackground(id)
        return try await project(id)
    }

    /// Runs the project's setup now, whatever its record says (materializing the project
    /// first), and answers once it has ended, succeeded or failed, with the project; a
    /// failed run is reported in the project's `setup`, not thrown.
    public func runSetup(_ id: String, progress: (@Sendable (CacheProgress) -> Void)? = nil) async throws
        -> ProjectInfo
    {
        let resolved = try Self.resolve(id, settings: settings, policies: policies)
        try await cache.setWorkspaceQuota(id, bytes: Self.quota(resolved.limits))
        _ = try await setup.rerun(id, progress: progress)
        return try await project(id)
    }

    /// The commands a registration or upload leaves the project with: `commands` checked,
    /// or the project's own when nil.
    func setupCommands(_ id: String, _ commands: [String]?) throws -> [String]? {
        guard let commands else { return settings[id]?.setup }
        if let problem = SetupCommands.problem(commands) { throw HostError.invalidSetup(problem) }
        return commands.isEmpty ? nil : commands
    }
}
