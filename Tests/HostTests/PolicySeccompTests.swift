import CShim
import Foundation
import Testing

@testable import Host
@testable import Sandbox

/// The filter a job gets is driven by its policy file, and Docker profiles convert into
/// sections that load.
@Suite struct PolicySeccompTests {
    /// The errno `name(args)` gets in a forked child under `policy`'s filter.
    func probe(_ policy: Policy, _ name: String, _ args: [Int] = []) throws -> Int32 {
        let number = try #require(SeccompNames.syscallNumber(name))
        let padded = args + Array(repeating: 0, count: 6 - args.count)
        var result = cor_probe_result()
        let rc = try policy.seccompProgram().withUnsafeFilter {
            cor_probe_filter6($0, Int32(COR_PROBE_NATIVE.rawValue), Int(number), padded, &result)
        }
        try #require(rc == 0 && result.signal == 0)
        return result.err
    }

    @Test func aPolicyThatAllowsACallLetsItThrough() throws {
        let strict = try loadPolicy("extends = \"default\"\n", others: ["default": ""])
        #expect(try probe(strict, "unshare", [0]) == EPERM)
        #expect(try probe(strict, "getpid") == 0)
        let relaxed = try loadPolicy(
            "extends = \"default\"\n[seccomp]\nallow = [\"unshare\"]\n", others: ["default": ""])
        #expect(try probe(relaxed, "unshare", [0]) == 0)
    }

    @Test func aPolicyThatDeniesACallStopsIt() throws {
        let policy = try loadPolicy("[seccomp]\ndeny = [\"getppid\"]\n")
        #expect(try probe(policy, "getppid") == EPERM)
        let custom = try loadPolicy(
            """
            [seccomp]
            deny = ["getppid"]
            [[seccomp.rule]]
            syscalls = ["getpid"]
            action = "errno"
            errno = "ENOSYS"
            """)
        #expect(try probe(custom, "getpid") == ENOSYS)
    }

    @Test func sameProfileCompilesOnce() throws {
        let one = try loadPolicy("[limits]\npids = 100\n")
        let other = try loadPolicy("[limits]\npids = 200\n")
        #expect(one.digest != other.digest)
        #expect(try one.seccompProgram().storage === other.seccompProgram().storage)
    }

    static let dockerLike = """
        {
          "defaultAction": "SCMP_ACT_ERRNO",
          "defaultErrnoRet": 1,
          "archMap": [{ "architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"] }],
          "syscalls": [
            { "names": ["read", "write", "getpid", "chown32", "no_such_call"], "action": "SCMP_ACT_ALLOW" },
            { "names": ["socket"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": 40, "valueTwo": 0, "op": "SCMP_CMP_NE" }] },
            { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ" }] },
            { "names": ["personality"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ" }] },
            { "names": ["clone"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }],
              "excludes": { "caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"] } },
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": { "caps": ["CAP_SYS_ADMIN"] } },
            { "names": ["mount", "unshare"], "action": "SCMP_ACT_ALLOW", "includes": { "caps": ["CAP_SYS_ADMIN"] } },
            { "names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": { "arches": ["amd64", "x32"] } },
            { "names": ["s390_runtime_instr"], "action": "SCMP_ACT_ALLOW", "includes": { "arches": ["s390x"] } },
            { "names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": { "minKernel": "4.8" } },
            { "names": ["getppid"], "action": "SCMP_ACT_TRACE" }
          ]
        }
        """

    @Test func dockerProfileConvertsToASectionThatLoads() throws {
        let result = try SeccompImport.convert(json: Data(Self.dockerLike.utf8), source: "docker.json")
        let profile = result.profile
        #expect(
            profile.syscalls == ["arch_prctl", "clone", "clone3", "getpid", "personality", "ptrace", "read", "write"])
        #expect(profile.rules(for: "clone3") == [.init("clone3", .errno(38))])
        #expect(
            profile.rules(for: "clone") == [
                .init("clone", conditions: [.init(argument: 0, .maskedEqual, 0, mask: 0x7E02_0000)])
            ])
        #expect(profile.rules(for: "personality").count == 2)
        #expect(
            result.notes == [
                "syscalls[0] (read, write, getpid, ...): unknown to libseccomp \(SeccompNames.libraryVersion): no_such_call",
                "syscalls[1] (socket) skipped: an allow rule with \"ne\" can be bypassed",
                "syscalls[6] (mount, unshare) skipped: only for processes with CAP_SYS_ADMIN; Corral jobs keep none by default",
                "syscalls[8] (s390_runtime_instr) skipped: only for s390x",
                "syscalls[10] (getppid) skipped: action SCMP_ACT_TRACE is not supported, so these calls stay denied",
                "architectures: native only; Corral fails other ABIs with ENOSYS",
            ])
        let policy = try loadPolicy(result.toml)
        #expect(policy.seccomp == profile)
    }

    @Test func denylistProfilesAreRefused() {
        let json = #"{ "defaultAction": "SCMP_ACT_ALLOW", "syscalls": [] }"#
        #expect(throws: SeccompImport.Failure.self) { try SeccompImport.convert(json: Data(json.utf8), source: "x") }
        #expect(throws: SeccompImport.Failure.self) { try SeccompImport.convert(json: Data("[]".utf8), source: "x") }
    }
}
