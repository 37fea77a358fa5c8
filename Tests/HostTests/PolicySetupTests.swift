import Foundation
import Testing

@testable import Host

/// `[setup]`, `[setup.network]` and `[setup.limits]`: what a project's setup commands may
/// take and reach. Defaults (the policy's own `[network]` and the project's limits),
/// `extends`, bounds, the network checks, the rendering that loads back, and the digest.
@Suite struct PolicySetupTests {
    static let none = Policy.Network(mode: .none)

    // MARK: - Values

    @Test func absentOrEmptySectionsTakeTheDefaultsAndTheNetworkOfThePolicy() throws {
        for text in ["", "[setup]\n", "[setup]\n[setup.network]\n[setup.limits]\n"] {
            let policy = try loadPolicy(text)
            #expect(policy.setup == Policy.Setup(timeoutSeconds: 900, network: Self.none), "\(text)")
        }
        let open = try loadPolicy(
            "[network]\nmode = \"allowlist\"\negress = [\"api.example.org\"]\nmax_connections = 4\n")
        #expect(open.setup.network == open.network)
        #expect(open.setupEgressRules.refusal(host: "api.example.org", port: 443) == nil)
    }

    @Test func theShippedDefaultLeavesSetupToTheDefaults() throws {
        let policy = try PolicyLoader(directory: PolicyLoaderTests.packageRoot + "/policies").load(named: "default")
        #expect(policy.setup == Policy.Setup(timeoutSeconds: 900, network: Self.none))
    }

    @Test func valuesAreReadAndEachNetworkKeyLeftOutIsTheNetworksOwn() throws {
        let policy = try loadPolicy(
            """
            [network]
            mode = "allowlist"
            egress = ["api.example.org"]
            allow_private = ["10.1.0.0/16"]
            max_connections = 8

            [setup]
            timeout_s = 1200

            [setup.network]
            egress = ["pypi.org", "files.pythonhosted.org"]
            max_bytes_per_hour = "8GiB"

            [setup.limits]
            cpus = 2.5
            memory = "3GiB"
            pids = 1024
            """)
        let setup = policy.setup
        #expect(setup.timeoutSeconds == 1200)
        #expect(setup.cpus == 2.5 && setup.memoryBytes == 3 << 30 && setup.pids == 1024)
        #expect(setup.network.mode == .allowlist)
        #expect(setup.network.egress.map(\.description) == ["pypi.org", "files.pythonhosted.org"])
        #expect(setup.network.allowPrivate.map(\.description) == ["10.1.0.0/16"])
        #expect(setup.network.maxConnections == 8 && setup.network.maxBytesPerHour == 8 << 30)
        // The project's own network is untouched.
        #expect(policy.network.egress.map(\.description) == ["api.example.org"])
        let rules = policy.setupEgressRules
        #expect(rules.refusal(host: "pypi.org", port: 443) == nil)
        #expect(
            rules.refusal(host: "api.example.org", port: 443)?.message
                == "api.example.org is not in [setup.network] egress of policy \"p\" (\(rules.file)); an admin can add \"api.example.org\" (or \"*.example.org\") to egress"
        )
    }

    @Test func setupMayHaveNetworkWhereThePolicyHasNone() throws {
        let policy = try loadPolicy(
            "[setup.network]\nmode = \"allowlist\"\negress = [\"registry.npmjs.org\"]\nallow_private = [\"127.0.0.0/8\"]\n"
        )
        #expect(policy.network == Self.none)
        #expect(policy.setup.network.mode == .allowlist)
        #expect(policy.egressRules.refusal(host: "registry.npmjs.org", port: 443)?.rule == "network_none")
        #expect(policy.setupEgressRules.refusal(host: "registry.npmjs.org", port: 443) == nil)
        #expect(
            policy.egressRules.refusal(host: "registry.npmjs.org", port: 443)?.message.contains(
                "([network] mode = \"none\")") == true)
        let closed = try loadPolicy(
            "[network]\nmode = \"allowlist\"\negress = [\"api.example.org\"]\n[setup.network]\nmode = \"none\"\n")
        // Hosts mean nothing without allowlist mode: they are not kept, so the rendering loads.
        #expect(closed.setup.network == Self.none)
        #expect(
            closed.setupEgressRules.refusal(host: "api.example.org", port: 443)?.message
                == "policy \"p\" (\(closed.setupEgressRules.file)) gives this project no network ([setup.network] mode = \"none\"); an admin can set mode = \"allowlist\" with egress = [\"api.example.org\"]"
        )
    }

    @Test func aChildInheritsWhatItDoesNotSay() throws {
        let base = [
            "base": "[setup]\ntimeout_s = 60\n[setup.network]\nmode = \"public\"\n[setup.limits]\nmemory = \"2GiB\"\n"
        ]
        let child = try loadPolicy("extends = \"base\"\n[setup.limits]\npids = 64\n", others: base)
        #expect(
            child.setup
                == Policy.Setup(
                    timeoutSeconds: 60, network: Policy.Network(mode: .public), memoryBytes: 2 << 30, pids: 64))
    }

    @Test func theRenderingSpellsEverythingOutAndLoadsBackToTheSamePolicy() throws {
        let text = """
            [network]
            mode = "allowlist"
            egress = ["api.example.org"]
            [setup]
            timeout_s = 300
            [setup.network]
            egress = ["pypi.org:443"]
            [setup.limits]
            memory = "2GiB"
            """
        let policy = try loadPolicy(text)
        let body = PolicyRenderer.body(policy)
        #expect(
            body.contains(
                """
                [setup]
                timeout_s = 300

                [setup.network]
                mode = "allowlist"
                egress = ["pypi.org:443"]
                allow_private = []
                max_connections = 64
                max_bytes_per_hour = "4GiB"

                [setup.limits]
                memory = "2GiB"

                """), "\(body)")
        let again = try loadPolicy(PolicyRenderer.document(policy))
        #expect(again.setup == policy.setup && again.digest == policy.digest)
        // Setup is part of what the digest covers.
        #expect(try loadPolicy(text.replacingOccurrences(of: "300", with: "301")).digest != policy.digest)
    }

    // MARK: - Refused

    @Test func boundsAndTypesAreRefusedAtTheirLines() throws {
        let text = """
            [setup]
            timeout_s = 0
            [setup.network]
            max_connections = 0
            [setup.limits]
            cpus = 0
            memory = "1MiB"
            pids = 4
            """
        #expect(
            try policyErrors(text) == [
                "p.toml:2: setup.timeout_s: 0 is out of range (hint: use 1...604800)",
                "p.toml:4: setup.network.max_connections: 0 is out of range (hint: use 1...10000)",
                "p.toml:6: setup.limits.cpus: 0.0 is out of range (hint: use 0.01...1024.0)",
                "p.toml:7: setup.limits.memory: \"1MiB\" is out of range (hint: use 16MiB...1TiB)",
                "p.toml:8: setup.limits.pids: 4 is out of range (hint: use 8...4194304)",
            ])
        #expect(
            try policyErrors("[setup]\ntimeout_s = \"15m\"\n") == [
                "p.toml:2: setup.timeout_s: expected an integer, found a string (hint: write a whole number without quotes, e.g. 1)"
            ])
        #expect(
            try policyErrors("setup = [\"pip install\"]\n") == [
                "p.toml:1: setup: expected a table, found an array (hint: write it as a [setup] section)"
            ])
    }

    @Test func unknownKeysNameTheSection() throws {
        #expect(
            try policyErrors("[setup]\ntimeout = 900\n") == [
                "p.toml:2: setup.timeout: unknown key \"timeout\" in [setup] (hint: did you mean \"timeout_s\"?)"
            ])
        #expect(
            try policyErrors("[setup.limits]\nworkspace = \"1GiB\"\n") == [
                "p.toml:2: setup.limits.workspace: unknown key \"workspace\" in [setup.limits] (hint: allowed here: cpus, memory, pids)"
            ])
        #expect(
            try policyErrors("[setup.network]\nmode = \"host\"\n") == [
                "p.toml:2: setup.network.mode: unknown network mode \"host\" (hint: use \"none\", \"allowlist\" (the hosts in egress) or \"public\" (any public address))"
            ])
    }

    @Test func theNetworkChecksApplyToWhatTheSectionWrites() throws {
        // Hosts beside a mode that does not use them, whichever section set the mode.
        #expect(
            try policyErrors("[setup.network]\negress = [\"pypi.org\"]\n") == [
                "p.toml:2: setup.network.egress: egress names hosts but [setup.network] mode is \"none\" (hint: set mode = \"allowlist\" to allow exactly these hosts, or remove egress)"
            ])
        #expect(
            try policyErrors(
                "[network]\nmode = \"allowlist\"\negress = [\"a.example\"]\n[setup.network]\nmode = \"public\"\negress = [\"b.example\"]\n"
            ) == [
                "p.toml:6: setup.network.egress: egress names hosts but [setup.network] mode is \"public\" (hint: set mode = \"allowlist\" to allow exactly these hosts, or remove egress)"
            ])
        // An allowlist with nothing on it, from either key of the section.
        let nothing =
            "(hint: list hosts in egress, e.g. egress = [\"packages.example.org\"], or use mode = \"none\")"
        #expect(
            try policyErrors("[setup.network]\nmode = \"allowlist\"\n") == [
                "p.toml:2: setup.network.mode: mode \"allowlist\" with no egress entries allows nothing \(nothing)"
            ])
        #expect(
            try policyErrors(
                "[network]\nmode = \"allowlist\"\negress = [\"a.example\"]\n[setup.network]\negress = []\n") == [
                    "p.toml:5: setup.network.egress: mode \"allowlist\" with no egress entries allows nothing \(nothing)"
                ])
        // A broken [network] is reported once, there, not again for the setup that inherits it.
        #expect(
            try policyErrors("[network]\nmode = \"allowlist\"\n") == [
                "p.toml:2: network.mode: mode \"allowlist\" with no egress entries allows nothing \(nothing)"
            ])
    }
}
