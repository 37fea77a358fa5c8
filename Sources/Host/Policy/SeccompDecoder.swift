import Sandbox

/// The `[seccomp]` section: a built-in base, then per-system-call edits.
enum SeccompDecoder {
    static let keys = ["base", "default_errno", "architectures", "allow", "deny", "rule"]
    static let ruleKeys = ["syscalls", "action", "errno", "args", "comment"]
    static let argumentKeys = ["index", "op", "value", "mask"]
    static let bases: [String: SeccompProfile] = [
        "corral-default": .corralDefault,
        "none": SeccompProfile(defaultErrno: 1, rules: []),
    ]

    static func decode(_ reader: TableReader) -> SeccompLayer {
        var layer = SeccompLayer()
        if let base = reader.string("base") {
            if bases[base.value] != nil {
                layer.base = base
            } else {
                reader.diagnostics.report(
                    base.origin.error(
                        "unknown seccomp base \"\(base.value)\"", hint: "use \"corral-default\" or \"none\""))
            }
        }
        if let entry = reader.table["default_errno"], let value = errno(entry, reader: reader) {
            layer.defaultErrno = Setting(value: value, origin: reader.origin(entry))
        }
        if let architectures = reader.strings("architectures") {
            let unknown = architectures.value.filter { SeccompNames.architectureToken($0.value) == nil }
            for arch in unknown {
                reader.diagnostics.report(
                    arch.origin.error(
                        "unknown architecture \"\(arch.value)\"", hint: "use native, x86_64, x86, x32, aarch64 or arm"))
            }
            if unknown.isEmpty {
                layer.architectures = Setting(value: architectures.value.map(\.value), origin: architectures.origin)
            }
        }
        layer.allow = syscallNames(reader.strings("allow"), reader: reader)
        layer.deny = syscallNames(reader.strings("deny"), reader: reader)
        for name in layer.deny where layer.allow.contains(where: { $0.value == name.value }) {
            reader.diagnostics.report(
                name.origin.error("\"\(name.value)\" is in both allow and deny", hint: "keep it in one of them"))
        }
        if let rules = reader.tables("rule", allowed: ruleKeys) {
            for rule in rules.readers { layer.rules += decodeRule(rule) }
        }
        let ruled = Set(layer.rules.map(\.value.syscall))
        for name in layer.allow + layer.deny where ruled.contains(name.value) {
            reader.diagnostics.report(
                name.origin.error(
                    "\"\(name.value)\" is in a list and also has a [[seccomp.rule]]",
                    hint: "say what it may do in one place"))
        }
        return layer
    }

    /// Names checked against libseccomp's table, each reported at its own line.
    static func syscallNames(_ list: Setting<[Setting<String>]>?, reader: TableReader) -> [Setting<String>] {
        guard let list else { return [] }
        return list.value.filter { name in
            if SeccompNames.syscallNumber(name.value) != nil { return true }
            reader.diagnostics.report(
                name.origin.error("unknown system call \"\(name.value)\"", hint: syscallHint(name.value)))
            return false
        }
    }

    static func syscallHint(_ name: String) -> String {
        let known = SeccompProfile.corralDefault.syscalls + SeccompProfile.deniedByDefault
        if let guess = closest(to: name, in: known) { return "did you mean \"\(guess)\"?" }
        return "libseccomp \(SeccompNames.libraryVersion) does not know it; check `man 2 syscalls`"
    }

    /// An errno as a name (`ENOSYS`) or a number (1...4095).
    static func errno(_ entry: TOMLTable.Entry, reader: TableReader) -> Int32? {
        let hint = "use a name such as EPERM or ENOSYS, or a number 1...4095"
        switch entry.value.kind {
        case .string(let name):
            if let value = SeccompNames.errnoValue(named: name) { return value }
            reader.diagnostics.report(
                line: entry.value.line, key: reader.key(entry.key), "unknown errno \"\(name)\"", hint: hint)
        case .integer(let value) where (1...4095).contains(value):
            return Int32(value)
        case .integer(let value):
            reader.rangeError(entry, "\(value)", range: "1...4095")
        default:
            reader.typeError(entry, expected: "an errno name or number", hint: hint)
        }
        return nil
    }

    static func decodeRule(_ reader: TableReader) -> [Setting<SeccompProfile.Rule>] {
        let names = syscallNames(reader.strings("syscalls"), reader: reader)
        if reader.table["syscalls"] == nil {
            reader.missing("syscalls", hint: "list the calls, e.g. syscalls = [\"clone\"]")
        }
        var action: SeccompProfile.Action?
        switch reader.string("action")?.value {
        case "allow":
            action = .allow
            if let entry = reader.table["errno"] {
                reader.diagnostics.report(
                    line: entry.line, key: reader.key("errno"), "errno is only for action = \"errno\"",
                    hint: "remove it, or set action = \"errno\"")
            }
        case "errno":
            if let entry = reader.table["errno"] {
                action = errno(entry, reader: reader).map { .errno($0) }
            } else {
                reader.missing("errno", hint: "say which errno, e.g. errno = \"ENOSYS\"")
            }
        case .some(let other):
            reader.diagnostics.report(
                line: reader.table["action"]!.value.line, key: reader.key("action"), "unknown action \"\(other)\"",
                hint: "use \"allow\" or \"errno\"")
        case nil:
            if reader.table["action"] == nil { reader.missing("action", hint: "write action = \"allow\" or \"errno\"") }
        }
        _ = reader.string("comment")
        let conditions = arguments(reader)
        guard let action, let conditions, !names.isEmpty else { return [] }
        let origin = reader.diagnostics.origin(line: reader.table.line, key: reader.path)
        return names.map {
            Setting(value: SeccompProfile.Rule($0.value, action, conditions: conditions), origin: origin)
        }
    }

    /// `args = [{ index = 0, op = "masked_eq", mask = 0xffffffff, value = 2 }]`.
    static func arguments(_ reader: TableReader) -> [SeccompProfile.Condition]? {
        guard let list = reader.tables("args", allowed: argumentKeys) else { return [] }
        var conditions: [SeccompProfile.Condition] = []
        var ok = true
        for arg in list.readers {
            guard let condition = argument(arg) else {
                ok = false
                continue
            }
            conditions.append(condition)
        }
        return ok ? conditions : nil
    }

    static func argument(_ reader: TableReader) -> SeccompProfile.Condition? {
        let index = reader.integer("index", in: 0...5)
        if reader.table["index"] == nil { reader.missing("index", hint: "which argument, 0...5") }
        let ops = SeccompProfile.Comparison.allCases.map(\.rawValue)
        var comparison: SeccompProfile.Comparison?
        if let op = reader.string("op") {
            comparison = SeccompProfile.Comparison(rawValue: op.value)
            if comparison == nil {
                reader.diagnostics.report(
                    op.origin.error(
                        "unknown comparison \"\(op.value)\"", hint: "use one of \(ops.joined(separator: ", "))"))
            }
        } else if reader.table["op"] == nil {
            reader.missing("op", hint: "use one of \(ops.joined(separator: ", "))")
        }
        // Negative numbers are taken as the 64-bit pattern the register holds (e.g. -100 for AT_FDCWD).
        let value = reader.integer("value", in: Int64.min...Int64.max).map { UInt64(bitPattern: $0.value) }
        if reader.table["value"] == nil { reader.missing("value", hint: "the number to compare with") }
        let mask = reader.integer("mask", in: Int64.min...Int64.max).map { UInt64(bitPattern: $0.value) }
        guard let index, let comparison, let value else { return nil }
        if comparison == .maskedEqual {
            guard let mask else {
                reader.missing("mask", hint: "masked_eq compares (argument & mask) with value")
                return nil
            }
            if value & ~mask != 0 {
                reader.diagnostics.report(
                    line: reader.table["value"]!.value.line, key: reader.key("value"),
                    "value has bits outside the mask, so the rule can never match", hint: "clear them or widen the mask"
                )
                return nil
            }
            return SeccompProfile.Condition(argument: Int(index.value), comparison, value, mask: mask)
        }
        if let entry = reader.table["mask"] {
            reader.diagnostics.report(
                line: entry.line, key: reader.key("mask"), "mask is only for op = \"masked_eq\"", hint: "remove it")
            return nil
        }
        return SeccompProfile.Condition(argument: Int(index.value), comparison, value)
    }
}
