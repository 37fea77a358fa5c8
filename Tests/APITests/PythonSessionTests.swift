import API
import Foundation
import HTTPTypes
import HummingbirdTesting
import Sandbox
import TestSupport
import Testing

@testable import Host

/// Python sessions in the devtools image (python3 with numpy, pandas, matplotlib), through
/// the API: state across runs, rich outputs, errors, interrupts, OOM and restart.
@Suite(
    .serialized,
    .enabled(
        if: LiveHost.available && FileManager.default.fileExists(atPath: LiveHost.rootfs + "/devtools/.corral-rootfs"),
        "needs the devtools image: `make test-devtools` builds it and runs this suite"))
struct PythonSessionTests {
    static let files = ["data.csv": "name,v\na,1\nb,2\nc,3\n"]

    /// A host whose project `py` runs in the devtools image, with `memory` as its limit.
    static func run(
        memory: String = "1GiB", _ body: @Sendable (any TestClientProtocol, CorralHost) async throws -> Void
    ) async throws {
        try await LiveHost.run { client, host in
            try await LiveHost.writePolicies(
                ["py": "extends = \"default\"\nrootfs = \"devtools\"\n[limits]\nmemory = \"\(memory)\"\n"], to: host)
            let upload = try await client.call(
                .put, "/v1/projects/py/archive?policy=py", raw: try LiveHost.archive(files))
            #expect(upload.status == .created, "\(upload.text)")
            try await body(client, host)
        }
    }

    static func create(_ client: any TestClientProtocol) async throws -> String {
        let made = try await client.call(.post, "/v1/projects/py/sessions", json: ["kind": "python"])
        #expect(made.status == .created, "\(made.text)")
        #expect(made.json["interpreter"]?.stringValue?.hasPrefix("python 3.") == true, "\(made.text)")
        return try #require(made.json["session_id"]?.stringValue, "\(made.text)")
    }

    static func run(_ client: any TestClientProtocol, _ session: String, _ code: String, extra: [String: JSON] = [:])
        async throws -> JSON
    {
        var body: [String: JSON] = ["input": .string(code)]
        body.merge(extra) { _, new in new }
        let ran = try await client.call(.post, "/v1/projects/py/sessions/\(session)/run", json: .object(body))
        #expect(ran.status == .ok, "\(ran.text)")
        return ran.json
    }

    @Test func variablesDataFramesFiguresAndErrorsComeBackAndTheSessionSurvives() async throws {
        try await Self.run { client, _ in
            let session = try await Self.create(client)
            let first = try await Self.run(client, session, "x = 41\nprint('set')\nx + 1")
            #expect(first["status"] == "completed")
            #expect(first["result"] == "42")
            #expect(first["stdout"] == "set\n")
            #expect(first["error"] == .null)
            let frame = try await Self.run(client, session, "import pandas as pd\ndf = pd.read_csv('data.csv')")
            #expect(frame["result"] == .null)
            #expect(frame["error"] == .null, "\(frame)")
            let total = try await Self.run(client, session, "int(df['v'].sum())")
            #expect(total["result"] == "6")
            let shown = try await Self.run(client, session, "df")
            let mimes = (shown["outputs"]?.arrayItems ?? []).compactMap { $0["mime_type"]?.stringValue }
            #expect(mimes == ["text/html", "text/plain"])
            #expect(shown["outputs"]?.arrayItems?.first?["data"]?.stringValue?.contains("<table") == true)
            #expect(shown["result"]?.stringValue?.contains("name  v") == true)

            let plot = try await Self.run(
                client, session,
                "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()\nplt.bar(['a'], [1])\nNone")
            let images = (plot["outputs"]?.arrayItems ?? []).filter { $0["mime_type"] == "image/png" }
            // One from show(), one left open at the end of the run.
            #expect(images.count == 2, "\(plot)")
            for image in images {
                let png = try #require(Data(base64Encoded: image["data"]?.stringValue ?? ""))
                #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
            }
            #expect(plot["stderr"] == "", "matplotlib warned: \(plot["stderr"] ?? .null)")

            let failed = try await Self.run(client, session, "def f():\n    return 1 / 0\nf()")
            #expect(failed["status"] == "completed")
            #expect(failed["error"]?["name"] == "ZeroDivisionError")
            #expect(failed["error"]?["value"] == "division by zero")
            let traceback = failed["error"]?["traceback"]?.stringValue ?? ""
            #expect(traceback.hasPrefix("Traceback (most recent call last):\n"), "\(traceback)")
            #expect(traceback.contains("line 2, in f") && !traceback.contains("<string>"), "\(traceback)")
            #expect(try await Self.run(client, session, "x")["result"] == "41")

            let restarted = try await client.call(.post, "/v1/projects/py/sessions/\(session)/restart", json: [:])
            #expect(restarted.status == .ok)
            let cleared = try await Self.run(client, session, "x")
            #expect(cleared["error"]?["name"] == "NameError")
        }
    }

    @Test func aTimeoutRaisesKeyboardInterruptAndKeepsTheVariables() async throws {
        try await Self.run { client, _ in
            let session = try await Self.create(client)
            _ = try await Self.run(client, session, "kept = 'yes'")
            let slow = try await Self.run(
                client, session, "import time\nprint('sleeping', flush=True)\ntime.sleep(30)",
                extra: ["timeout_s": 1])
            #expect(slow["status"] == "timed_out")
            #expect(slow["error"]?["name"] == "KeyboardInterrupt")
            #expect(slow["stdout"] == "sleeping\n")
            #expect(try await Self.run(client, session, "kept")["result"] == "'yes'")
            // A cancel's default signal (TERM) goes to what the run started; the interpreter
            // itself gets SIGINT, so the session survives this too.
            let long = try await Self.run(
                client, session, "import subprocess\nsubprocess.run(['sleep', '30'])", extra: ["wait_s": 0.3])
            let run = try #require(long["run_id"]?.stringValue)
            let cancelled = try await client.call(.post, "/v1/projects/py/sessions/\(session)/runs/\(run)/cancel")
            #expect(cancelled.json["status"] == "cancelled", "\(cancelled.text)")
            #expect(cancelled.json["error"]?["name"] == "KeyboardInterrupt")
            #expect(try await Self.run(client, session, "kept")["result"] == "'yes'")
        }
    }

    @Test func runningOutOfMemoryIsReportedAndRestartWorks() async throws {
        try await Self.run(memory: "256MiB") { client, _ in
            let session = try await Self.create(client)
            let oom = try await Self.run(
                client, session, "hog = bytearray(1 << 30)\nhog[::4096] = b'x' * len(hog[::4096])")
            #expect(oom["status"] == "session_lost", "\(oom)")
            #expect(oom["session"]?["oom_killed"] == true)
            let info = try await client.call(.get, "/v1/projects/py/sessions/\(session)")
            #expect(info.json["state"] == "dead")
            let restarted = try await client.call(.post, "/v1/projects/py/sessions/\(session)/restart", json: [:])
            #expect(restarted.json["state"] == "idle", "\(restarted.text)")
            #expect(try await Self.run(client, session, "1 + 1")["result"] == "2")
        }
    }
}

extension PythonSessionTests {
    /// The official Python MCP client calls the `python` tool twice in one MCP session: the
    /// variable of the first call is there in the second, whose figure comes back as an MCP
    /// image content block.
    static let client = """
        import asyncio, base64, json, sys
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        async def main(url, token):
            http = create_mcp_http_client(headers={"Authorization": "Bearer " + token})
            async with Client(streamable_http_client(url, http_client=http)) as client:
                tools = [tool.name for tool in (await client.list_tools()).tools]
                await client.call_tool("python", {"code": "values = [3, 1, 2]"})
                result = await client.call_tool(
                    "python", {"code": "import matplotlib.pyplot as plt\\nplt.plot(values)\\nplt.show()\\nsum(values)"})
                blocks = [block.model_dump(by_alias=True, mode="json", exclude_none=True) for block in result.content]
                print(json.dumps({
                    "tools": tools,
                    "types": [block["type"] for block in blocks],
                    "text": blocks[0].get("text"),
                    "mime": [block.get("mimeType") for block in blocks if block["type"] == "image"],
                    "png": [base64.b64decode(block["data"])[:8].hex() for block in blocks if block["type"] == "image"],
                }))

        asyncio.run(main(sys.argv[1], sys.argv[2]))
        """

    @Test(.enabled(if: PythonProcess.hasModule("mcp"), "needs the Python mcp package (make deps)"))
    func theOfficialMCPClientGetsTheFigureAsAnImageBlock() async throws {
        let tokens = TokenStore([(Principal(name: "agent", projects: ["py"], admin: false), "agent-secret-0123456789")])
        try await LiveHost.run(APIConfiguration(port: 0, tokens: tokens)) { client, host in
            try await LiveHost.writePolicies(["py": "extends = \"default\"\nrootfs = \"devtools\"\n"], to: host)
            _ = try await host.upload("py", archive: try LiveHost.archive(Self.files), policy: "py")
            let port = try #require(client.port)
            let output = try PythonProcess.run(
                Self.client, ["http://127.0.0.1:\(port)/v1/projects/py/mcp", "agent-secret-0123456789"])
            let seen = try JSON.parse(Array(output.utf8))
            #expect(seen["tools"]?.arrayItems?.contains("python") == true)
            #expect(seen["types"] == ["text", "image"], "\(seen)")
            #expect(seen["text"] == "6\n[1 image attached]")
            #expect(seen["mime"] == ["image/png"])
            #expect(seen["png"] == ["89504e470d0a1a0a"])
            // The MCP session's end (the client's DELETE) ended its python session.
            try await SessionTests.settle { false }
            #expect(await host.sessions.count == 0)
        }
    }
}

extension PythonSessionTests {
    @Test func aShellSessionInTheDevtoolsImageIsBashAndALoopInTheShellItselfIsInterrupted() async throws {
        try await Self.run { client, _ in
            let made = try await client.call(.post, "/v1/projects/py/sessions", json: ["kind": "shell"])
            #expect(made.json["interpreter"] == "bash", "\(made.text)")
            let session = try #require(made.json["session_id"]?.stringValue)
            func run(_ input: String, _ extra: [String: JSON] = [:]) async throws -> JSON {
                var body: [String: JSON] = ["input": .string(input)]
                body.merge(extra) { _, new in new }
                return try await client.call(.post, "/v1/projects/py/sessions/\(session)/run", json: .object(body)).json
            }
            let first = try await run("alias greet='echo hello'; set -o pipefail; n=0")
            #expect(first["exit_code"] == 0)
            let bashisms = try await run("[[ 1 -lt 2 ]] && greet; false | true; echo \"pipefail $?\"")
            #expect(bashisms["stdout"] == "hello\npipefail 1\n", "\(bashisms)")
            // A builtin loop has no process to signal: the shell's own INT trap ends it.
            let loop = try await run("while :; do n=$((n+1)); done", ["timeout_s": 1])
            #expect(loop["status"] == "timed_out", "\(loop)")
            #expect(loop["exit_code"] == 130)
            let counted = try await run("[[ $n -gt 0 ]] && echo counted")
            #expect(counted["stdout"] == "counted\n")
            // A venv activated in one run is the python of the next.
            let venv = try await run("python3 -m venv .venv && source .venv/bin/activate", ["timeout_s": 120])
            #expect(venv["exit_code"] == 0, "\(venv)")
            let active = try await run("command -v python; echo \"$VIRTUAL_ENV\"")
            #expect(active["stdout"] == "/workspace/.venv/bin/python\n/workspace/.venv\n")
        }
    }
}
