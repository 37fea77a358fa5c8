import Sandbox

/// Folds a chain of layers (the base first, the named policy last) into a ``Policy``, then
/// checks what only the merged result can show.
enum PolicyResolver {
    static func resolve(_ chain: [PolicyLayer]) throws(PolicyErrors) -> Policy {
        let child = chain.last!
        var merged = PolicyLayer(name: child.name, file: child.file)
        for layer in chain { merged.overlay(layer) }
        var errors: [PolicyError] = []
        let seccomp = SeccompFold.fold(chain.map(\.seccomp), errors: &errors, file: child.file)
        errors += crossChecks(merged, child: child)
        guard errors.isEmpty else { throw PolicyErrors(errors) }
        let network = Policy.Network(
            mode: merged.network.mode?.value ?? .none, egress: merged.network.egress?.value ?? [],
            allowPrivate: merged.network.allowPrivate?.value ?? [],
            maxConnections: merged.network.maxConnections.map { Int($0.value) } ?? EgressRules.defaultMaxConnections,
            maxBytesPerHour: merged.network.maxBytesPerHour?.value ?? EgressRules.defaultMaxBytesPerHour)
        let draft = Policy(
            name: child.name,
            files: chain.reversed().map(\.file),
            description: merged.description?.value ?? "",
            rootfs: merged.rootfs?.value ?? PolicyDefaults.rootfs,
            requireLimits: merged.requireLimits?.value ?? PolicyDefaults.requireLimits,
            user: Policy.User(
                uid: merged.uid.map { UInt32($0.value) } ?? PolicyDefaults.uid,
                gid: merged.gid.map { UInt32($0.value) } ?? PolicyDefaults.gid),
            limits: Policy.Limits(
                cpus: merged.cpus?.value ?? PolicyDefaults.cpus,
                memoryBytes: merged.memory?.value ?? PolicyDefaults.memory,
                pids: merged.pids.map { Int($0.value) } ?? PolicyDefaults.pids,
                tmpfsBytes: merged.tmpfs?.value ?? PolicyDefaults.tmpfs,
                workspaceBytes: merged.workspace?.value ?? PolicyDefaults.workspace),
            timeouts: Policy.Timeouts(
                defaultSeconds: merged.defaultTimeout.map { Int($0.value) } ?? PolicyDefaults.defaultTimeout,
                maxSeconds: merged.maxTimeout.map { Int($0.value) } ?? PolicyDefaults.maxTimeout),
            output: Policy.OutputCaps(
                stdoutBytes: merged.stdout?.value ?? PolicyDefaults.stdout,
                stderrBytes: merged.stderr?.value ?? PolicyDefaults.stderr),
            sessions: Policy.Sessions(
                idleTimeoutSeconds: merged.idleTimeout.map { Int($0.value) } ?? PolicyDefaults.idleTimeout,
                maxIdleTimeoutSeconds: merged.maxIdleTimeout.map { Int($0.value) } ?? PolicyDefaults.maxIdleTimeout,
                maxSessions: merged.maxSessions.map { Int($0.value) } ?? PolicyDefaults.maxSessions),
            network: network,
            setup: Policy.Setup(
                timeoutSeconds: merged.setupTimeout.map { Int($0.value) } ?? PolicyDefaults.setupTimeout,
                network: setupNetwork(merged.setupNetwork, over: network), cpus: merged.setupCpus?.value,
                memoryBytes: merged.setupMemory?.value, pids: merged.setupPids.map { Int($0.value) }),
            seccomp: seccomp,
            capabilities: merged.capabilities?.value ?? .none,
            mounts: merged.mounts?.value ?? [],
            environment: Policy.Environment(
                set: merged.envSet.keys.sorted().map { .init(name: $0, value: merged.envSet[$0]!.value) },
                pass: merged.envPass?.value.map(\.value) ?? []),
            digest: "")
        return draft.withDigest()
    }

    /// Problems between settings that may come from different files.
    static func crossChecks(_ merged: PolicyLayer, child: PolicyLayer) -> [PolicyError] {
        var errors: [PolicyError] = []
        errors += atMost(
            ("default_s", merged.defaultTimeout, PolicyDefaults.defaultTimeout),
            ("max_s", merged.maxTimeout, PolicyDefaults.maxTimeout), child: child)
        errors += atMost(
            ("idle_timeout_s", merged.idleTimeout, PolicyDefaults.idleTimeout),
            ("max_idle_timeout_s", merged.maxIdleTimeout, PolicyDefaults.maxIdleTimeout), child: child)
        for name in merged.envPass?.value ?? [] where merged.envSet[name.value] != nil {
            errors.append(
                name.origin.error(
                    "\"\(name.value)\" is both passed through and set",
                    hint: "remove it from env.pass or from [env.set]"))
        }
        let network = merged.network
        errors += networkChecks(
            mode: network.mode?.value ?? .none, egress: network.egress, allowlistOrigin: network.mode?.origin,
            section: "network")
        // [setup.network] takes each key it leaves out from [network], whose own problems are
        // reported above: only what this section writes is checked, against the result.
        let setup = merged.setupNetwork
        errors += networkChecks(
            mode: setup.mode?.value ?? network.mode?.value ?? .none, egress: setup.egress,
            inherited: network.egress?.value ?? [], allowlistOrigin: setup.mode?.origin ?? setup.egress?.origin,
            section: "setup.network")
        return errors
    }

    /// egress only means something in allowlist mode: a list beside mode "none" is a
    /// forgotten mode, and an allowlist with nothing on it reaches nothing. `egress` is what
    /// the section writes, `inherited` what it gets otherwise; an allowlist with no hosts is
    /// reported at `allowlistOrigin`, and not at all without one (nothing here wrote it).
    static func networkChecks(
        mode: Policy.Network.Mode, egress: Setting<[EgressHost]>?, inherited: [EgressHost] = [],
        allowlistOrigin: Origin?, section: String
    ) -> [PolicyError] {
        var errors: [PolicyError] = []
        if let egress, !egress.value.isEmpty, mode != .allowlist {
            errors.append(
                egress.origin.error(
                    "egress names hosts but [\(section)] mode is \"\(mode.rawValue)\"",
                    hint: "set mode = \"allowlist\" to allow exactly these hosts, or remove egress"))
        }
        if mode == .allowlist, (egress?.value ?? inherited).isEmpty, let origin = allowlistOrigin {
            errors.append(
                origin.error(
                    "mode \"allowlist\" with no egress entries allows nothing",
                    hint: "list hosts in egress, e.g. egress = [\"packages.example.org\"], or use mode = \"none\""))
        }
        return errors
    }

    /// `[setup.network]` as it applies: each key it sets, the resolved `[network]`'s value
    /// for each it leaves out. Hosts are kept only in allowlist mode, where they mean
    /// something, so the rendered policy loads back.
    static func setupNetwork(_ layer: NetworkLayer, over network: Policy.Network) -> Policy.Network {
        let mode = layer.mode?.value ?? network.mode
        let egress = layer.egress?.value ?? network.egress
        return Policy.Network(
            mode: mode, egress: mode == .allowlist ? egress : [],
            allowPrivate: layer.allowPrivate?.value ?? network.allowPrivate,
            maxConnections: layer.maxConnections.map { Int($0.value) } ?? network.maxConnections,
            maxBytesPerHour: layer.maxBytesPerHour?.value ?? network.maxBytesPerHour)
    }

    /// A key's name, its merged setting if any file wrote it, and its built-in default.
    typealias Bounded = (key: String, setting: Setting<Int64>?, fallback: Int)

    /// A default above its maximum (`default_s` above `max_s`), where either may be
    /// inherited or left at its built-in default.
    static func atMost(_ value: Bounded, _ maximum: Bounded, child: PolicyLayer) -> [PolicyError] {
        let low = value.setting?.value ?? Int64(value.fallback)
        let high = maximum.setting?.value ?? Int64(maximum.fallback)
        // Point at whichever of the two this file wrote; the other was inherited. At least
        // one was written somewhere: the built-in defaults are in order.
        let written = [value.setting?.origin, maximum.setting?.origin].compactMap { $0 }
        guard low > high, let origin = written.first(where: { $0.file == child.file }) ?? written.first else {
            return []
        }
        return [
            origin.error(
                "\(value.key) (\(low)) is above \(maximum.key) (\(high))",
                hint: "raise \(maximum.key) or lower \(value.key)")
        ]
    }
}

extension PolicyLayer {
    /// Applies a later (more specific) layer: its settings win; env.set merges by name.
    mutating func overlay(_ layer: PolicyLayer) {
        description = layer.description ?? description
        rootfs = layer.rootfs ?? rootfs
        requireLimits = layer.requireLimits ?? requireLimits
        uid = layer.uid ?? uid
        gid = layer.gid ?? gid
        cpus = layer.cpus ?? cpus
        memory = layer.memory ?? memory
        pids = layer.pids ?? pids
        tmpfs = layer.tmpfs ?? tmpfs
        workspace = layer.workspace ?? workspace
        defaultTimeout = layer.defaultTimeout ?? defaultTimeout
        maxTimeout = layer.maxTimeout ?? maxTimeout
        stdout = layer.stdout ?? stdout
        stderr = layer.stderr ?? stderr
        idleTimeout = layer.idleTimeout ?? idleTimeout
        maxIdleTimeout = layer.maxIdleTimeout ?? maxIdleTimeout
        maxSessions = layer.maxSessions ?? maxSessions
        network.overlay(layer.network)
        setupTimeout = layer.setupTimeout ?? setupTimeout
        setupNetwork.overlay(layer.setupNetwork)
        setupCpus = layer.setupCpus ?? setupCpus
        setupMemory = layer.setupMemory ?? setupMemory
        setupPids = layer.setupPids ?? setupPids
        capabilities = layer.capabilities ?? capabilities
        mounts = layer.mounts ?? mounts
        envSet.merge(layer.envSet) { _, new in new }
        envPass = layer.envPass ?? envPass
    }
}

/// Applies each file's seccomp edits in order, per system call.
enum SeccompFold {
    typealias Entry = (rule: SeccompProfile.Rule, origin: Origin?)

    static func fold(_ layers: [SeccompLayer], errors: inout [PolicyError], file: String) -> SeccompProfile {
        var bySyscall = group(SeccompProfile.corralDefault.rules)
        var defaultErrno = SeccompProfile.corralDefault.defaultErrno
        var architectures = SeccompProfile.corralDefault.architectures
        for layer in layers {
            if let base = layer.base, let profile = SeccompDecoder.bases[base.value] {
                bySyscall = group(profile.rules)
            }
            defaultErrno = layer.defaultErrno?.value ?? defaultErrno
            architectures = layer.architectures?.value ?? architectures
            var replaced = Set<String>()
            for rule in layer.rules {
                if replaced.insert(rule.value.syscall).inserted { bySyscall[rule.value.syscall] = [] }
                bySyscall[rule.value.syscall, default: []].append((rule.value, rule.origin))
            }
            for name in layer.allow { bySyscall[name.value] = [(SeccompProfile.Rule(name.value), name.origin)] }
            for name in layer.deny { bySyscall[name.value] = nil }
        }
        // Sorted by call, in written order within one: the order `groupedBySyscall()` gives.
        let entries = bySyscall.keys.sorted().flatMap { bySyscall[$0]! }
        let profile = SeccompProfile(
            defaultErrno: defaultErrno, architectures: architectures, rules: entries.map(\.rule))
        for issue in profile.issues() {
            let origin = issue.rule.flatMap { entries[$0].origin } ?? Origin(file: file, line: 0, key: "seccomp")
            errors.append(origin.error(issue.message, hint: issue.hint))
        }
        return profile
    }

    static func group(_ rules: [SeccompProfile.Rule]) -> [String: [Entry]] {
        Dictionary(grouping: rules.map { ($0, nil) as Entry }, by: \.rule.syscall)
    }
}
