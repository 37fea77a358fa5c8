import Foundation
import Testing

@testable import Host

/// Every kind of bad file an admin can write gets one exact message: file:line, the key,
/// what is wrong, and a hint. None of them ever becomes a policy.
@Suite struct PolicyValidationTests {
    @Test func unknownTopLevelKey() throws {
        #expect(
            try policyErrors("rootfss = \"minimal\"\n") == [
                "p.toml:1: rootfss: unknown key \"rootfss\" at the top level (hint: did you mean \"rootfs\"?)"
            ])
    }

    @Test func unknownKeyInATable() throws {
        #expect(
            try policyErrors("[limits]\ncpus = 2\nmemroy = \"1GiB\"\n") == [
                "p.toml:3: limits.memroy: unknown key \"memroy\" in [limits] (hint: did you mean \"memory\"?)"
            ])
    }

    @Test func unknownTable() throws {
        #expect(
            try policyErrors("# comment\n[limit]\npids = 10\n") == [
                "p.toml:2: limit: unknown key \"limit\" at the top level (hint: did you mean \"limits\"?)"
            ])
    }

    @Test func unknownKeyWithNoCloseMatchListsTheAllowedOnes() throws {
        #expect(
            try policyErrors("[user]\nname = \"agent\"\n") == [
                "p.toml:2: user.name: unknown key \"name\" in [user] (hint: allowed here: uid, gid)"
            ])
    }

    @Test func wrongType() throws {
        #expect(
            try policyErrors("[limits]\npids = \"256\"\n") == [
                "p.toml:2: limits.pids: expected an integer, found a string (hint: write a whole number without quotes, e.g. 8)"
            ])
    }

    @Test func requireLimitsMustBeABoolean() throws {
        #expect(
            try policyErrors("require_limits = \"false\"\n") == [
                "p.toml:1: require_limits: expected a boolean, found a string (hint: write true or false without quotes)"
            ])
        #expect(
            try policyErrors("# strictness\nrequire_limits = 0\n") == [
                "p.toml:2: require_limits: expected a boolean, found an integer (hint: write true or false without quotes)"
            ])
    }

    @Test func aTopLevelKeyWrittenInsideASectionSaysWhereItBelongs() throws {
        #expect(
            try policyErrors("[limits]\nmemory = \"1GiB\"\nrequire_limits = false\n") == [
                "p.toml:3: limits.require_limits: unknown key \"require_limits\" in [limits] (hint: require_limits is a top-level key: write it above the first [section])"
            ])
    }

    @Test func tableWhereAValueIs() throws {
        #expect(
            try policyErrors("limits = 5\n") == [
                "p.toml:1: limits: expected a table, found an integer (hint: write it as a [limits] section)"
            ])
    }

    @Test func outOfRangeInteger() throws {
        #expect(
            try policyErrors("[limits]\npids = 0\n") == [
                "p.toml:2: limits.pids: 0 is out of range (hint: use 8...4194304)"
            ])
        #expect(
            try policyErrors("[user]\nuid = 65535\n") == [
                "p.toml:2: user.uid: 65535 is out of range (hint: use 0...65534)"
            ])
    }

    @Test func ambiguousSizeUnit() throws {
        #expect(
            try policyErrors("[limits]\nmemory = \"1GB\"\n") == [
                "p.toml:2: limits.memory: \"1GB\" is not a size (hint: use a whole number with B, KiB, MiB, GiB or TiB, e.g. \"2GiB\")"
            ])
    }

    @Test func sizeOutOfRange() throws {
        #expect(
            try policyErrors("[limits]\nmemory = \"2TiB\"\n") == [
                "p.toml:2: limits.memory: \"2TiB\" is out of range (hint: use 16MiB...1TiB)"
            ])
    }

    @Test func unknownSyscallName() throws {
        #expect(
            try policyErrors("[seccomp]\nallow = [\n  \"ptrace\",\n  \"mkdirr\",\n]\n") == [
                "p.toml:4: seccomp.allow: unknown system call \"mkdirr\" (hint: did you mean \"mkdir\"?)"
            ])
    }

    @Test func unknownCapabilityName() throws {
        #expect(
            try policyErrors("[capabilities]\nkeep = [\"CAP_CHOWN\", \"CAP_SYS_ADMN\"]\n") == [
                "p.toml:2: capabilities.keep: unknown capability \"CAP_SYS_ADMN\" (hint: did you mean \"CAP_SYS_ADMIN\"?)"
            ])
    }

    @Test func extendsCycle() throws {
        #expect(
            try policyErrors("extends = \"b\"\n", name: "a", others: ["b": "# b\nextends = \"a\"\n"]) == [
                "b.toml:2: extends: extends cycle: a -> b -> a (hint: a policy cannot extend itself, directly or through others)"
            ])
        #expect(
            try policyErrors("extends = \"self\"\n", name: "self") == [
                "self.toml:1: extends: extends cycle: self -> self (hint: a policy cannot extend itself, directly or through others)"
            ])
    }

    @Test func extendsAMissingPolicy() throws {
        let directory = try PolicyDirectory()
        try directory.write("p", "extends = \"nope\"\n")
        #expect(
            directory.errors(loading: "p") == [
                "p.toml:1: extends: no policy named \"nope\" (hint: expected nope.toml)"
            ])
    }

    @Test func extendsABrokenPolicy() throws {
        #expect(
            try policyErrors("extends = \"base\"\n", others: ["base": "[limits]\ncpus = \"two\"\n"]) == [
                "p.toml:1: extends: extends \"base\", which has errors (hint: fix base.toml first)",
                "base.toml:2: limits.cpus: expected a number, found a string (hint: write a number without quotes, e.g. 1.5)",
            ])
    }

    @Test func defaultTimeoutAboveInheritedMaximum() throws {
        #expect(
            try policyErrors(
                "extends = \"base\"\n[timeouts]\ndefault_s = 3600\n", others: ["base": "[timeouts]\nmax_s = 1800\n"])
                == [
                    "p.toml:3: timeouts.default_s: default_s (3600) is above max_s (1800) (hint: raise max_s or lower default_s)"
                ])
    }

    @Test func networkSectionIsCheckedEntryByEntry() throws {
        #expect(
            try policyErrors("[network]\nmode = \"host\"\n") == [
                "p.toml:2: network.mode: unknown network mode \"host\" (hint: use \"none\", \"allowlist\" (the hosts in egress) or \"public\" (any public address))"
            ])
        // egress beside mode "none" is a forgotten mode.
        #expect(
            try policyErrors("[network]\negress = [\"example.com:443\"]\n") == [
                "p.toml:2: network.egress: egress names hosts but [network] mode is \"none\" (hint: set mode = \"allowlist\" to allow exactly these hosts, or remove egress)"
            ])
        #expect(
            try policyErrors("[network]\nmode = \"allowlist\"\n") == [
                "p.toml:2: network.mode: mode \"allowlist\" with no egress entries allows nothing (hint: list hosts in egress, e.g. egress = [\"packages.example.org\"], or use mode = \"none\")"
            ])
        let bad = """
            [network]
            mode = "allowlist"
            egress = ["ok.example", "*.example", "bad host", "x.example:0", "y.example:http", "[::1"]
            allow_private = ["10.0.0.0/33", "nope"]
            max_connections = 0
            max_bytes_per_hour = "1KiB"
            """
        let hint = "write a host name (files.example.org), *.domain, or either with :PORT"
        let got = try policyErrors(bad)
        #expect(
            got == [
                "p.toml:3: network.egress: \"*.example\": *. must be followed by a domain such as example.net (hint: \(hint))",
                "p.toml:3: network.egress: \"bad host\" is not a host name, *.domain or address (with an optional :port); names are letters, digits, - and . (hint: \(hint))",
                "p.toml:3: network.egress: \"x.example:0\": port 0 is not in 1...65535 (hint: \(hint))",
                "p.toml:3: network.egress: \"y.example:http\": the port must be a number (hint: \(hint))",
                "p.toml:3: network.egress: \"[::1\" has no closing ] (hint: \(hint))",
                "p.toml:4: network.allow_private: \"10.0.0.0/33\": the prefix length must be 0...32 (hint: write a CIDR such as 10.20.0.0/16)",
                "p.toml:4: network.allow_private: \"nope\" is not an address range such as 10.20.0.0/16 (hint: write a CIDR such as 10.20.0.0/16)",
                "p.toml:5: network.max_connections: 0 is out of range (hint: use 1...10000)",
                "p.toml:6: network.max_bytes_per_hour: \"1KiB\" is out of range (hint: use 1MiB...1024TiB)",
            ], "\(got.joined(separator: "\n"))")
    }

    @Test func aNetworkSectionResolvesAndRendersWhole() throws {
        let policy = try loadPolicy(
            """
            [network]
            mode = "allowlist"
            egress = ["Packages.Example.org.", "*.cdn.example.net", "internal.example:8443", "[2001:db8::1]:8443"]
            allow_private = ["10.20.0.0/16", "fd00::/8"]
            max_connections = 8
            max_bytes_per_hour = "1GiB"
            """)
        let rules = policy.egressRules
        #expect(rules.mode == .allowlist)
        #expect(
            rules.egress.map(\.description) == [
                "packages.example.org", "*.cdn.example.net", "internal.example:8443", "[2001:db8::1]:8443",
            ])
        #expect(rules.allowPrivate.map(\.description) == ["10.20.0.0/16", "fd00::/8"])
        #expect(rules.maxConnections == 8 && rules.maxBytesPerHour == 1 << 30)
        #expect(rules.refusal(host: "packages.example.org", port: 443) == nil)
        #expect(rules.refusal(host: "PACKAGES.example.org.", port: 80) == nil)
        #expect(rules.refusal(host: "a.cdn.example.net", port: 443) == nil)
        #expect(rules.refusal(host: "cdn.example.net", port: 443)?.rule == "not_allowed")
        #expect(rules.refusal(host: "internal.example", port: 443)?.rule == "port")
        #expect(rules.refusal(host: "internal.example", port: 8443) == nil)
        #expect(rules.refusal(host: "2001:db8::1", port: 8443) == nil)
        #expect(rules.refusal(host: "x", address: IPAddress("10.20.3.4")!) == nil)
        #expect(rules.refusal(host: "x", address: IPAddress("10.21.0.1")!)?.rule == "private_address")
        #expect(rules.refusal(host: "x", address: IPAddress("::ffff:169.254.169.254")!)?.rule == "private_address")
        #expect(rules.refusal(host: "x", address: IPAddress("fd12::1")!) == nil)
        #expect(rules.refusal(host: "x", address: IPAddress("93.184.216.34")!) == nil)
        let rendered = PolicyRenderer.body(policy)
        #expect(
            rendered.contains(
                """
                [network]
                mode = "allowlist"
                egress = ["packages.example.org", "*.cdn.example.net", "internal.example:8443", "[2001:db8::1]:8443"]
                allow_private = ["10.20.0.0/16", "fd00::/8"]
                max_connections = 8
                max_bytes_per_hour = "1GiB"
                """), "\(rendered)")
    }

    @Test func unterminatedString() throws {
        #expect(
            try policyErrors("rootfs = \"minimal\n") == [
                "p.toml:1: rootfs: unterminated string (hint: close it with \" on the same line)"
            ])
    }

    @Test func duplicateKeyAndTable() throws {
        #expect(
            try policyErrors("[limits]\npids = 10\npids = 20\n") == [
                "p.toml:3: limits.pids: duplicate key \"pids\" (hint: it is already set on line 2; keep one)"
            ])
        #expect(
            try policyErrors("[limits]\npids = 10\n\n[limits]\ncpus = 2\n") == [
                "p.toml:4: limits: table [limits] is defined twice; see line 1 (hint: each table may have one [header]; merge the two)"
            ])
    }

    @Test func unsupportedTOMLIsRefusedNotGuessed() throws {
        #expect(
            try policyErrors("limits.cpus = 2\n") == [
                "p.toml:1: limits: dotted keys are not supported (hint: use a [table] header instead)"
            ])
        #expect(
            try policyErrors("description = \"\"\"\nmany\n\"\"\"\n") == [
                "p.toml:1: description: multi-line strings are not supported (hint: use one line)"
            ])
        #expect(
            try policyErrors("rootfs = minimal\n") == [
                "p.toml:1: rootfs: \"minimal\" is not a valid value (hint: strings need quotes, e.g. \"minimal\")"
            ])
    }

    @Test func badMounts() throws {
        let text = """
            [[mount]]
            source = "opt/go"
            target = "/opt/go"

            [[mount]]
            source = "/opt/rust"
            target = "/proc/rust"

            [[mount]]
            source = "/"
            target = "/host"

            [[mount]]
            target = "/x"
            """
        #expect(
            try policyErrors(text) == [
                "p.toml:2: mount[1].source: \"opt/go\" is not a canonical absolute path (hint: start with /, and use no '.', '..', '//' or trailing /)",
                "p.toml:7: mount[2].target: \"/proc/rust\" is managed by the sandbox (hint: choose a target outside /proc, /sys, /dev, /tmp, /workspace)",
                "p.toml:10: mount[3].source: mounting \"/\" would expose the host (hint: mount a specific directory of files)",
                "p.toml:13: mount[4].source: missing key \"source\" (hint: name the host directory to mount)",
            ])
    }

    @Test func badEnvironment() throws {
        #expect(
            try policyErrors("[env]\npass = [\"TERM\", \"1X\"]\n[env.set]\nTERM = \"dumb\"\n") == [
                "p.toml:2: env.pass: \"1X\" is not a valid variable name (hint: use letters, digits and _, not starting with a digit)"
            ])
        #expect(
            try policyErrors("[env]\npass = [\"TERM\"]\n[env.set]\nTERM = \"dumb\"\n") == [
                "p.toml:2: env.pass: \"TERM\" is both passed through and set (hint: remove it from env.pass or from [env.set])"
            ])
    }

    @Test func seccompRulesWithDifferentActionsForOneCall() throws {
        let text = """
            [[seccomp.rule]]
            syscalls = ["socket"]
            action = "allow"
            args = [{ index = 0, op = "masked_eq", mask = 0xffffffff, value = 2 }]

            [[seccomp.rule]]
            syscalls = ["socket"]
            action = "errno"
            errno = "EAFNOSUPPORT"
            args = [{ index = 0, op = "masked_eq", mask = 0xffffffff, value = 17 }]
            """
        #expect(
            try policyErrors(text) == [
                "p.toml:6: seccomp.rule[2]: socket has rules with different actions (allow, errno(EAFNOSUPPORT)) (hint: libseccomp gives overlapping conditions no order; use one action per system call)"
            ])
    }

    @Test func bypassableSeccompAllowRule() throws {
        let text = """
            [[seccomp.rule]]
            syscalls = ["socket"]
            action = "allow"
            args = [{ index = 0, op = "ne", value = 40 }]
            """
        #expect(
            try policyErrors(text) == [
                "p.toml:1: seccomp.rule[1]: an allow rule with \"ne\" can be bypassed (hint: a caller can set the upper 32 bits of the argument; list allowed values with masked_eq)"
            ])
    }

    @Test func badSeccompRuleFields() throws {
        let text = """
            [seccomp]
            default_errno = "ENOPE"

            [[seccomp.rule]]
            syscalls = ["clone"]
            action = "kill"
            args = [{ index = 6, op = "between", value = 1 }]
            """
        #expect(
            try policyErrors(text) == [
                "p.toml:2: seccomp.default_errno: unknown errno \"ENOPE\" (hint: use a name such as EPERM or ENOSYS, or a number 1...4095)",
                "p.toml:6: seccomp.rule[1].action: unknown action \"kill\" (hint: use \"allow\" or \"errno\")",
                "p.toml:7: seccomp.rule[1].args[1].index: 6 is out of range (hint: use 0...5)",
                "p.toml:7: seccomp.rule[1].args[1].op: unknown comparison \"between\" (hint: use one of eq, ne, lt, le, gt, ge, masked_eq)",
            ])
    }

    @Test func listedAndRuledAtOnce() throws {
        #expect(
            try policyErrors("[seccomp]\nallow = [\"ptrace\"]\ndeny = [\"ptrace\"]\n") == [
                "p.toml:3: seccomp.deny: \"ptrace\" is in both allow and deny (hint: keep it in one of them)"
            ])
    }

    @Test func fileLevelProblems() throws {
        let directory = try PolicyDirectory()
        #expect(
            directory.errors(loading: "ghost") == [
                "ghost.toml:0: -: no policy named \"ghost\" (hint: policies are the *.toml files in \(directory.path))"
            ])
        let bytes = Array("rootfs = \"x".utf8) + [0xff, 0x22, 0x0a]
        try Data(bytes).write(to: URL(fileURLWithPath: directory.file("bin")))
        #expect(
            directory.errors(loading: "bin") == [
                "bin.toml:0: -: the file is not valid UTF-8 (hint: save it as UTF-8)"
            ])
    }
}
