import Logging

/// Finding a project's policy by name, and saying so when its file is broken.
extension CorralHost {
    /// The policy in force under `name`: while its file is invalid, its last good version.
    /// A file that has never loaded is `invalidPolicy` with what is wrong and where; only a
    /// name with no file at all is `unknownPolicy`.
    static func policy(named name: String, in policies: PolicyStore) throws -> Policy {
        if let found = policies.policy(named: name) { return found }
        let problems = policies.problems(named: name)
        guard problems.isEmpty else { throw HostError.invalidPolicy(name, problems: problems) }
        throw HostError.unknownPolicy(name)
    }

    /// Nil while the file of policy `name` loads; otherwise what is wrong with it and which
    /// version the project's jobs get (the last good one, or none: they cannot start).
    static func policyWarning(_ name: String, policies: PolicyStore) -> String? {
        let problems = policies.problems(named: name)
        guard !problems.isEmpty else { return nil }
        guard let kept = policies.policy(named: name) else {
            return HostError.invalidPolicy(name, problems: problems).description
        }
        return
            "the file of policy \"\(name)\" is invalid, so its last good version (\(kept.digest)) is in force: "
            + PolicyErrors(problems).summary()
    }

    /// A project just registered under the last good version of a policy whose file is now
    /// broken: the admin should know that what the file says is not what the project got.
    func logIfLastGood(_ id: String, policy name: String) {
        guard let warning = Self.policyWarning(name, policies: policies) else { return }
        logger.warning(
            "project registered under the last good version of its policy, whose file is invalid",
            metadata: ["project": "\(id)", "policy": "\(name)", "warning": "\(warning)"])
    }
}
