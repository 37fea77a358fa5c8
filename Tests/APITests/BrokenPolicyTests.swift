import API
import Foundation
import Host
import HummingbirdTesting
import Testing

/// An admin's edit breaks a policy file: projects naming the policy are told the file is
/// invalid and where, never that there is no such policy, and get its last good version
/// while there is one. Real hosts, real policy files, the loader's own messages.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct BrokenPolicyTests {
    static let brokenMemory =
        "egress.toml:3: limits.memory: \"1GB\" is not a size (hint: use a whole number with B, KiB, MiB, GiB or TiB, e.g. \"2GiB\")"

    /// `egress.toml` failed validation, and a project naming it was told there was no such
    /// policy: the admin looked for a missing file instead of the broken line.
    @Test func aPolicyFileThatNeverLoadedIsReportedInvalidWithItsFirstError() async throws {
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(
                ["egress": "extends = \"default\"\n[limits]\nmemory = \"1GB\"\n"], to: host)
            let archive = try LiveHost.archive(["a.txt": "a\n"])
            let reply = try await client.call(.put, "/v1/projects/e1/archive?policy=egress", raw: archive)
            #expect(reply.status == .unprocessableContent)
            #expect(reply.code == "invalid_policy")
            #expect(
                reply.json["error"]?["message"]
                    == .string(
                        "the file of policy \"egress\" is invalid and no good version of it has loaded: \(Self.brokenMemory)"
                    ))
            #expect(try await LiveHost.holds("e1", on: host, client) == false)
            // Several errors: the first three as the loader reports them, and how many more.
            try await LiveHost.writePolicies(
                [
                    "egress": """
                    [limits]
                    memory = "1GB"
                    pids = 0
                    cpus = "two"
                    tmpfs = "1G"
                    """
                ], to: host)
            let many = try await client.call(.put, "/v1/projects/e1/archive?policy=egress", raw: archive)
            #expect(
                many.json["error"]?["message"]
                    == .string(
                        "the file of policy \"egress\" is invalid and no good version of it has loaded: "
                            + "egress.toml:4: limits.cpus: expected a number, found a string (hint: write a number without quotes, e.g. 1.5); "
                            + Self.brokenMemory.replacingOccurrences(of: ":3:", with: ":2:")
                            + "; egress.toml:3: limits.pids: 0 is out of range (hint: use 8...4194304)"
                            + "; and 1 more (corral policy check lists them all)"))
            // A policy extending a broken one is invalid too, and says which file to fix,
            // without saying where the host keeps it.
            try await LiveHost.writePolicies(
                ["child": "extends = \"base\"\n", "base": "[limits]\nmemory = \"1GB\"\n"], to: host)
            let child = try await client.call(.put, "/v1/projects/e1/archive?policy=child", raw: archive)
            #expect(child.code == "invalid_policy")
            #expect(
                child.json["error"]?["message"]
                    == .string(
                        "the file of policy \"child\" is invalid and no good version of it has loaded: "
                            + "child.toml:1: extends: extends \"base\", which has errors (hint: fix base.toml first); "
                            + Self.brokenMemory.replacingOccurrences(of: "egress.toml:3:", with: "base.toml:2:")))
            // No file at all is still unknown.
            let unknown = try await client.call(.put, "/v1/projects/e1/archive?policy=nope", raw: archive)
            #expect(unknown.code == "unknown_policy")
            #expect(unknown.json["error"]?["message"] == "no such policy: nope")
        }
    }

    @Test func aPolicyBrokenByAnEditKeepsItsLastGoodVersionAndTheProjectIsToldSo() async throws {
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(
                ["egress": "extends = \"default\"\n[limits]\nmemory = \"512MiB\"\n"], to: host)
            let digest = try #require(await host.policies.policy(named: "egress")?.digest)
            try await LiveHost.writePolicies(
                ["egress": "extends = \"default\"\n[limits]\nmemory = \"1GB\"\n"], to: host)
            let warning =
                "the file of policy \"egress\" is invalid, so its last good version (\(digest)) is in force: \(Self.brokenMemory)"
            let archive = try LiveHost.archive(["a.txt": "a\n"])
            let reply = try await client.call(.put, "/v1/projects/e2/archive?policy=egress", raw: archive)
            #expect(reply.status == .created)
            #expect(reply.json["policy"] == "egress")
            #expect(reply.json["limits"]?["memory_bytes"] == "536870912")
            #expect(reply.json["policy_warning"] == .string(warning))
            #expect(try await client.call(.get, "/v1/projects/e2").json["policy_warning"] == .string(warning))
            let ran = try await client.call(.post, "/v1/projects/e2/exec", json: ["command": "cat a.txt"])
            #expect(ran.json["stdout"] == "a\n")
            // Fixed: the new version is in force and the warning is gone.
            try await LiveHost.writePolicies(
                ["egress": "extends = \"default\"\n[limits]\nmemory = \"256MiB\"\n"], to: host)
            let fixed = try await client.call(.get, "/v1/projects/e2")
            #expect(fixed.json["policy_warning"] == nil)
            #expect(fixed.json["limits"]?["memory_bytes"] == "268435456")
        }
    }
}
