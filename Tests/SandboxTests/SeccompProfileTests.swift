import Glibc
import Testing

@testable import Sandbox

/// What a profile means, decided by the compiled BPF itself, and the checks that keep a
/// profile from meaning something other than what it says.
@Suite struct SeccompProfileTests {
    func verdict(_ profile: SeccompProfile, _ name: String, _ args: [UInt64] = [], arch: UInt32 = BPFMachine.x86_64)
        throws -> UInt32?
    {
        let number = try #require(SeccompNames.syscallNumber(name))
        return BPFMachine(program: try profile.compile().instructions).run(nr: number, arch: arch, args: args)
    }

    @Test func everyDefaultNameIsANativeSyscall() {
        let names = SeccompProfile.corralDefault.syscalls + SeccompProfile.deniedByDefault
        let unknown = names.filter { (SeccompNames.syscallNumber($0) ?? -1) < 0 }
        #expect(unknown == [])
        #expect(SeccompProfile.corralDefault.issues() == [])
    }

    @Test func defaultDeniesEveryListedCallAndAllowsNoneOfThem() throws {
        let allowed = Set(SeccompProfile.corralDefault.syscalls)
        for name in SeccompProfile.deniedByDefault {
            #expect(!allowed.contains(name), "\(name)")
            #expect(try verdict(.corralDefault, name) == BPFMachine.errno(EPERM), "\(name)")
        }
        #expect(try verdict(.corralDefault, "read") == BPFMachine.allow)
    }

    @Test func foreignArchitecturesGetENOSYS() throws {
        // i386 getpid, as `int 0x80` from a 64-bit process presents it.
        #expect(try verdict(.corralDefault, "getpid", arch: BPFMachine.i386) == BPFMachine.errno(ENOSYS))
        var both = SeccompProfile.corralDefault
        both.architectures = ["native", "x86"]
        let program = try both.compile()
        let i386GetPid = BPFMachine(program: program.instructions).run(nr: 20, arch: BPFMachine.i386)
        #expect(i386GetPid == BPFMachine.allow)
    }

    @Test func compilesOncePerDistinctProfile() throws {
        var profile = SeccompProfile(defaultErrno: EPERM, rules: [.init("getppid"), .init("exit_group")])
        profile.rules.append(.init("getpid"))
        let before = SeccompProfile.compilations.load(ordering: .relaxed)
        let first = try profile.compile()
        let second = try profile.compile()
        #expect(first.storage === second.storage)
        #expect(SeccompProfile.compilations.load(ordering: .relaxed) == before + 1)
        profile.rules.append(.init("gettid"))
        #expect(try profile.compile().storage !== first.storage)
    }

    @Test func programIsBoundedAndPassesToTheKernelAsIs() throws {
        let program = try SeccompProfile.corralDefault.compile()
        #expect(program.count > 10 && program.count <= 4096)
        program.withUnsafeFilter { prog in
            #expect(Int(prog.pointee.len) == program.count)
            #expect(prog.pointee.filter[0].code == program.instructions[0].code)
        }
    }

    @Test func unknownSyscallIsAnIssue() {
        let profile = SeccompProfile(defaultErrno: EPERM, rules: [.init("getpid"), .init("no_such_call")])
        #expect(profile.issues().map(\.message) == ["unknown system call \"no_such_call\""])
        #expect(profile.issues().first?.rule == 1)
        #expect(throws: SeccompError.invalidProfile(profile.issues())) { try profile.compile() }
    }

    @Test func mixedActionsForOneSyscallAreAnIssue() {
        let profile = SeccompProfile(
            defaultErrno: EPERM,
            rules: [
                .init("socket", conditions: [.int32(0, equals: 2)]),
                .init("socket", .errno(EAFNOSUPPORT), conditions: [.int32(0, equals: 17)]),
            ])
        #expect(
            profile.issues().map(\.message) == ["socket has rules with different actions (allow, errno(EAFNOSUPPORT))"])
    }

    @Test func unconditionalPlusConditionalIsAnIssue() {
        let profile = SeccompProfile(
            defaultErrno: EPERM, rules: [.init("socket"), .init("socket", conditions: [.int32(0, equals: 2)])])
        #expect(
            profile.issues().map(\.message) == ["socket has both an unconditional rule and a rule with conditions"])
    }

    @Test func bypassableAllowConditionsAreIssues() {
        let rule = SeccompProfile.Rule("socket", conditions: [.init(argument: 0, .notEqual, 40)])
        let profile = SeccompProfile(defaultErrno: EPERM, rules: [rule])
        #expect(profile.issues().map(\.message) == ["an allow rule with \"ne\" can be bypassed"])
        let twice = SeccompProfile.Rule(
            "socket", conditions: [.int32(0, equals: 2), .init(argument: 0, .maskedEqual, 1, mask: 1)])
        #expect(
            SeccompProfile(defaultErrno: EPERM, rules: [twice]).issues().map(\.message) == [
                "argument 0 is compared twice in one rule"
            ])
    }

    @Test func badErrnoAndArchitectureAreIssues() {
        let profile = SeccompProfile(
            defaultErrno: 0, architectures: ["native", "pdp11"], rules: [.init("getpid", .errno(5000))])
        #expect(
            profile.issues().map(\.message) == [
                "default errno 0 is out of range", "unknown architecture \"pdp11\"", "errno 5000 is out of range",
            ])
    }

    @Test func errnoNamesResolve() {
        #expect(SeccompNames.errnoValue(named: "ENOSYS") == ENOSYS)
        #expect(SeccompNames.errnoValue(named: "EAFNOSUPPORT") == EAFNOSUPPORT)
        #expect(SeccompNames.errnoValue(named: "ENOPE") == nil)
    }

    @Test func aProfileThatAllowsACallLetsItThrough() throws {
        var profile = SeccompProfile.corralDefault
        #expect(try Probe.errno(try profile.compile(), "unshare", [0]) == EPERM)
        profile.rules.append(.init("unshare"))
        #expect(try Probe.errno(try profile.compile(), "unshare", [0]) == 0)
    }
}
