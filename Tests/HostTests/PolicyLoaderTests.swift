import Foundation
import Sandbox
import Testing

@testable import Host

/// Resolving: defaults, `extends`, per-call seccomp edits, digests, and the request clamp.
@Suite struct PolicyLoaderTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().path

    @Test func anEmptyFileGetsEveryDefault() throws {
        let policy = try loadPolicy("")
        #expect(policy.rootfs == "minimal")
        #expect(policy.user == Policy.User(uid: 1000, gid: 1000))
        #expect(
            policy.limits
                == Policy.Limits(
                    cpus: 1, memoryBytes: 1 << 30, pids: 256, tmpfsBytes: 256 << 20, workspaceBytes: 4 << 30))
        #expect(policy.timeouts == Policy.Timeouts(defaultSeconds: 120, maxSeconds: 1800))
        #expect(policy.network.mode == .none)
        #expect(policy.capabilities == .none)
        #expect(policy.seccomp == .corralDefault)
        #expect(policy.mounts == [])
    }

    @Test func shippedDefaultLoadsWithTheBuiltInProfile() throws {
        let policy = try PolicyLoader(directory: Self.packageRoot + "/policies").load(named: "default")
        #expect(policy.seccomp == .corralDefault)
        #expect(policy.requireLimits == true)
        #expect(policy.capabilities.mask == 0)
        #expect(policy.environment.set.map(\.name) == ["HOME", "LANG", "PATH"])
        #expect(policy.digest.hasPrefix("sha256:") && policy.digest.count == 7 + 64)
    }

    @Test func aChildOverridesOnlyWhatItSays() throws {
        let base = """
            rootfs = "devtools"
            [limits]
            memory = "2GiB"
            pids = 512
            [env.set]
            LANG = "C.UTF-8"
            HOME = "/home/agent"
            [capabilities]
            keep = ["CAP_CHOWN"]
            """
        let child = """
            extends = "base"
            [limits]
            memory = "512MiB"
            [env.set]
            HOME = "/workspace"
            [capabilities]
            keep = []
            """
        let policy = try loadPolicy(child, name: "small", others: ["base": base])
        #expect(policy.rootfs == "devtools")
        #expect(policy.limits.memoryBytes == 512 << 20)
        #expect(policy.limits.pids == 512)
        #expect(
            policy.environment.set == [.init(name: "HOME", value: "/workspace"), .init(name: "LANG", value: "C.UTF-8")])
        #expect(policy.capabilities == .none)
        #expect(policy.files.map { ($0 as NSString).lastPathComponent } == ["small.toml", "base.toml"])
    }

    @Test func seccompEditsApplyPerSyscall() throws {
        let child = """
            extends = "default"
            [seccomp]
            allow = ["ptrace"]
            deny = ["chmod"]

            [[seccomp.rule]]
            syscalls = ["socket"]
            action = "allow"
            args = [{ index = 0, op = "masked_eq", mask = 0xffffffff, value = 2 }]
            """
        let policy = try loadPolicy(child, others: ["default": ""])
        let profile = policy.seccomp
        #expect(profile.rules(for: "ptrace") == [SeccompProfile.Rule("ptrace")])
        #expect(profile.rules(for: "chmod") == [])
        #expect(profile.rules(for: "socket") == [SeccompProfile.Rule("socket", conditions: [.int32(0, equals: 2)])])
        #expect(profile.rules(for: "clone") == SeccompProfile.corralDefault.rules(for: "clone"))
    }

    @Test func baseNoneStartsFromNothing() throws {
        let policy = try loadPolicy("[seccomp]\nbase = \"none\"\ndefault_errno = 38\nallow = [\"exit_group\"]\n")
        #expect(policy.seccomp == SeccompProfile(defaultErrno: 38, rules: [.init("exit_group")]))
    }

    @Test func renderedPolicyLoadsBackToTheSameDigest() throws {
        let text = """
            description = "round trip"
            [limits]
            cpus = 1.5
            memory = "1536MiB"
            [env.set]
            "WEIRD_NAME" = "tab\\there \\"quoted\\" \\u0001"
            [[mount]]
            source = "/opt/go"
            target = "/opt/go"
            [seccomp]
            allow = ["ptrace"]
            [[seccomp.rule]]
            syscalls = ["openat"]
            action = "allow"
            args = [{ index = 0, op = "eq", value = -100 }]
            """
        let policy = try loadPolicy(text)
        let again = try loadPolicy(PolicyRenderer.document(policy))
        #expect(again.digest == policy.digest)
        #expect(again.seccomp == policy.seccomp)
        #expect(again.environment == policy.environment)
        #expect(again.description == "round trip")
        let openat = try #require(again.seccomp.rules(for: "openat").first?.conditions.first)
        #expect(openat.value == UInt64(bitPattern: -100))
    }

    @Test func requireLimitsDefaultsToTrueAndIsInheritedThroughExtends() throws {
        #expect(try loadPolicy("").requireLimits == true)
        #expect(try loadPolicy("require_limits = false\n").requireLimits == false)
        #expect(try loadPolicy("require_limits = true\n").requireLimits == true)
        let base = ["base": "require_limits = false\n[limits]\npids = 100\n"]
        #expect(try loadPolicy("extends = \"base\"\n", others: base).requireLimits == false)
        #expect(try loadPolicy("extends = \"base\"\nrequire_limits = true\n", others: base).requireLimits == true)
    }

    @Test func requireLimitsIsRenderedAndPartOfTheDigest() throws {
        let strict = try loadPolicy("")
        let lenient = try loadPolicy("require_limits = false\n")
        #expect(PolicyRenderer.body(strict).hasPrefix("rootfs = \"minimal\"\nrequire_limits = true\n\n[user]\n"))
        #expect(PolicyRenderer.body(lenient).hasPrefix("rootfs = \"minimal\"\nrequire_limits = false\n\n[user]\n"))
        #expect(strict.digest != lenient.digest)
        let again = try loadPolicy(PolicyRenderer.document(lenient))
        #expect(again.requireLimits == false)
        #expect(again.digest == lenient.digest)
    }

    @Test func digestIgnoresCommentsAndDescriptionButNotSettings() throws {
        let plain = try loadPolicy("[limits]\npids = 300\n")
        let commented = try loadPolicy("# why\ndescription = \"x\"\n[limits]\npids = 300 # more\n")
        let different = try loadPolicy("[limits]\npids = 301\n")
        #expect(plain.digest == commented.digest)
        #expect(plain.digest != different.digest)
    }

    @Test func environmentPassesHostValuesThenSetsFixedOnes() throws {
        let policy = try loadPolicy("[env]\npass = [\"TERM\", \"MISSING\"]\n[env.set]\nLANG = \"C.UTF-8\"\n")
        #expect(policy.environment.resolve(host: ["TERM": "xterm", "SECRET": "s"]) == ["TERM=xterm", "LANG=C.UTF-8"])
    }

    // MARK: - Requests

    @Test func aRequestMayLowerLimitsButNotRaiseThem() throws {
        let policy = try loadPolicy("[limits]\ncpus = 2\nmemory = \"1GiB\"\n[timeouts]\ndefault_s = 60\nmax_s = 600\n")
        let lowered = try policy.effectiveLimits(
            for: RequestedLimits(cpus: 0.5, memoryBytes: 512 << 20, timeoutSeconds: 300))
        #expect(lowered.cpus == 0.5)
        #expect(lowered.memoryBytes == 512 << 20)
        #expect(lowered.timeoutSeconds == 300)
        #expect(lowered.pids == 256)
        #expect(try policy.effectiveLimits(for: RequestedLimits()).timeoutSeconds == 60)
        #expect(throws: LimitError.aboveMaximum(limit: "memory", requested: "2GiB", maximum: "1GiB")) {
            try policy.effectiveLimits(for: RequestedLimits(memoryBytes: 2 << 30))
        }
        #expect(throws: LimitError.aboveMaximum(limit: "timeout_s", requested: "601", maximum: "600")) {
            try policy.effectiveLimits(for: RequestedLimits(timeoutSeconds: 601))
        }
        #expect(throws: LimitError.aboveMaximum(limit: "cpus", requested: "2.5", maximum: "2.0")) {
            try policy.effectiveLimits(for: RequestedLimits(cpus: 2.5))
        }
        #expect(throws: LimitError.notPositive(limit: "pids", requested: "0")) {
            try policy.effectiveLimits(for: RequestedLimits(pids: 0))
        }
        #expect(throws: LimitError.notPositive(limit: "cpus", requested: "nan")) {
            try policy.effectiveLimits(for: RequestedLimits(cpus: .nan))
        }
        #expect(
            LimitError.aboveMaximum(limit: "memory", requested: "2GiB", maximum: "1GiB").description
                == "memory: requested 2GiB is above the policy's maximum of 1GiB")
    }

    // MARK: - Building blocks

    @Test func sha256MatchesKnownVectors() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            SHA256.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")
                == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        #expect(
            SHA256.hex(String(repeating: "a", count: 1000))
                == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test func sizesAreStrict() {
        #expect(ByteSize.parse("256MiB") == 256 << 20)
        #expect(ByteSize.parse("1GiB") == 1 << 30)
        #expect(ByteSize.parse("4096B") == 4096)
        for bad in ["1GB", "1G", "1.5GiB", " 1GiB", "1 GiB", "-1GiB", "01GiB", "GiB", "", "99999999999TiB"] {
            #expect(ByteSize.parse(bad) == nil, "\(bad)")
        }
        #expect(ByteSize.format(1536 << 20) == "1536MiB")
        #expect(ByteSize.format(1 << 40) == "1TiB")
        #expect(ByteSize.format(1000) == "1000B")
    }
}
