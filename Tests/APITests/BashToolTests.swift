import API
import Foundation
import HTTPTypes
import Host
import HummingbirdTesting
import TestSupport
import Testing

/// The bash tool and the exec route's `shell`, `cwd` and `env` over a real host: real
/// sandboxes, real shells. Models write bashisms; a command's leftover processes die with it.
@Suite(.serialized, .enabled(if: LiveHost.available, "needs root and rootfs/out/minimal (make rootfs-minimal)"))
struct BashToolTests {
    static var devtools: Bool { FileManager.default.fileExists(atPath: LiveHost.rootfs + "/devtools/.corral-rootfs") }

    static func bash(_ client: any TestClientProtocol, project: String = "demo", _ arguments: JSON) async throws
        -> Reply
    {
        try await client.call(.post, "/v1/projects/\(project)/tools/bash", json: arguments)
    }

    /// `[[ ]]` and `set -o pipefail` fail under dash; the bash tool runs bash where the image
    /// has it, and the exec route keeps /bin/sh unless asked.
    @Test(.enabled(if: devtools, "needs the devtools image (make rootfs)"))
    func theBashToolRunsBashismsOnAnImageWithBashAndExecStaysSh() async throws {
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(["dev": "extends = \"default\"\nrootfs = \"devtools\"\n"], to: host)
            let upload = try await client.call(
                .put, "/v1/projects/dev/archive?policy=dev", raw: try LiveHost.archive(["a.txt": "a\n"]))
            #expect(upload.status == .created, "\(upload.text)")
            let script = "[[ 1 -lt 2 ]] && echo yes; set -o pipefail; false | true; echo \"pipefail $?\"; echo \"$0\""
            let tool = try await Self.bash(client, project: "dev", ["command": .string(script)])
            #expect(tool.json["isError"] == false)
            #expect(tool.json["structuredContent"]?["stdout"] == "yes\npipefail 1\n/bin/bash\n", "\(tool.text)")
            #expect(tool.json["structuredContent"]?["exit_code"] == 0)
            let asked = try await client.call(
                .post, "/v1/projects/dev/exec", json: ["command": .string(script), "shell": "bash"])
            #expect(asked.json["stdout"] == "yes\npipefail 1\n/bin/bash\n", "\(asked.text)")
            let sh = try await client.call(
                .post, "/v1/projects/dev/exec", json: ["command": "[[ 1 -lt 2 ]] && echo yes; echo \"$0\""])
            #expect(sh.json["status"] == "completed")
            #expect(sh.json["stdout"] == "/bin/sh\n", "\(sh.text)")
            #expect(sh.json["stderr"] == "/bin/sh: 1: [[: not found\n")
            let named = try await client.call(
                .post, "/v1/projects/dev/exec", json: ["command": "echo \"$0\"", "shell": "sh"])
            #expect(named.json["stdout"] == "/bin/sh\n")
        }
    }

    /// The minimal image is busybox only: the bash tool falls back to its /bin/sh.
    @Test func onAnImageWithoutBashTheBashToolFallsBackToSh() async throws {
        try await LiveHost.run { client, _ in
            let tool = try await Self.bash(client, ["command": "echo \"$0\"; [[ 1 -lt 2 ]] && echo yes"])
            #expect(tool.json["isError"] == false)
            #expect(tool.json["structuredContent"]?["stdout"] == "/bin/sh\nyes\n", "\(tool.text)")
            let exec = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "echo \"$0\"", "shell": "bash"])
            #expect(exec.json["stdout"] == "/bin/sh\n")
            let zsh = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "true", "shell": "zsh"])
            #expect(zsh.status == .unprocessableContent)
            #expect(zsh.code == "invalid_argument")
            #expect(zsh.json["error"]?["message"] == "`shell` must be one of sh, bash, got \"zsh\"")
        }
    }

    @Test func theBashToolPassesEnvAndRefusesBadNamesLikeExec() async throws {
        try await LiveHost.run { client, _ in
            let tool = try await Self.bash(
                client, ["command": "echo \"$GREETING $OTHER_1\"", "env": ["GREETING": "hey", "OTHER_1": "there"]])
            #expect(tool.json["structuredContent"]?["stdout"] == "hey there\n", "\(tool.text)")
            let bad = try await Self.bash(client, ["command": "true", "env": ["1BAD": "x"]])
            #expect(bad.status == .unprocessableContent)
            #expect(bad.json["isError"] == true)
            #expect(
                bad.json["content"] == [["type": "text", "text": "Error: `env` has an invalid variable name \"1BAD\""]])
            let number = try await Self.bash(client, ["command": "true", "env": ["N": 1]])
            #expect(number.status == .unprocessableContent)
            #expect(number.json["structuredContent"]?["error"]?["message"] == "`env.N` must be a string, got a number")
        }
    }

    /// A relative cwd is under /workspace, for the tool and the routes alike; one that climbs
    /// out is refused where the job starts, and the tool says it is an error.
    @Test func aRelativeCwdIsUnderTheWorkspaceAndOneThatEscapesIsRefused() async throws {
        try await LiveHost.run { client, _ in
            let made = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "mkdir -p sub/deeper"])
            #expect(made.json["exit_code"] == 0)
            let tool = try await Self.bash(client, ["command": "pwd", "cwd": "sub"])
            #expect(tool.json["isError"] == false)
            #expect(tool.json["structuredContent"]?["stdout"] == "/workspace/sub\n", "\(tool.text)")
            let exec = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "pwd", "cwd": "./sub//deeper/"])
            #expect(exec.json["stdout"] == "/workspace/sub/deeper\n", "\(exec.text)")
            let submitted = try await client.call(
                .post, "/v1/projects/demo/jobs", json: ["command": "pwd", "cwd": "sub"])
            let id = try #require(submitted.json["job_id"]?.stringValue)
            let job = try await client.call(.get, "/v1/projects/demo/jobs/\(id)?wait=10")
            #expect(job.json["output"] == "/workspace/sub\n")

            let escape = try await Self.bash(client, ["command": "pwd", "cwd": "../.."])
            #expect(escape.status == .ok)
            #expect(escape.json["isError"] == true)
            #expect(escape.json["structuredContent"]?["status"] == "failed_to_start")
            #expect(escape.json["structuredContent"]?["error"] == "cwd is outside /workspace: /workspace/../..")
            #expect(
                escape.json["content"] == [
                    ["type": "text", "text": "[failed_to_start: cwd is outside /workspace: /workspace/../..]"]
                ])
            let routed = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "pwd", "cwd": "../.."])
            #expect(routed.json["status"] == "failed_to_start")
            #expect(routed.json["error"] == "cwd is outside /workspace: /workspace/../..")
            let missing = try await Self.bash(client, ["command": "pwd", "cwd": "nowhere"])
            #expect(missing.json["isError"] == true)
            #expect(missing.json["structuredContent"]?["error"] == "chdir: ENOENT")
        }
    }

    /// `server &` in a foreground command: the server dies with the command, and the model is
    /// told so, and where a server belongs.
    @Test func processesACommandLeavesRunningAreCountedStoppedAndExplained() async throws {
        try await LiveHost.run { client, _ in
            let start = ContinuousClock.now
            let tool = try await Self.bash(client, ["command": "sleep 30 & echo started"])
            #expect(ContinuousClock.now - start < .seconds(10))
            let message =
                "1 process the command left running was stopped with it: when a command's main process exits, everything it started is killed. Start a server or watcher as a background job instead (background: true, or POST /v1/projects/demo/jobs) and read its output with job_output; for a shell whose processes last between commands, use a session."
            #expect(tool.json["isError"] == false)
            #expect(tool.json["structuredContent"]?["status"] == "completed")
            #expect(tool.json["structuredContent"]?["stdout"] == "started\n")
            #expect(tool.json["structuredContent"]?["leftover_processes"] == 1)
            #expect(tool.json["structuredContent"]?["message"] == .string(message))
            guard case .array(let content)? = tool.json["content"] else {
                Issue.record("no content: \(tool.text)")
                return
            }
            let text = try #require(content.first?["text"]?.stringValue)
            #expect(text.hasPrefix("started\n[exit code 0, "))
            #expect(text.hasSuffix(" ms]\n" + message))

            let two = try await client.call(
                .post, "/v1/projects/demo/exec",
                json: [
                    // (busybox nohup would exit at once in the minimal image.) The pause lets both children
                    // get past their fork and exec before the main process exits and they are counted.
                    "command":
                        "sleep 30 >/dev/null 2>&1 & sleep 30 </dev/null >/dev/null 2>&1 & sleep 0.3; echo two"
                ])
            #expect(two.json["leftover_processes"] == 2)
            #expect(
                two.json["message"]?.stringValue?.hasPrefix(
                    "2 processes the command left running were stopped with it: ") == true)
            let none = try await client.call(.post, "/v1/projects/demo/exec", json: ["command": "echo alone"])
            #expect(none.json["leftover_processes"] == 0)
            #expect(none.json["message"] == .null)
            // A command stopped by its timeout was not left behind by the command: the
            // timeout's own message says the tree was killed.
            let timedOut = try await client.call(
                .post, "/v1/projects/demo/exec", json: ["command": "sleep 30 & sleep 30", "timeout_s": 1])
            #expect(timedOut.json["status"] == "timed_out")
            #expect(timedOut.json["leftover_processes"] == .null)
            #expect(
                timedOut.json["message"]?.stringValue?.hasPrefix("The command did not finish within its timeout")
                    == true)
        }
    }
}
