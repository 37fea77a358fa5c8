import CSeccomp
import CShim
import Glibc
import Synchronization

/// A compiled seccomp filter: classic BPF, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`.
///
/// Built in the parent, before fork, so the post-fork child only passes a pointer to the
/// kernel. The instructions live in one immutable heap buffer shared by every copy.
public struct SeccompProgram: Sendable {
    let storage: Storage

    init(_ instructions: [sock_filter]) { storage = Storage(instructions) }

    /// The BPF instructions, in order.
    public var instructions: [sock_filter] { Array(storage.buffer) }

    /// How many instructions; the kernel refuses more than 4096.
    public var count: Int { storage.buffer.count }

    /// Calls `body` with a `sock_fprog` pointing at the instructions. Both pointers stay
    /// valid only inside `body`, which is where the spawn path forks and loads the filter.
    public func withUnsafeFilter<R>(_ body: (UnsafePointer<sock_fprog>) throws -> R) rethrows -> R {
        var program = sock_fprog(len: UInt16(storage.buffer.count), filter: storage.buffer.baseAddress)
        return try withExtendedLifetime(storage) { try withUnsafePointer(to: &program) { try body($0) } }
    }

    /// Owns the instruction buffer; never written after init, hence shareable across threads.
    final class Storage: @unchecked Sendable {
        let buffer: UnsafeMutableBufferPointer<sock_filter>

        init(_ instructions: [sock_filter]) {
            buffer = .allocate(capacity: max(instructions.count, 1))
            _ = buffer.initialize(from: instructions)
        }

        deinit { buffer.deallocate() }
    }
}

/// Why a profile could not become a program.
public enum SeccompError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The profile has problems ``SeccompProfile/issues()`` lists.
    case invalidProfile([SeccompProfile.Issue])
    /// A libseccomp call failed.
    case library(SystemError)
    /// The program has more instructions than the kernel accepts.
    case tooLong(instructions: Int)

    public var description: String {
        switch self {
        case .invalidProfile(let issues):
            "invalid seccomp profile: " + issues.map(\.description).joined(separator: "; ")
        case .library(let error): "libseccomp: \(error)"
        case .tooLong(let count): "seccomp program has \(count) instructions; the kernel accepts at most 4096"
        }
    }
}

// MARK: - Compiling

extension SeccompProfile {
    /// Compiles the profile with libseccomp, at most once per distinct profile in this
    /// process: policies are reloaded often but change rarely, and every job of a project
    /// shares its policy's program.
    public func compile() throws -> SeccompProgram {
        try Self.cache.withLock { cache -> SeccompProgram in
            if let program = cache[self] { return program }
            let program = try SeccompCompiler(profile: self).run()
            // Edited policies leave old entries behind; a small bound keeps that finite.
            if cache.count >= 64 { cache.removeAll() }
            cache[self] = program
            Self.compilations.add(1, ordering: .relaxed)
            return program
        }
    }

    // Compiling under the lock keeps "once per profile" exact; it takes a millisecond.
    static let cache = Mutex<[SeccompProfile: SeccompProgram]>([:])
    /// How many times libseccomp actually ran; tests use it to prove the cache works.
    static let compilations = Atomic<Int>(0)
}

/// One libseccomp context, from rules to exported BPF.
struct SeccompCompiler {
    let profile: SeccompProfile

    func run() throws -> SeccompProgram {
        let issues = profile.issues()
        guard issues.isEmpty else { throw SeccompError.invalidProfile(issues) }
        guard let context = seccomp_init(cor_scmp_act_errno(UInt16(profile.defaultErrno))) else {
            throw SeccompError.library(SystemError("seccomp_init", errno: ENOMEM))
        }
        defer { seccomp_release(context) }
        // A foreign ABI (int 0x80, x32) gets ENOSYS: the same answer as on a kernel built
        // without it, and a filter cannot be bypassed by switching ABI.
        try check("seccomp_attr_set(badarch)") {
            seccomp_attr_set(context, SCMP_FLTATR_ACT_BADARCH, cor_scmp_act_errno(UInt16(ENOSYS)))
        }
        // A binary search over syscall numbers instead of a linear scan of 300 of them.
        try check("seccomp_attr_set(optimize)") { seccomp_attr_set(context, SCMP_FLTATR_CTL_OPTIMIZE, 2) }
        try addArchitectures(context)
        for rule in profile.rules { try add(rule, to: context) }
        let instructions = try export(context)
        guard instructions.count <= 4096 else { throw SeccompError.tooLong(instructions: instructions.count) }
        return SeccompProgram(instructions)
    }

    private func addArchitectures(_ context: scmp_filter_ctx) throws {
        let native = seccomp_arch_native()
        let tokens = Set(profile.architectures.compactMap(SeccompNames.architectureToken))
        for token in tokens where token != native {
            try check("seccomp_arch_add(\(token))") { seccomp_arch_add(context, token) }
        }
        if !tokens.contains(native) {
            try check("seccomp_arch_remove(native)") { seccomp_arch_remove(context, native) }
        }
    }

    private func add(_ rule: SeccompProfile.Rule, to context: scmp_filter_ctx) throws {
        guard let number = SeccompNames.syscallNumber(rule.syscall) else { return }
        let action: UInt32 =
            switch rule.action {
            case .allow: SCMP_ACT_ALLOW
            case .errno(let value): cor_scmp_act_errno(UInt16(value))
            }
        let comparisons = rule.conditions.map(Self.comparison)
        try check("seccomp_rule_add(\(rule.syscall))") {
            seccomp_rule_add_array(context, action, number, UInt32(comparisons.count), comparisons)
        }
    }

    static func comparison(_ condition: SeccompProfile.Condition) -> scmp_arg_cmp {
        let argument = UInt32(condition.argument)
        switch condition.comparison {
        case .equal: return scmp_arg_cmp(arg: argument, op: SCMP_CMP_EQ, datum_a: condition.value, datum_b: 0)
        case .notEqual: return scmp_arg_cmp(arg: argument, op: SCMP_CMP_NE, datum_a: condition.value, datum_b: 0)
        case .less: return scmp_arg_cmp(arg: argument, op: SCMP_CMP_LT, datum_a: condition.value, datum_b: 0)
        case .lessOrEqual: return scmp_arg_cmp(arg: argument, op: SCMP_CMP_LE, datum_a: condition.value, datum_b: 0)
        case .greater: return scmp_arg_cmp(arg: argument, op: SCMP_CMP_GT, datum_a: condition.value, datum_b: 0)
        case .greaterOrEqual:
            return scmp_arg_cmp(arg: argument, op: SCMP_CMP_GE, datum_a: condition.value, datum_b: 0)
        case .maskedEqual:
            return scmp_arg_cmp(
                arg: argument, op: SCMP_CMP_MASKED_EQ, datum_a: condition.mask, datum_b: condition.value)
        }
    }

    /// libseccomp 2.5 exports only to a file descriptor. An unnamed temporary file has no
    /// size limit and, unlike a pipe whose capacity can shrink to one page, never blocks.
    private func export(_ context: scmp_filter_ctx) throws -> [sock_filter] {
        guard let file = tmpfile() else { throw SeccompError.library(SystemError("tmpfile(seccomp)", errno: errno)) }
        defer { fclose(file) }
        let fd = fileno(file)
        try check("seccomp_export_bpf") { seccomp_export_bpf(context, fd) }
        let size = try syscall("lseek(seccomp)") { lseek(fd, 0, SEEK_CUR) }
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var done = 0
        while done < bytes.count {
            let n = try bytes.withUnsafeMutableBytes { raw in
                try syscall("pread(seccomp)") { pread(fd, raw.baseAddress! + done, raw.count - done, off_t(done)) }
            }
            if n == 0 { break }
            done += n
        }
        let width = MemoryLayout<sock_filter>.size
        guard done == bytes.count, done % width == 0, done > 0 else {
            throw SeccompError.library(SystemError("seccomp_export_bpf(size \(done))", errno: EPROTO))
        }
        return bytes.withUnsafeBytes { Array($0.bindMemory(to: sock_filter.self)) }
    }

    /// libseccomp returns a negative errno instead of setting `errno`.
    private func check(_ call: @autoclosure () -> String, _ body: () -> Int32) throws {
        let rc = body()
        if rc < 0 { throw SeccompError.library(SystemError(call(), errno: -rc)) }
    }
}
