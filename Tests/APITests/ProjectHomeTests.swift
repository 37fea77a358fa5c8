import Foundation
import Glibc
import HummingbirdTesting
import TestSupport
import Testing

@testable import API
@testable import Host
@testable import Sandbox

/// The project's writable home (`/home/agent`, kept at `.corral/home` in the workspace):
/// what npm, pip, git and `~/.cache` write survives a new sandbox, an eviction, a
/// replacement of the files and a restore, and nothing a job plants there can point the
/// host's bind mount anywhere else.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs)"))
struct ProjectHomeTests {
    static func exec(_ client: any TestClientProtocol, _ command: String) async throws -> JSON {
        try await ProjectLifecycleTests.exec(client, command)
    }

    @Test func theHomeIsWritableAndOutlivesSandboxEvictionReplaceAndRestore() async throws {
        try await LiveHost.run { client, host in
            let wrote = try await Self.exec(
                client,
                "echo \"$HOME\"; cd && mkdir -p .cache/pip && echo kept > .cache/pip/entry && echo hi > notes.txt"
                    + " && id -u && stat -c '%u %a' /home/agent")
            #expect(wrote["exit_code"] == 0, "\(wrote)")
            #expect(wrote["stdout"] == "/home/agent\n1000\n1000 755\n", "\(wrote)")
            let ignore = try await Self.exec(client, "cat /workspace/.corral/.gitignore | grep -v '^#'")
            #expect(ignore["stdout"] == "*\n", "\(ignore)")

            // A new sandbox over the same workspace.
            await host.pool.destroy("demo")
            #expect((try await Self.exec(client, "cat ~/notes.txt"))["stdout"] == "hi\n")

            // Written back and materialized again from the snapshot.
            try await host.evict("demo")
            #expect((try await Self.exec(client, "cat ~/notes.txt ~/.cache/pip/entry"))["stdout"] == "hi\nkept\n")

            // A named snapshot, a change, a restore: the home is reset with the files.
            let snap = try await client.call(.post, "/v1/projects/demo/snapshots", json: ["name": "before"])
            #expect(snap.status == .created, "\(snap.text)")
            _ = try await Self.exec(client, "echo changed > ~/notes.txt && touch ~/added")
            let restored = try await client.call(.post, "/v1/projects/demo/snapshots/before/restore")
            #expect(restored.status == .ok, "\(restored.text)")
            let after = try await Self.exec(client, "cat ~/notes.txt; ls ~")
            #expect(after["stdout"] == "hi\nnotes.txt\n", "\(after)")

            // New files: the project's home stays, whatever home the archive carried.
            let replaced = try await client.call(
                .put, "/v1/projects/demo/archive",
                raw: try LiveHost.archive(["README": "v2\n", ".corral/home/notes.txt": "from the archive\n"]))
            #expect(replaced.status == .ok, "\(replaced.text)")
            let kept = try await Self.exec(client, "cat ~/notes.txt README; ls /workspace")
            #expect(kept["stdout"] == "hi\nv2\nREADME\n", "\(kept)")
        }
    }

    @Test func fileToolsLeaveTheHomeOutUnlessAskedForIt() async throws {
        try await LiveHost.run(realFiles: true) { client, _ in
            _ = try await Self.exec(client, "echo needle > ~/needle.txt")
            let listed = try await client.call(.post, "/v1/projects/demo/tools/list_dir", json: ["path": "/workspace"])
            #expect(listed.status == .ok, "\(listed.text)")
            // Named once among what was left out, never listed.
            #expect(!listed.text.contains(#""path":".corral"#), "\(listed.text)")
            #expect(listed.text.contains("paths under .git, node_modules or .corral: .corral/."), "\(listed.text)")
            let grep = try await client.call(.post, "/v1/projects/demo/tools/grep", json: ["pattern": "needle"])
            #expect(!grep.text.contains("needle.txt"), "\(grep.text)")
            let inside = try await client.call(
                .post, "/v1/projects/demo/tools/list_dir", json: ["path": "/workspace/.corral/home"])
            #expect(inside.text.contains("needle.txt"), "\(inside.text)")
            let read = try await client.call(
                .post, "/v1/projects/demo/tools/read_file", json: ["path": "/workspace/.corral/home/needle.txt"])
            #expect(read.text.contains("needle"), "\(read.text)")
        }
    }

    @Test func aNewHomeStartsWithTheImagesTopLevelFilesOnce() throws {
        let workspace = try TemporaryDirectory()
        let seed = try TemporaryDirectory()
        try "alias ll='ls -l'\n".write(toFile: seed.path + "/.bashrc", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: seed.path + "/.config", withIntermediateDirectories: false)
        try FileManager.default.createSymbolicLink(atPath: seed.path + "/link", withDestinationPath: "/etc/passwd")
        let home = try #require(try ProjectHome.prepare(workspace: workspace.path, seed: seed.path))
        close(home)
        let made = workspace.path + "/.corral/home"
        #expect(try FileManager.default.contentsOfDirectory(atPath: made) == [".bashrc"])
        #expect(try String(contentsOfFile: made + "/.bashrc", encoding: .utf8) == "alias ll='ls -l'\n")
        // An existing home is the agent's: never seeded again.
        try FileManager.default.removeItem(atPath: made + "/.bashrc")
        close(try #require(try ProjectHome.prepare(workspace: workspace.path, seed: seed.path)))
        #expect(try FileManager.default.contentsOfDirectory(atPath: made) == [])
    }

    /// docs/THREATS.md, "Bad archives, paths and snapshots" (a job replaces `.corral` or `.corral/home` with a symlink): the host opens `.corral` and
    /// `.corral/home` without following links, so a job that swaps either for a link to a
    /// host path gets no home mount in its next sandbox, never the host's directory.
    @Test(arguments: [
        "rm -rf .corral/home && ln -s / .corral/home",
        "rm -rf .corral && ln -s /etc .corral",
        "rm -rf .corral/home && ln -s ../../../../../../../.. .corral/home",
        "rm -rf .corral && echo not a directory > .corral",
    ])
    func aPlantedLinkOrFileNeverBecomesTheHome(_ plant: String) async throws {
        try await LiveHost.run { client, host in
            _ = try await Self.exec(client, "echo mine > ~/mine")
            let planted = try await Self.exec(client, plant)
            #expect(planted["exit_code"] == 0, "\(planted)")
            await host.pool.destroy("demo")
            let seen = try await Self.exec(
                client, "ls -A /home/agent | wc -l; touch /home/agent/x 2>/dev/null && echo writable || echo read-only")
            #expect(seen["stdout"] == "0\nread-only\n", "\(seen)")
            // The host's own tree is untouched: nothing was made under / or /etc.
            #expect(!FileManager.default.fileExists(atPath: "/home/x"))
            #expect(!FileManager.default.fileExists(atPath: "/etc/home"))
            #expect(!FileManager.default.fileExists(atPath: "/etc/.gitignore"))
        }
    }
}
