/// A seccomp allowlist: which system calls a sandboxed job may make, under which argument
/// conditions, and the errno everything else gets.
///
/// A profile is a plain value, so a job that captured one keeps it while an admin edits the
/// policy file it came from. ``compile()`` turns it into a ``SeccompProgram`` once per
/// distinct profile.
///
/// Rules for the same system call are OR-ed; the conditions inside one rule are AND-ed.
/// All rules for one system call must share one action, because libseccomp gives
/// overlapping conditions with different actions no defined order (``issues()`` reports it).
public struct SeccompProfile: Sendable, Hashable {
    /// What a matching rule does.
    public enum Action: Sendable, Hashable {
        /// The call runs.
        case allow
        /// The call fails at once with this errno (1...4095).
        case errno(Int32)
    }

    /// How an argument is compared, spelled as in policy files.
    public enum Comparison: String, Sendable, Hashable, CaseIterable {
        case equal = "eq"
        case notEqual = "ne"
        case less = "lt"
        case lessOrEqual = "le"
        case greater = "gt"
        case greaterOrEqual = "ge"
        /// `(argument & mask) == value`.
        case maskedEqual = "masked_eq"
    }

    /// One comparison on one system-call argument.
    public struct Condition: Sendable, Hashable {
        /// Which argument, 0...5.
        public var argument: Int
        public var comparison: Comparison
        public var value: UInt64
        /// Only for ``Comparison/maskedEqual``; 0 otherwise.
        public var mask: UInt64

        public init(argument: Int, _ comparison: Comparison, _ value: UInt64, mask: UInt64 = 0) {
            self.argument = argument
            self.comparison = comparison
            self.value = value
            self.mask = mask
        }

        /// `(argument & 0xffffffff) == value`: the comparison to use for `int` arguments,
        /// because the kernel ignores their upper 32 bits and a caller may set them freely.
        public static func int32(_ argument: Int, equals value: UInt32) -> Condition {
            Condition(argument: argument, .maskedEqual, UInt64(value), mask: 0xffff_ffff)
        }
    }

    /// One system call, an action, and the conditions under which it applies.
    public struct Rule: Sendable, Hashable {
        /// The system call's name as libseccomp knows it, e.g. `clone`.
        public var syscall: String
        public var action: Action
        /// All must hold; empty means always.
        public var conditions: [Condition]

        public init(_ syscall: String, _ action: Action = .allow, conditions: [Condition] = []) {
            self.syscall = syscall
            self.action = action
            self.conditions = conditions
        }
    }

    /// The errno of every call no rule matches.
    public var defaultErrno: Int32
    /// The ABIs the rules apply to: `native` or libseccomp names (`x86_64`, `x86`, `x32`).
    /// A system call made through any other ABI fails with ENOSYS, so an `int 0x80` or an
    /// x32 call cannot reach the kernel around the rules.
    public var architectures: [String]
    /// The rules, in the order they were written.
    public var rules: [Rule]

    public init(defaultErrno: Int32, architectures: [String] = ["native"], rules: [Rule]) {
        self.defaultErrno = defaultErrno
        self.architectures = architectures
        self.rules = rules
    }

    /// The names of the system calls that have at least one rule, sorted.
    public var syscalls: [String] { Array(Set(rules.map(\.syscall))).sorted() }

    /// The rules for one system call, in order.
    public func rules(for syscall: String) -> [Rule] { rules.filter { $0.syscall == syscall } }
}

extension [SeccompProfile.Rule] {
    /// Sorted by system call name, keeping the written order within each call: the one
    /// canonical order, so equal profiles compare (and cache) equal however they were built.
    public func groupedBySyscall() -> [SeccompProfile.Rule] {
        enumerated().sorted { ($0.element.syscall, $0.offset) < ($1.element.syscall, $1.offset) }.map(\.element)
    }
}

// MARK: - Validation

extension SeccompProfile {
    /// A reason a profile cannot be compiled as written.
    public struct Issue: Sendable, Hashable, CustomStringConvertible {
        /// The index in ``SeccompProfile/rules`` the issue is about, or nil for the profile.
        public var rule: Int?
        public var message: String
        /// How to fix it.
        public var hint: String

        public init(rule: Int?, message: String, hint: String) {
            self.rule = rule
            self.message = message
            self.hint = hint
        }

        public var description: String { "\(message) (hint: \(hint))" }
    }

    /// Every problem that would make ``compile()`` fail or make the filter mean something
    /// other than what it says; empty for a good profile.
    public func issues() -> [Issue] {
        var found: [Issue] = []
        if !Self.errnoRange.contains(defaultErrno) {
            found.append(
                Issue(rule: nil, message: "default errno \(defaultErrno) is out of range", hint: "use 1...4095"))
        }
        for arch in architectures where SeccompNames.architectureToken(arch) == nil {
            found.append(
                Issue(
                    rule: nil, message: "unknown architecture \"\(arch)\"",
                    hint: "use native, x86_64, x86, x32, aarch64 or arm"))
        }
        for (index, rule) in rules.enumerated() { found += Self.issues(of: rule, at: index) }
        found += crossRuleIssues()
        return found
    }

    static let errnoRange: ClosedRange<Int32> = 1...4095

    static func issues(of rule: Rule, at index: Int) -> [Issue] {
        var found: [Issue] = []
        if SeccompNames.syscallNumber(rule.syscall) == nil {
            found.append(
                Issue(
                    rule: index, message: "unknown system call \"\(rule.syscall)\"",
                    hint: "libseccomp \(SeccompNames.libraryVersion) does not know this name; check `man 2 syscalls`"))
        }
        if case .errno(let value) = rule.action, !errnoRange.contains(value) {
            found.append(Issue(rule: index, message: "errno \(value) is out of range", hint: "use 1...4095"))
        }
        var seen = Set<Int>()
        for condition in rule.conditions {
            if !(0...5).contains(condition.argument) {
                found.append(
                    Issue(
                        rule: index, message: "argument index \(condition.argument) is out of range",
                        hint: "system calls have arguments 0...5"))
            } else if !seen.insert(condition.argument).inserted {
                found.append(
                    Issue(
                        rule: index, message: "argument \(condition.argument) is compared twice in one rule",
                        hint: "libseccomp allows one comparison per argument per rule; write two rules instead"))
            }
            let widening: Set<Comparison> = [.notEqual, .greater, .greaterOrEqual]
            if rule.action == .allow && widening.contains(condition.comparison) {
                found.append(
                    Issue(
                        rule: index,
                        message: "an allow rule with \"\(condition.comparison.rawValue)\" can be bypassed",
                        hint: "a caller can set the upper 32 bits of the argument; list allowed values with masked_eq"
                    ))
            }
        }
        return found
    }

    /// Conflicts between rules for the same system call, reported on the later rule.
    func crossRuleIssues() -> [Issue] {
        var found: [Issue] = []
        var first: [String: Int] = [:]
        for (index, rule) in rules.enumerated() {
            guard let earlier = first[rule.syscall] else {
                first[rule.syscall] = index
                continue
            }
            let other = rules[earlier]
            if other.action != rule.action {
                found.append(
                    Issue(
                        rule: index,
                        message:
                            "\(rule.syscall) has rules with different actions (\(other.action.name), \(rule.action.name))",
                        hint: "libseccomp gives overlapping conditions no order; use one action per system call"))
            } else if other.conditions.isEmpty || rule.conditions.isEmpty {
                found.append(
                    Issue(
                        rule: index,
                        message: "\(rule.syscall) has both an unconditional rule and a rule with conditions",
                        hint: "the unconditional rule makes the conditions meaningless; keep one of them"))
            }
        }
        return found
    }
}

extension SeccompProfile.Action {
    /// `allow` or `errno(EPERM)`, as error messages and the policy renderer spell it.
    public var name: String {
        switch self {
        case .allow: "allow"
        case .errno(let value): "errno(\(Errno.name(value)))"
        }
    }
}
