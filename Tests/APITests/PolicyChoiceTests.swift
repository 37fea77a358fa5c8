import API
import Foundation
import Host
import HummingbirdTesting
import Testing

/// "Choosing one's own sandbox": a token registers or uploads projects only under the
/// policies its tokens-file entry allows; whatever it asks of a policy it may not use, the
/// host is left as it was. Real hosts, real policy files.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct PolicyChoiceTests {
    static let agent = "agent-secret-0123456789"
    static let strict = "strict-secret-0123456789"
    static let ops = "ops-secret-0123456789"
    static let worker = "worker-secret-0123456789"

    static var tokens: TokenStore {
        TokenStore([
            (Principal(name: "agent", projects: ["*"], admin: false), agent),
            (Principal(name: "strict", projects: ["*"], admin: false, policies: ["strict-*"]), strict),
            (Principal(name: "ops", projects: ["*"], admin: true), ops),
            (Principal(name: "cluster", projects: ["*"], admin: true, forwarder: true), worker),
        ])
    }

    /// An agent token once registered its project under an admin's policy that allows
    /// `ptrace`, because any token could name any policy.
    @Test func aTokenWithoutPoliciesMayUseOnlyTheDefaultPolicy() async throws {
        try await LiveHost.run(APIConfiguration(port: 0, tokens: Self.tokens)) { client, host in
            try await LiveHost.writePolicies(
                ["open": "extends = \"default\"\n\n[seccomp]\nallow = [\"ptrace\"]\n"], to: host)
            let archive = try LiveHost.archive(["a.txt": "a\n"])
            let source = try #require(
                try await client.call(.get, "/v1/projects/demo", token: Self.ops).json["source"]?.stringValue)
            let refusal = "token \"agent\" may not use policy \"open\"; the policies it may use: default"
            let registered = try await client.call(
                .put, "/v1/projects/p1", json: ["source": .string(source), "policy": "open"], token: Self.agent)
            #expect(registered.status == .forbidden)
            #expect(registered.code == "forbidden")
            #expect(registered.json["error"]?["message"] == .string(refusal))
            let uploaded = try await client.call(
                .put, "/v1/projects/p1/archive?policy=open", raw: archive, token: Self.agent)
            #expect(uploaded.status == .forbidden)
            #expect(uploaded.json["error"]?["message"] == .string(refusal))
            #expect(try await LiveHost.holds("p1", on: host, client, token: Self.ops) == false)
            // An existing project is not moved to the policy either.
            let moved = try await client.call(
                .put, "/v1/projects/demo/archive?policy=open", raw: archive, token: Self.agent)
            #expect(moved.status == .forbidden)
            #expect(try await client.call(.get, "/v1/projects/demo", token: Self.ops).json["policy"] == "default")
            // The default policy, named or not, is the agent's.
            let named = try await client.call(
                .put, "/v1/projects/p2/archive?policy=default", raw: archive, token: Self.agent)
            #expect(named.status == .created)
            #expect(named.json["policy"] == "default")
            let unnamed = try await client.call(.put, "/v1/projects/p3/archive", raw: archive, token: Self.agent)
            #expect(unnamed.status == .created)
            #expect(unnamed.json["policy"] == "default")
        }
    }

    @Test func aTokensPolicyGlobsAllowMatchingPoliciesOnly() async throws {
        try await LiveHost.run(APIConfiguration(port: 0, tokens: Self.tokens)) { client, host in
            try await LiveHost.writePolicies(
                ["strict-a": "extends = \"default\"\n", "open": "extends = \"default\"\n"], to: host)
            let archive = try LiveHost.archive(["a.txt": "a\n"])
            let allowed = try await client.call(
                .put, "/v1/projects/s1/archive?policy=strict-a", raw: archive, token: Self.strict)
            #expect(allowed.status == .created)
            #expect(allowed.json["policy"] == "strict-a")
            let open = try await client.call(
                .put, "/v1/projects/s2/archive?policy=open", raw: archive, token: Self.strict)
            #expect(open.status == .forbidden)
            #expect(open.code == "forbidden")
            #expect(
                open.json["error"]?["message"]
                    == "token \"strict\" may not use policy \"open\"; the policies it may use: strict-*")
            // Naming no policy asks for the default, which its globs do not match.
            let unnamed = try await client.call(.put, "/v1/projects/s2/archive", raw: archive, token: Self.strict)
            #expect(unnamed.status == .forbidden)
            #expect(
                unnamed.json["error"]?["message"]
                    == "token \"strict\" may not use the host's default policy \"default\", which a project naming no policy gets; the policies it may use: strict-*"
            )
            #expect(try await LiveHost.holds("s2", on: host, client, token: Self.ops) == false)
            // A policy its globs match but no file defines is unknown, as for anyone.
            let missing = try await client.call(
                .put, "/v1/projects/s2/archive?policy=strict-b", raw: archive, token: Self.strict)
            #expect(missing.status == .unprocessableContent)
            #expect(missing.code == "unknown_policy")
        }
    }

    @Test func adminsAndForwardedCallsMayUseEveryPolicy() async throws {
        try await LiveHost.run(APIConfiguration(port: 0, tokens: Self.tokens)) { client, host in
            try await LiveHost.writePolicies(["open": "extends = \"default\"\n"], to: host)
            let archive = try LiveHost.archive(["a.txt": "a\n"])
            let admin = try await client.call(
                .put, "/v1/projects/o1/archive?policy=open", raw: archive, token: Self.ops)
            #expect(admin.status == .created)
            #expect(admin.json["policy"] == "open")
            // A worker of a cluster: the API node checked the agent's policies; the worker
            // takes the call from the worker token, whoever it is for.
            let forwarded = try await client.call(
                .put, "/v1/projects/o2/archive?policy=open", raw: archive, token: Self.worker,
                headers: ["X-Corral-On-Behalf-Of": "agent", "X-Corral-Caller-Rate": "50 100"])
            #expect(forwarded.status == .created)
            #expect(forwarded.json["policy"] == "open")
        }
        // An open loopback server's anonymous caller is an admin.
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(["open": "extends = \"default\"\n"], to: host)
            let anonymous = try await client.call(
                .put, "/v1/projects/o3/archive?policy=open", raw: try LiveHost.archive(["a.txt": "a\n"]))
            #expect(anonymous.status == .created)
            #expect(anonymous.json["policy"] == "open")
        }
    }
}
