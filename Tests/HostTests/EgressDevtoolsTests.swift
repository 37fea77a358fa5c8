import Foundation
import Host
import Sandbox
import TestSupport
import Testing

/// The tools agents use, unmodified, through the egress proxy: curl over HTTPS with a CA of
/// the test's own, pip installing a wheel the test built from a PEP 503 index, and git
/// cloning over HTTP, all from servers on the host's loopback. Needs the devtools image
/// (`make rootfs-devtools`); `make test-devtools` builds it and runs these.
@Suite(
    .serialized,
    .enabled(
        if: FileManager.default.fileExists(atPath: TestPaths.rootfsDirectory + "/devtools/.corral-rootfs"),
        "needs the devtools image: `make test-devtools` builds it and runs this suite"))
struct EgressDevtoolsTests {
    /// Runs a host tool; its output, or a thrown error with it.
    @discardableResult
    static func tool(_ arguments: [String], in directory: String? = nil) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw TestSupportError("\(arguments.joined(separator: " ")): \(text)")
        }
        return text
    }

    /// A Python server on 127.0.0.1 serving `root` over HTTP, or HTTPS with `certificate`.
    final class Server: @unchecked Sendable {
        let process = Process()
        let port: Int

        init(root: String, certificate: (cert: String, key: String)? = nil) throws {
            port = try LoopbackPort.free()
            var script = """
                import functools, http.server, ssl, sys
                h = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[1])
                h.log_message = lambda *a: None
                s = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), h)
                """
            if let certificate {
                script += """

                    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    c.load_cert_chain("\(certificate.cert)", "\(certificate.key)")
                    s.socket = c.wrap_socket(s.socket, server_side=True)
                    """
            }
            script += "\ns.serve_forever()\n"
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = ["python3", "-c", script, root, String(port)]
            process.standardOutput = FileHandle.nullDevice
            process.standardError = FileHandle.nullDevice
            try process.run()
            for _ in 0..<100 where LoopbackPort.isFree(port) { usleep(50_000) }
        }

        /// SIGKILL: the test runner blocks SIGTERM and children inherit the mask.
        func stop() {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// A host over the devtools image with one project whose policy allows `localhost` on
    /// `ports` (resolved on the host to 127.0.0.1, which allow_private permits).
    static func host(_ data: TemporaryDirectory, ports: [Int]) async throws -> CorralHost {
        let policies = data.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        let egress = ports.map { "\"localhost:\($0)\"" }.joined(separator: ", ")
        try """
        rootfs = "devtools"
        [network]
        mode = "allowlist"
        egress = [\(egress)]
        allow_private = ["127.0.0.0/8"]
        [limits]
        memory = "1GiB"
        """.write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        let host = try await CorralHost.open(
            HostConfiguration(
                dataDirectory: data.path + "/var", rootfsDirectory: TestPaths.rootfsDirectory,
                policiesDirectory: policies, cgroups: TestCgroups.driver))
        _ = try await host.upload("dev", archive: try ArchiveFixture.tarGz(["README": "dev\n"]))
        return host
    }

    /// Runs `command` in the project, stdout and stderr together. The upstream is named
    /// `localhost`, which the default NO_PROXY sends around the proxy; the job clears it.
    static func run(_ host: CorralHost, _ command: String) async throws -> (exit: Int32?, output: String) {
        let snap = try await host.jobService.run(
            JobRequest(
                project: "dev", command: "{ \(command)\n} 2>&1", environment: ["NO_PROXY": "", "no_proxy": ""],
                timeoutSeconds: 120),
            budget: .seconds(150))
        return (snap.record.result?.exitCode, snap.record.result?.stdout ?? snap.record.error ?? "")
    }

    /// A wheel of package `corral-probe` (whose module holds `ANSWER = 42`), built here, in a
    /// PEP 503 simple index under `site/simple/`.
    static func wheelIndex(in site: String) throws {
        try FileManager.default.createDirectory(
            atPath: site + "/simple/corral-probe", withIntermediateDirectories: true)
        try Self.tool(
            [
                "python3", "-c",
                """
                import base64, hashlib, sys, zipfile
                files = {
                    "corral_probe/__init__.py": "ANSWER = 42\\n",
                    "corral_probe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\\nName: corral-probe\\nVersion: 1.0\\n",
                    "corral_probe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\\nGenerator: corral-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n",
                }
                record = []
                path = sys.argv[1] + "/simple/corral-probe/corral_probe-1.0-py3-none-any.whl"
                with zipfile.ZipFile(path, "w") as z:
                    for name, text in files.items():
                        data = text.encode()
                        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                        record.append(f"{name},sha256={digest},{len(data)}")
                        z.writestr(name, data)
                    record.append("corral_probe-1.0.dist-info/RECORD,,")
                    z.writestr("corral_probe-1.0.dist-info/RECORD", "\\n".join(record) + "\\n")
                """, site,
            ])
        try """
        <!DOCTYPE html><html><body>
        <a href="corral_probe-1.0-py3-none-any.whl">corral_probe-1.0-py3-none-any.whl</a>
        </body></html>
        """.write(toFile: site + "/simple/corral-probe/index.html", atomically: true, encoding: .utf8)
    }

    @Test func curlOverTLSPipInstallAndGitCloneGoThroughTheProxy() async throws {
        let work = try TemporaryDirectory()
        let site = work.path + "/site"
        try FileManager.default.createDirectory(
            atPath: site + "/simple/corral-probe", withIntermediateDirectories: true)
        try "served over TLS\n".write(toFile: site + "/hello.txt", atomically: true, encoding: .utf8)
        // A CA of the test's own and a certificate for localhost signed by it.
        let ca = work.path + "/ca"
        try Self.tool([
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=corral test CA",
            "-keyout", ca + ".key", "-out", ca + ".pem",
        ])
        try Self.tool([
            "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
            work.path + "/server.key", "-out", work.path + "/server.csr",
        ])
        try "subjectAltName=DNS:localhost\n".write(toFile: work.path + "/san.ext", atomically: true, encoding: .utf8)
        try Self.tool([
            "openssl", "x509", "-req", "-in", work.path + "/server.csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
            "-CAcreateserial", "-days", "2", "-extfile", work.path + "/san.ext", "-out", work.path + "/server.pem",
        ])
        try Self.wheelIndex(in: site)
        // A repository served by git's "dumb" HTTP protocol (plain files).
        let source = work.path + "/source"
        try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
        try Self.tool(["git", "init", "-q", "-b", "main"], in: source)
        try "cloned through the proxy\n".write(toFile: source + "/README", atomically: true, encoding: .utf8)
        try Self.tool(["git", "add", "README"], in: source)
        try Self.tool(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "first"], in: source)
        try Self.tool(["git", "clone", "-q", "--bare", source, site + "/repo.git"])
        try Self.tool(["git", "update-server-info"], in: site + "/repo.git")

        let tls = try Server(root: site, certificate: (work.path + "/server.pem", work.path + "/server.key"))
        let plain = try Server(root: site)
        defer {
            tls.stop()
            plain.stop()
        }
        let data = try TemporaryDirectory()
        let host = try await Self.host(data, ports: [tls.port, plain.port])
        _ = try await host.fileTool(
            project: "dev", name: "write_file",
            arguments: [
                "path": .string("ca.pem"), "content": .string(try String(contentsOfFile: ca + ".pem", encoding: .utf8)),
            ],
            caller: nil)

        let curl = try await Self.run(host, "curl -sS --cacert ca.pem https://localhost:\(tls.port)/hello.txt")
        #expect(curl.exit == 0 && curl.output == "served over TLS\n", "\(curl)")
        let refused = try await Self.run(host, "curl -sS https://other.example/; echo rc=$?")
        #expect(
            refused.output.contains("CONNECT tunnel failed, response 403") && refused.output.hasSuffix("rc=56\n"),
            "\(refused)")
        let pip = try await Self.run(
            host,
            """
            python3 -m venv /tmp/venv && /tmp/venv/bin/pip install -q --no-cache-dir --disable-pip-version-check \
              --index-url http://localhost:\(plain.port)/simple/ --trusted-host localhost corral-probe && \
            /tmp/venv/bin/python -c 'import corral_probe; print(corral_probe.ANSWER)'
            """)
        #expect(pip.exit == 0 && pip.output.hasSuffix("42\n"), "\(pip)")
        let git = try await Self.run(
            host, "git clone -q http://localhost:\(plain.port)/repo.git /tmp/repo && cat /tmp/repo/README")
        #expect(git.exit == 0 && git.output == "cloned through the proxy\n", "\(git)")
        // Without the proxy the same tools have no way out.
        let direct = try await Self.run(
            host,
            "env -u HTTPS_PROXY -u https_proxy -u ALL_PROXY -u all_proxy curl -sS --max-time 5 https://192.0.2.1/; echo rc=$?"
        )
        #expect(
            direct.output.contains("after 0 ms: Couldn't connect to server") && direct.output.hasSuffix("rc=7\n"),
            "\(direct)")
        await host.shutdown(grace: .seconds(1))
    }
}

/// A project's setup installing a package with pip from a PEP 503 index on the host's
/// loopback, through the egress proxy under `[setup.network]`, while the project's own jobs
/// have no network: it runs once, and neither a second job, a restart of the host, nor an
/// eviction and a materialization from the write-back runs it again.
@Suite(
    .serialized,
    .enabled(
        if: FileManager.default.fileExists(atPath: TestPaths.rootfsDirectory + "/devtools/.corral-rootfs"),
        "needs the devtools image: `make test-devtools` builds it and runs this suite"))
struct SetupDevtoolsTests {
    static func open(_ data: TemporaryDirectory, port: Int) async throws -> CorralHost {
        let policies = data.path + "/policies"
        try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
        try """
        rootfs = "devtools"
        [network]
        mode = "none"
        [setup.network]
        mode = "allowlist"
        egress = ["localhost:\(port)"]
        allow_private = ["127.0.0.0/8"]
        [limits]
        memory = "1GiB"
        """.write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
        return try await CorralHost.open(
            HostConfiguration(
                dataDirectory: data.path + "/var", rootfsDirectory: TestPaths.rootfsDirectory,
                policiesDirectory: policies, cgroups: TestCgroups.driver))
    }

    static func run(_ host: CorralHost, _ command: String) async throws -> String {
        let snap = try await host.jobService.run(
            JobRequest(project: "py", command: "{ \(command)\n} 2>&1", timeoutSeconds: 120), budget: .seconds(300))
        return snap.record.result?.stdout ?? snap.record.error ?? ""
    }

    @Test func pipInstallsOnceFromALocalIndexThroughTheProxy() async throws {
        let site = try TemporaryDirectory()
        try EgressDevtoolsTests.wheelIndex(in: site.path)
        let index = try LoopbackHTTPServer(serving: site.url, logRequests: true)
        defer { index.stop() }
        // pip honours NO_PROXY, which names localhost by default: the index is on the host's
        // loopback, reached through the proxy, not the sandbox's own.
        let install = [
            "export NO_PROXY= no_proxy= && python3 -m venv .venv && .venv/bin/pip install -q --no-cache-dir --disable-pip-version-check --index-url http://localhost:\(index.port)/simple/ corral-probe"
        ]
        let probe = ".venv/bin/python -c 'import corral_probe; print(corral_probe.ANSWER)'"
        let data = try TemporaryDirectory()
        let host = try await Self.open(data, port: index.port)
        _ = try await host.upload("py", archive: try ArchiveFixture.tarGz(["app.py": "print(1)\n"]), setup: install)
        #expect(try await Self.run(host, probe) == "42\n")
        let fetched = index.requests
        #expect(fetched.contains("/simple/corral-probe/"), "\(fetched)")
        let record = try await host.project("py").setup
        #expect(record.status == .succeeded, "\(record)")
        // The job itself has no way to the index.
        let offline = try await Self.run(
            host,
            "NO_PROXY= .venv/bin/pip download -q --no-deps --retries 0 --timeout 5 --index-url http://localhost:\(index.port)/simple/ -d /tmp/x corral-probe; echo rc=$?"
        )
        #expect(offline.hasSuffix("rc=1\n"), "\(offline)")
        #expect(index.requests == fetched)

        #expect(try await Self.run(host, probe) == "42\n")
        await host.shutdown(grace: .seconds(1))
        let again = try await Self.open(data, port: index.port)
        #expect(try await Self.run(again, probe) == "42\n")
        try await again.evict("py")
        #expect(try await Self.run(again, probe) == "42\n")
        #expect(index.requests == fetched)
        #expect(try await again.project("py").setup.startedAt == record.startedAt)

        // Other commands run once more (pip finds the package installed: no new request).
        _ = try await again.setSetup("py", commands: install + ["echo again > again.txt"])
        #expect(try await Self.run(again, "cat again.txt; " + probe) == "again\n42\n")
        let rerun = try await again.project("py").setup
        #expect(rerun.status == .succeeded && rerun.startedAt != record.startedAt, "\(rerun)")
        await again.shutdown(grace: .seconds(1))
    }
}
