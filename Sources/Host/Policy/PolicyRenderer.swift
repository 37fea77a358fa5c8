import Sandbox

/// Writes a resolved policy back as TOML: what `corral policy check` and `show` print, and
/// (without the header) what the digest is computed over. The output loads back to the
/// same policy, so an admin can save it as a self-contained file.
public enum PolicyRenderer {
    /// The full document: a header naming the policy, its files and digest, then ``body(_:)``.
    public static func document(_ policy: Policy) -> String {
        var lines = [
            "# policy \"\(policy.name)\" resolved from \(policy.files.joined(separator: " <- "))",
            "# digest \(policy.digest)",
        ]
        if !policy.description.isEmpty { lines.append("description = \(quote(policy.description))") }
        return lines.joined(separator: "\n") + "\n" + body(policy)
    }

    /// Every behavior-changing setting, in a fixed order and spelling.
    public static func body(_ policy: Policy) -> String {
        var out: [String] = [
            "rootfs = \(quote(policy.rootfs))", "require_limits = \(policy.requireLimits)", "",
        ]
        out += ["[user]", "uid = \(policy.user.uid)", "gid = \(policy.user.gid)", ""]
        let limits = policy.limits
        out += [
            "[limits]", "cpus = \(limits.cpus)", "memory = \(size(limits.memoryBytes))", "pids = \(limits.pids)",
            "tmpfs = \(size(limits.tmpfsBytes))", "workspace = \(size(limits.workspaceBytes))", "",
        ]
        out += [
            "[timeouts]", "default_s = \(policy.timeouts.defaultSeconds)", "max_s = \(policy.timeouts.maxSeconds)", "",
        ]
        out += [
            "[output]", "stdout = \(size(policy.output.stdoutBytes))", "stderr = \(size(policy.output.stderrBytes))",
            "",
        ]
        let sessions = policy.sessions
        out += [
            "[sessions]", "idle_timeout_s = \(sessions.idleTimeoutSeconds)",
            "max_idle_timeout_s = \(sessions.maxIdleTimeoutSeconds)", "max_sessions = \(sessions.maxSessions)", "",
        ]
        out += ["[network]"] + Self.network(policy.network)
        let setup = policy.setup
        out += ["[setup]", "timeout_s = \(setup.timeoutSeconds)", "", "[setup.network]"] + Self.network(setup.network)
        // A limit left out is the project's own, so only those the policy sets are written.
        out.append("[setup.limits]")
        if let cpus = setup.cpus { out.append("cpus = \(cpus)") }
        if let memory = setup.memoryBytes { out.append("memory = \(size(memory))") }
        if let pids = setup.pids { out.append("pids = \(pids)") }
        out.append("")
        out += ["[capabilities]", "keep = \(list(policy.capabilities.names))", ""]
        out += ["[env]", "pass = \(list(policy.environment.pass))", "", "[env.set]"]
        out += policy.environment.set.map { "\(key($0.name)) = \(quote($0.value))" } + [""]
        for mount in policy.mounts {
            out += ["[[mount]]", "source = \(quote(mount.source))", "target = \(quote(mount.target))", ""]
        }
        out += seccomp(policy.seccomp)
        return out.joined(separator: "\n") + "\n"
    }

    /// The keys of a `[network]` or `[setup.network]` section, every one spelled out.
    static func network(_ network: Policy.Network) -> [String] {
        [
            "mode = \(quote(network.mode.rawValue))", "egress = \(list(network.egress.map(\.description)))",
            "allow_private = \(list(network.allowPrivate.map(\.description)))",
            "max_connections = \(network.maxConnections)", "max_bytes_per_hour = \(size(network.maxBytesPerHour))", "",
        ]
    }

    /// The profile as `base = "none"` plus explicit lists, so nothing depends on the
    /// built-in default of the Corral version that reads it.
    static func seccomp(_ profile: SeccompProfile) -> [String] {
        var out = [
            "[seccomp]", "base = \"none\"", "default_errno = \(errno(profile.defaultErrno))",
            "architectures = \(list(profile.architectures))",
        ]
        let groups = Dictionary(grouping: profile.rules, by: \.syscall)
        let unconditional = groups.keys.sorted().filter { name in
            groups[name]!.count == 1 && groups[name]![0].conditions.isEmpty && groups[name]![0].action == .allow
        }
        out += ["allow = ["] + chunks(unconditional).map { "    " + $0 } + ["]"]
        for rule in profile.rules where !unconditional.contains(rule.syscall) {
            out += ["", "[[seccomp.rule]]", "syscalls = [\(quote(rule.syscall))]"]
            switch rule.action {
            case .allow: out.append("action = \"allow\"")
            case .errno(let value): out += ["action = \"errno\"", "errno = \(errno(value))"]
            }
            if !rule.conditions.isEmpty {
                out.append("args = [" + rule.conditions.map(condition).joined(separator: ", ") + "]")
            }
        }
        return out
    }

    static func condition(_ condition: SeccompProfile.Condition) -> String {
        var fields = ["index = \(condition.argument)", "op = \(quote(condition.comparison.rawValue))"]
        if condition.comparison == .maskedEqual { fields.append("mask = \(number(condition.mask, hex: true))") }
        fields.append("value = \(number(condition.value, hex: condition.value >= 0x1000))")
        return "{ " + fields.joined(separator: ", ") + " }"
    }

    /// Hex for masks and flags, decimal for small values such as address families; values
    /// above Int64.max are written as the negative number with the same bit pattern, which
    /// the loader reads back as such.
    static func number(_ value: UInt64, hex: Bool) -> String {
        if value > UInt64(Int64.max) { return "\(Int64(bitPattern: value))" }
        return hex ? "0x" + String(value, radix: 16) : "\(value)"
    }

    /// Names, quoted and comma-separated, about 100 columns a line.
    static func chunks(_ names: [String]) -> [String] {
        var lines: [String] = []
        var current = ""
        for name in names {
            let item = quote(name) + ","
            if !current.isEmpty && current.count + item.count + 1 > 100 {
                lines.append(current)
                current = ""
            }
            current += current.isEmpty ? item : " " + item
        }
        if !current.isEmpty { lines.append(current) }
        return lines
    }

    /// `"ENOSYS"`, or the bare number for an errno without a name the loader knows.
    static func errno(_ value: Int32) -> String {
        let name = Errno.name(value)
        return SeccompNames.errnoValue(named: name) == value ? quote(name) : "\(value)"
    }

    static func size(_ bytes: UInt64) -> String { quote(ByteSize.format(bytes)) }

    static func list(_ items: [String]) -> String { "[" + items.map(quote).joined(separator: ", ") + "]" }

    static func key(_ name: String) -> String {
        name.utf8.allSatisfy(TOMLParser.isBareKey) && !name.isEmpty ? name : quote(name)
    }

    /// A TOML basic string with every character that needs it escaped.
    static func quote(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            case "\r": out += "\\r"
            default:
                if scalar.value < 0x20 || scalar.value == 0x7f {
                    let digits = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}

extension Policy {
    /// This policy with its digest filled in from the canonical body.
    func withDigest() -> Policy {
        Policy(
            name: name, files: files, description: description, rootfs: rootfs, requireLimits: requireLimits,
            user: user, limits: limits, timeouts: timeouts, output: output, sessions: sessions, network: network,
            setup: setup, seccomp: seccomp, capabilities: capabilities, mounts: mounts, environment: environment,
            digest: "sha256:" + SHA256.hex(PolicyRenderer.body(self)))
    }
}
