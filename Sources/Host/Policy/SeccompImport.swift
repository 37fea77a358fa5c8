import Foundation
import Sandbox

/// Converts a Docker or OCI seccomp JSON profile into a `[seccomp]` section.
///
/// Entries are kept when they apply to a native-ABI job without capabilities, which is what
/// a Corral job is; everything dropped or changed is listed as a comment at the top, so the
/// admin reviews the conversion instead of trusting it.
public enum SeccompImport {
    public struct Result: Sendable, Hashable {
        /// The TOML section, notes first.
        public let toml: String
        public let profile: SeccompProfile
        /// What was skipped or approximated, one line each.
        public let notes: [String]
    }

    public struct Failure: Error, Sendable, Hashable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public static func convert(json data: Data, source: String) throws(Failure) -> Result {
        guard let root = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw Failure(message: "\(source): not a JSON object")
        }
        var notes: [String] = []
        let defaultErrno = try defaultErrno(root, notes: &notes)
        var rules: [SeccompProfile.Rule] = []
        for (index, item) in ((root["syscalls"] as? [[String: Any]]) ?? []).enumerated() {
            rules += entry(item, index: index, defaultErrno: defaultErrno, notes: &notes)
        }
        let profile = SeccompProfile(
            defaultErrno: defaultErrno, architectures: ["native"], rules: reconcile(rules, notes: &notes))
        notes.append("architectures: native only; Corral fails other ABIs with ENOSYS")
        let header =
            ["# Imported from \(source) by `corral policy import-seccomp`; review before use."]
            + notes.map { "# note: \($0)" }
        let toml = (header + PolicyRenderer.seccomp(profile)).joined(separator: "\n") + "\n"
        return Result(toml: toml, profile: profile, notes: notes)
    }

    static func defaultErrno(_ root: [String: Any], notes: inout [String]) throws(Failure) -> Int32 {
        let action = root["defaultAction"] as? String ?? ""
        let errno = (root["defaultErrnoRet"] as? NSNumber)?.int32Value ?? 1
        switch action {
        case "SCMP_ACT_ERRNO": return errno
        case "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP":
            notes.append("defaultAction \(action) becomes errno EPERM: Corral fails denied calls, it does not kill")
            return 1
        default:
            throw Failure(
                message: "defaultAction \"\(action)\" is not supported; Corral profiles are allowlists "
                    + "(SCMP_ACT_ERRNO or SCMP_ACT_KILL*)")
        }
    }

    /// The rules one JSON entry contributes, or none with a note saying why.
    static func entry(_ item: [String: Any], index: Int, defaultErrno: Int32, notes: inout [String])
        -> [SeccompProfile.Rule]
    {
        let names = (item["names"] as? [String]) ?? (item["name"] as? String).map { [$0] } ?? []
        let label = "syscalls[\(index)] (\(names.prefix(3).joined(separator: ", "))\(names.count > 3 ? ", ..." : ""))"
        if let reason = exclusion(item) {
            notes.append("\(label) skipped: \(reason)")
            return []
        }
        let action: SeccompProfile.Action
        switch item["action"] as? String ?? "" {
        case "SCMP_ACT_ALLOW": action = .allow
        case "SCMP_ACT_LOG":
            action = .allow
            notes.append("\(label): SCMP_ACT_LOG becomes allow (Corral does not log syscalls)")
        case "SCMP_ACT_ERRNO": action = .errno((item["errnoRet"] as? NSNumber)?.int32Value ?? defaultErrno)
        case let other:
            notes.append("\(label) skipped: action \(other) is not supported, so these calls stay denied")
            return []
        }
        var conditions: [SeccompProfile.Condition] = []
        for arg in (item["args"] as? [[String: Any]]) ?? [] {
            guard let condition = condition(arg) else {
                notes.append("\(label) skipped: an argument comparison is not supported")
                return []
            }
            conditions.append(condition)
        }
        // Checked on a stand-in call, since only the conditions and action matter here.
        let candidate = SeccompProfile(defaultErrno: 1, rules: [.init("getpid", action, conditions: conditions)])
        if let issue = candidate.issues().first {
            notes.append("\(label) skipped: \(issue.message)")
            return []
        }
        let native = names.filter { (SeccompNames.syscallNumber($0) ?? -1) >= 0 }
        let unknown = names.filter { SeccompNames.syscallNumber($0) == nil }
        if !unknown.isEmpty {
            notes.append(
                "\(label): unknown to libseccomp \(SeccompNames.libraryVersion): \(unknown.joined(separator: ", "))")
        }
        return native.map { SeccompProfile.Rule($0, action, conditions: conditions) }
    }

    /// Why an entry does not apply to a Corral job, or nil if it does.
    static func exclusion(_ item: [String: Any]) -> String? {
        let native = ["amd64", "x86_64", "SCMP_ARCH_X86_64"]
        let includes = item["includes"] as? [String: Any] ?? [:]
        let excludes = item["excludes"] as? [String: Any] ?? [:]
        if let caps = includes["caps"] as? [String], !caps.isEmpty {
            return "only for processes with \(caps.joined(separator: ", ")); Corral jobs keep none by default"
        }
        if let arches = includes["arches"] as? [String], !arches.isEmpty, !arches.contains(where: native.contains) {
            return "only for \(arches.joined(separator: ", "))"
        }
        if let arches = excludes["arches"] as? [String], arches.contains(where: native.contains) {
            return "excluded on x86_64"
        }
        return nil
    }

    static func condition(_ arg: [String: Any]) -> SeccompProfile.Condition? {
        guard let index = (arg["index"] as? NSNumber)?.intValue, let op = arg["op"] as? String else { return nil }
        let value = (arg["value"] as? NSNumber)?.uint64Value ?? 0
        let valueTwo = (arg["valueTwo"] as? NSNumber)?.uint64Value ?? 0
        let ops: [String: SeccompProfile.Comparison] = [
            "SCMP_CMP_EQ": .equal, "SCMP_CMP_NE": .notEqual, "SCMP_CMP_LT": .less, "SCMP_CMP_LE": .lessOrEqual,
            "SCMP_CMP_GT": .greater, "SCMP_CMP_GE": .greaterOrEqual,
        ]
        if op == "SCMP_CMP_MASKED_EQ" {
            // valueTwo with bits outside the mask could never match; refuse rather than guess.
            guard valueTwo & ~value == 0 else { return nil }
            return SeccompProfile.Condition(argument: index, .maskedEqual, valueTwo, mask: value)
        }
        return ops[op].map { SeccompProfile.Condition(argument: index, $0, value) }
    }

    /// Resolves what Corral refuses but Docker profiles contain: a call allowed outright
    /// and also under conditions (the conditions go), or with different actions (the
    /// first action wins).
    static func reconcile(_ rules: [SeccompProfile.Rule], notes: inout [String]) -> [SeccompProfile.Rule] {
        var kept: [SeccompProfile.Rule] = []
        for name in Array(Set(rules.map(\.syscall))).sorted() {
            var group = rules.filter { $0.syscall == name }
            var unique: [SeccompProfile.Rule] = []
            for rule in group where !unique.contains(rule) { unique.append(rule) }
            group = unique
            let action = group[0].action
            if group.contains(where: { $0.action != action }) {
                notes.append("\(name): rules with different actions; kept \(action.name)")
                group = group.filter { $0.action == action }
            }
            if group.count > 1, let plain = group.first(where: { $0.conditions.isEmpty }) {
                notes.append("\(name): allowed unconditionally, so its conditional rules were dropped")
                group = [plain]
            }
            kept += group
        }
        return kept
    }
}
