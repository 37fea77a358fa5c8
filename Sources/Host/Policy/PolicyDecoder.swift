import Sandbox

/// Turns a parsed policy file into a ``PolicyLayer``, reporting every unknown key, wrong
/// type and out-of-range value with its line.
enum PolicyDecoder {
    static let topLevel = [
        "extends", "description", "rootfs", "require_limits", "user", "limits", "timeouts", "output", "sessions",
        "network", "setup", "capabilities", "env", "mount", "seccomp",
    ]

    static func decode(_ root: TOMLTable, name: String, diagnostics: Diagnostics) -> PolicyLayer {
        var layer = PolicyLayer(name: name, file: diagnostics.file)
        let top = TableReader(root, path: "", allowed: topLevel, diagnostics: diagnostics)
        layer.extends = top.string("extends")
        if let parent = layer.extends, !PolicyName.isValid(parent.value) {
            report(parent.origin, in: diagnostics, "\"\(parent.value)\" is not a policy name", hint: PolicyName.hint)
            layer.extends = nil
        }
        layer.description = top.string("description")
        layer.rootfs = top.string("rootfs")
        if let rootfs = layer.rootfs, !PolicyName.isValid(rootfs.value) {
            report(rootfs.origin, in: diagnostics, "\"\(rootfs.value)\" is not an image name", hint: PolicyName.hint)
            layer.rootfs = nil
        }
        layer.requireLimits = top.bool("require_limits")
        if let user = top.table("user", allowed: ["uid", "gid"]) {
            layer.uid = user.integer("uid", in: PolicyBounds.id)
            layer.gid = user.integer("gid", in: PolicyBounds.id)
        }
        decodeLimits(top, into: &layer)
        if let network = top.table("network", allowed: networkKeys) { layer.network = decodeNetwork(network) }
        decodeSetup(top, into: &layer)
        if let caps = top.table("capabilities", allowed: ["keep"]), let keep = caps.strings("keep") {
            layer.capabilities = capabilities(keep, diagnostics: diagnostics)
        }
        decodeEnvironment(top, into: &layer)
        if let mounts = top.tables("mount", allowed: ["source", "target"]) {
            layer.mounts = MountDecoder.decode(mounts.readers, origin: mounts.origin)
        }
        if let seccomp = top.table("seccomp", allowed: SeccompDecoder.keys) {
            layer.seccomp = SeccompDecoder.decode(seccomp)
        }
        return layer
    }

    static func report(_ origin: Origin, in diagnostics: Diagnostics, _ message: String, hint: String) {
        diagnostics.report(origin.error(message, hint: hint))
    }

    private static func decodeLimits(_ top: TableReader, into layer: inout PolicyLayer) {
        if let limits = top.table("limits", allowed: ["cpus", "memory", "pids", "tmpfs", "workspace"]) {
            layer.cpus = limits.number("cpus", in: PolicyBounds.cpus)
            layer.memory = limits.size("memory", in: PolicyBounds.memory)
            layer.pids = limits.integer("pids", in: PolicyBounds.pids)
            layer.tmpfs = limits.size("tmpfs", in: PolicyBounds.tmpfs)
            layer.workspace = limits.size("workspace", in: PolicyBounds.workspace)
        }
        if let timeouts = top.table("timeouts", allowed: ["default_s", "max_s"]) {
            layer.defaultTimeout = timeouts.integer("default_s", in: PolicyBounds.timeout)
            layer.maxTimeout = timeouts.integer("max_s", in: PolicyBounds.timeout)
        }
        if let output = top.table("output", allowed: ["stdout", "stderr"]) {
            layer.stdout = output.size("stdout", in: PolicyBounds.output)
            layer.stderr = output.size("stderr", in: PolicyBounds.output)
        }
        if let sessions = top.table("sessions", allowed: ["idle_timeout_s", "max_idle_timeout_s", "max_sessions"]) {
            layer.idleTimeout = sessions.integer("idle_timeout_s", in: PolicyBounds.idleTimeout)
            layer.maxIdleTimeout = sessions.integer("max_idle_timeout_s", in: PolicyBounds.idleTimeout)
            layer.maxSessions = sessions.integer("max_sessions", in: PolicyBounds.sessions)
        }
    }

    static let networkKeys = ["mode", "egress", "allow_private", "max_connections", "max_bytes_per_hour"]

    /// `[setup]`, `[setup.network]` (the keys of `[network]`) and `[setup.limits]` (cpus,
    /// memory and pids, with the bounds of `[limits]`).
    private static func decodeSetup(_ top: TableReader, into layer: inout PolicyLayer) {
        guard let setup = top.table("setup", allowed: ["timeout_s", "network", "limits"]) else { return }
        layer.setupTimeout = setup.integer("timeout_s", in: PolicyBounds.setupTimeout)
        if let network = setup.table("network", allowed: networkKeys) { layer.setupNetwork = decodeNetwork(network) }
        if let limits = setup.table("limits", allowed: ["cpus", "memory", "pids"]) {
            layer.setupCpus = limits.number("cpus", in: PolicyBounds.cpus)
            layer.setupMemory = limits.size("memory", in: PolicyBounds.memory)
            layer.setupPids = limits.integer("pids", in: PolicyBounds.pids)
        }
    }

    private static func decodeNetwork(_ network: TableReader) -> NetworkLayer {
        var layer = NetworkLayer()
        if let mode = network.string("mode") {
            if let known = Policy.Network.Mode(rawValue: mode.value) {
                layer.mode = Setting(value: known, origin: mode.origin)
            } else {
                report(
                    mode.origin, in: network.diagnostics, "unknown network mode \"\(mode.value)\"",
                    hint: "use \"none\", \"allowlist\" (the hosts in egress) or \"public\" (any public address)")
            }
        }
        if let egress = network.strings("egress") {
            var hosts: [EgressHost] = []
            var ok = true
            for entry in egress.value {
                do throws(EgressHost.ParseError) {
                    hosts.append(try EgressHost(parsing: entry.value))
                } catch {
                    report(
                        entry.origin, in: network.diagnostics, error.description,
                        hint: "write a host name (files.example.org), *.domain, or either with :PORT")
                    ok = false
                }
            }
            if ok { layer.egress = Setting(value: hosts, origin: egress.origin) }
        }
        if let ranges = network.strings("allow_private") {
            var parsed: [AddressRange] = []
            var ok = true
            for entry in ranges.value {
                do throws(EgressHost.ParseError) {
                    parsed.append(try AddressRange(parsing: entry.value))
                } catch {
                    report(
                        entry.origin, in: network.diagnostics, error.description,
                        hint: "write a CIDR such as 10.20.0.0/16")
                    ok = false
                }
            }
            if ok { layer.allowPrivate = Setting(value: parsed, origin: ranges.origin) }
        }
        layer.maxConnections = network.integer("max_connections", in: PolicyBounds.connections)
        layer.maxBytesPerHour = network.size("max_bytes_per_hour", in: PolicyBounds.egressBytes)
        return layer
    }

    private static func capabilities(_ keep: Setting<[Setting<String>]>, diagnostics: Diagnostics)
        -> Setting<CapabilitySet>?
    {
        var mask: UInt64 = 0
        var ok = true
        for name in keep.value {
            guard let value = CapabilitySet.value(named: name.value) else {
                let hint =
                    closest(to: name.value, in: CapabilitySet.allNames.map { $0.uppercased() })
                    .map { "did you mean \"\($0)\"?" }
                    ?? "use a name from `man 7 capabilities`, e.g. CAP_NET_BIND_SERVICE"
                report(name.origin, in: diagnostics, "unknown capability \"\(name.value)\"", hint: hint)
                ok = false
                continue
            }
            mask |= 1 << UInt64(value)
        }
        return ok ? Setting(value: CapabilitySet(mask: mask), origin: keep.origin) : nil
    }

    private static func decodeEnvironment(_ top: TableReader, into layer: inout PolicyLayer) {
        guard let env = top.table("env", allowed: ["set", "pass"]) else { return }
        let diagnostics = top.diagnostics
        if let set = env.table("set", allowed: setKeys(env)) {
            for entry in set.table.entries {
                guard let value = set.string(entry.key) else { continue }
                guard EnvironmentName.isValid(entry.key) else {
                    report(
                        value.origin, in: diagnostics, "\"\(entry.key)\" is not a valid variable name",
                        hint: EnvironmentName.hint)
                    continue
                }
                guard !value.value.contains("\0") else {
                    report(value.origin, in: diagnostics, "the value contains a NUL byte", hint: "remove the \\u0000")
                    continue
                }
                layer.envSet[entry.key] = value
            }
        }
        if let pass = env.strings("pass") {
            let bad = pass.value.filter { !EnvironmentName.isValid($0.value) }
            for name in bad {
                report(
                    name.origin, in: diagnostics, "\"\(name.value)\" is not a valid variable name",
                    hint: EnvironmentName.hint)
            }
            if bad.isEmpty { layer.envPass = pass }
        }
    }

    /// `[env.set]` takes any variable name as a key; names are checked one by one instead.
    private static func setKeys(_ env: TableReader) -> [String] {
        guard let entry = env.table["set"], case .table(let set) = entry.value.kind else { return [] }
        return set.keys
    }
}

/// Names of policies and rootfs images: file-name safe, no path tricks.
enum PolicyName {
    static let hint = "use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit"

    static func isValid(_ name: String) -> Bool {
        guard let first = name.utf8.first, name.utf8.count <= 64, isLowerAlnum(first) else { return false }
        return name.utf8.allSatisfy {
            isLowerAlnum($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-")
        }
    }

    private static func isLowerAlnum(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
    }
}

/// POSIX-portable environment variable names.
enum EnvironmentName {
    static let hint = "use letters, digits and _, not starting with a digit"

    static func isValid(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(UInt8(ascii: "0")...UInt8(ascii: "9")).contains(first) else {
            return false
        }
        return name.utf8.allSatisfy { byte in
            byte == UInt8(ascii: "_") || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
        }
    }
}
