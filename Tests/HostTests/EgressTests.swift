import Foundation
import Sandbox
import Synchronization
import TestSupport
import Testing

@testable import Host

/// The way out of a sandbox: real programs inside (busybox wget and nc) through the host's
/// egress proxy to a real HTTP server on the host's loopback, under real policies.
///
/// `localhost` is the upstream's name: the proxy resolves it on the host (127.0.0.1, where
/// the server listens), while inside the sandbox it would be the sandbox's own loopback.
@Suite(.serialized) struct EgressTests {
    /// Every event the proxy published during a test.
    final class EventLog: Sendable {
        private let list = Mutex<[EgressEvent]>([])
        func append(_ event: EgressEvent) { list.withLock { $0.append(event) } }
        func withLock<T>(_ body: ([EgressEvent]) -> T) -> T { list.withLock { body($0) } }
    }

    final class Fixture: @unchecked Sendable {
        let data: TemporaryDirectory
        let files: TemporaryDirectory
        let upstream: LoopbackHTTPServer
        let host: CorralHost
        let events = EventLog()
        private var collector: Task<Void, Never>?

        init(policies extra: [String: String] = [:]) async throws {
            data = try TemporaryDirectory()
            files = try TemporaryDirectory()
            try "hello through the proxy\n".write(toFile: files.path + "/hello.txt", atomically: true, encoding: .utf8)
            upstream = try LoopbackHTTPServer(serving: files.url)
            let policies = data.path + "/policies"
            try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
            let port = upstream.port
            var all: [String: String] = [
                "default": "rootfs = \"minimal\"\n",
                "open": """
                rootfs = "minimal"
                [network]
                mode = "allowlist"
                egress = ["localhost:\(port)"]
                allow_private = ["127.0.0.0/8"]
                max_connections = 2
                """,
                "rebind": """
                rootfs = "minimal"
                [network]
                mode = "allowlist"
                egress = ["localhost:\(port)"]
                """,
            ]
            all["other"] = all["open"]!.replacingOccurrences(of: "max_connections = 2", with: "max_connections = 8")
            all.merge(extra) { _, new in new }
            for (name, text) in all {
                try (text + "\n").write(toFile: "\(policies)/\(name).toml", atomically: true, encoding: .utf8)
            }
            host = try await CorralHost.open(
                HostConfiguration(
                    dataDirectory: data.path + "/var", rootfsDirectory: TestPaths.rootfsDirectory,
                    policiesDirectory: policies, cgroups: TestCgroups.driver))
            let stream = host.egress.events()
            collector = Task { [events] in
                for await event in stream { events.append(event) }
            }
            for name in ["default", "open", "rebind", "other"] {
                _ = try await host.upload(name, archive: try ArchiveFixture.tarGz(["a.txt": "a\n"]), policy: name)
            }
        }

        /// Runs `command` in `project`'s sandbox: its stdout and stderr together.
        func run(_ project: String, _ command: String) async throws -> String {
            let snap = try await host.jobService.run(
                JobRequest(project: project, command: "{ \(command)\n} 2>&1"), budget: .seconds(30))
            return snap.record.result?.stdout ?? "(no result: \(snap.record.error ?? ""))"
        }

        /// Waits briefly for the proxy's event about `host` to arrive.
        func event(host name: String, port: Int? = nil) async throws -> EgressEvent? {
            for _ in 0..<100 {
                if let found = events.withLock({ $0.last { $0.host == name && (port == nil || $0.port == port) } }) {
                    return found
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }

        func stop() async {
            await host.shutdown(grace: .seconds(1))
            collector?.cancel()
            upstream.stop()
        }
    }

    /// A `printf` format (octal escapes only, which busybox understands) for `bytes`.
    static func octal(_ bytes: [UInt8]) -> String { bytes.map { "\\" + String($0, radix: 8) }.joined() }

    @Test func plainHTTPConnectAndSocksReachAnAllowedHostAndNothingElse() async throws {
        let f = try await Fixture()
        let port = f.upstream.port
        // Plain HTTP: busybox wget finds http_proxy in the job's environment.
        let env = try await f.run("open", "env | grep -i _proxy= | sort")
        #expect(
            env.contains("http_proxy=http://127.0.0.1:3128\n") && env.contains("HTTPS_PROXY=http://127.0.0.1:3128\n"))
        #expect(env.contains("ALL_PROXY=socks5h://127.0.0.1:3128\n"), "\(env)")
        let plain = try await f.run("open", "wget -q -O - http://localhost:\(port)/hello.txt")
        #expect(plain == "hello through the proxy\n")
        let plainEvent = try await f.event(host: "localhost")
        #expect(plainEvent?.decision == .allowed && plainEvent?.kind == "http" && plainEvent?.address == "127.0.0.1")
        #expect((plainEvent?.bytesIn ?? 0) > 24, "\(String(describing: plainEvent))")
        // CONNECT: a tunnel, through which the program speaks to the server itself.
        let connect = try await f.run(
            "open",
            "printf 'CONNECT localhost:\(port) HTTP/1.1\\r\\nHost: localhost:\(port)\\r\\n\\r\\nGET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 3128"
        )
        #expect(connect.hasPrefix("HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200 OK\r\n"), "\(connect)")
        #expect(connect.hasSuffix("\r\n\r\nhello through the proxy\n"), "\(connect)")
        // SOCKS5 with a host name (socks5h): the name is resolved on the host.
        let name = Array("localhost".utf8)
        let socks =
            Self.octal([5, 1, 0])
            + Self.octal([5, 1, 0, 3, UInt8(name.count)] + name + [UInt8(port >> 8), UInt8(port & 0xff)])
        let viaSocks = try await f.run(
            "open", "printf '\(socks)GET /hello.txt HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 3128 | tail -c 24")
        #expect(viaSocks == "hello through the proxy\n", "\(viaSocks)")
        let socksEvent = try await f.event(host: "localhost")
        #expect(socksEvent?.kind == "socks" && socksEvent?.decision == .allowed)

        // A host not on the list: 403 naming the policy key, and an audit event.
        let other = try await f.run(
            "open", "printf 'CONNECT other.example:443 HTTP/1.1\\r\\n\\r\\n' | nc 127.0.0.1 3128")
        #expect(other.hasPrefix("HTTP/1.1 403 Forbidden\r\n"), "\(other)")
        #expect(other.contains("X-Corral-Egress-Rule: not_allowed\r\n"))
        #expect(
            other.hasSuffix(
                "corral egress: refused other.example:443: other.example is not in [network] egress of policy \"open\" (\(f.data.path)/policies/open.toml); an admin can add \"other.example\" to egress\n"
            ), "\(other)")
        let refused = try await f.event(host: "other.example")
        #expect(refused?.decision == .refused && refused?.rule == "not_allowed" && refused?.project == "open")
        // The allowed host on a port that is not allowed.
        let wrongPort = try await f.run("open", "printf 'CONNECT localhost:1 HTTP/1.1\\r\\n\\r\\n' | nc 127.0.0.1 3128")
        #expect(wrongPort.contains("X-Corral-Egress-Rule: port\r\n"), "\(wrongPort)")
        #expect(wrongPort.contains("localhost is allowed on port \(port), not 1"), "\(wrongPort)")
        // https:// without CONNECT, and a name that is not a host.
        let https = try await f.run("open", "printf 'GET https://localhost/ HTTP/1.1\\r\\n\\r\\n' | nc 127.0.0.1 3128")
        #expect(https.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && https.contains("goes over CONNECT"), "\(https)")
        await f.stop()
    }

    @Test func anAllowedNameThatResolvesToAPrivateAddressIsRefused() async throws {
        let f = try await Fixture()
        let port = f.upstream.port
        let out = try await f.run("rebind", "wget -O - http://localhost:\(port)/hello.txt; echo rc=$?")
        #expect(out.contains("403 Forbidden") && out.hasSuffix("rc=1\n"), "\(out)")
        let event = try await f.event(host: "localhost")
        #expect(event?.rule == "private_address" && event?.decision == .refused)
        let said = try await f.run(
            "rebind", "printf 'CONNECT localhost:\(port) HTTP/1.1\\r\\n\\r\\n' | nc 127.0.0.1 3128")
        #expect(
            said.contains("localhost resolves to 127.0.0.1 (loopback); non-public addresses are refused"), "\(said)")
        await f.stop()
    }

    @Test func withoutNetworkNothingLeavesAndTheProxySaysWhy() async throws {
        let f = try await Fixture()
        let port = f.upstream.port
        // No proxy settings under mode "none".
        #expect(try await f.run("default", "env | grep -ci proxy") == "0\n")
        // The proxy is there and refuses, naming the policy key.
        let said = try await f.run(
            "default", "printf 'CONNECT localhost:\(port) HTTP/1.1\\r\\n\\r\\n' | nc 127.0.0.1 3128")
        #expect(
            said.contains("X-Corral-Egress-Rule: network_none\r\n") && said.contains("mode = \\\"none\\\"") == false)
        #expect(said.contains("([network] mode = \"none\")"), "\(said)")
        // A program that ignores proxies has no route at all, in every mode.
        for project in ["default", "open"] {
            let direct = try await f.run(project, "env -u http_proxy wget -O - http://192.0.2.1/; echo rc=$?")
            #expect(direct.contains("Network is unreachable") && direct.hasSuffix("rc=1\n"), "\(project): \(direct)")
        }
        await f.stop()
    }

    @Test func malformedRequestsAreRefusedAndTheProxyKeepsServing() async throws {
        let f = try await Fixture()
        let port = f.upstream.port
        let cases: [(String, String)] = [
            ("CONNECT localhost HTTP/1.1\\r\\n\\r\\n", "CONNECT needs host:port"),
            ("CONNECT localhost:\(port) HTTP/1.1\\nHost: x\\r\\n\\r\\n", "a bare LF"),
            ("GET http://localhost:\(port)/ HTTP/1.1\\r\\nHost: other\\r\\n\\r\\n", "the Host header (other)"),
            (
                "POST http://localhost:\(port)/ HTTP/1.1\\r\\nContent-Length: 1\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n",
                "both Transfer-Encoding and Content-Length"
            ),
            ("GET /hello.txt HTTP/1.1\\r\\n\\r\\n", "this is Corral's egress proxy"),
            ("GET http://localhost:\(port)/ HTTP/1.1\\r\\n Folded: x\\r\\n\\r\\n", "a folded header line"),
        ]
        for (request, reason) in cases {
            let out = try await f.run("open", "printf '\(request)' | nc 127.0.0.1 3128")
            #expect(out.hasPrefix("HTTP/1.1 400 Bad Request\r\n") && out.contains(reason), "\(request): \(out)")
        }
        let after = try await f.run("open", "wget -q -O - http://localhost:\(port)/hello.txt")
        #expect(after == "hello through the proxy\n")
        await f.stop()
    }

    /// Connects to the proxy inside `project`'s sandbox from the host, as a job's socket would,
    /// sends `request` and returns the answer's first line ("" if the connection closed).
    static func ask(_ namespace: NetworkNamespace, _ request: String) throws -> (fd: Int32, status: String) {
        let fd = try namespace.socket()
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = EgressProxy.port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw TestSupportError("connect to the proxy: errno \(errno)") }
        _ = request.withCString { write(fd, $0, strlen($0)) }
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while read(fd, &byte, 1) == 1, byte != 0x0A { line.append(byte) }
        return (fd, String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
    }

    @Test func aThousandConnectionsFromOneProjectAreCappedAndOtherProjectsAreServed() async throws {
        let f = try await Fixture()
        let port = f.upstream.port
        #expect(try await f.run("open", "true") == "")
        let sandbox = try #require(await f.host.pool.existing("open"))
        let namespace = try sandbox.networkNamespace()
        var open: [Int32] = []
        defer { for fd in open { close(fd) } }
        var statuses: [String: Int] = [:]
        for _ in 0..<1000 {
            let (fd, status) = try Self.ask(namespace, "CONNECT localhost:\(port) HTTP/1.1\r\n\r\n")
            open.append(fd)
            statuses[status, default: 0] += 1
        }
        #expect(
            statuses == ["HTTP/1.1 200 Connection established": 2, "HTTP/1.1 429 Too Many Requests": 998],
            "\(statuses)")
        // Another project, meanwhile, is served as usual.
        #expect(
            try await f.run("other", "wget -q -O - http://localhost:\(port)/hello.txt") == "hello through the proxy\n")
        let refusals = f.events.withLock { $0.filter { $0.project == "open" && $0.rule == "connection_cap" }.count }
        #expect(refusals == 998)
        // Closing the tunnels frees the project's slots.
        for fd in open { close(fd) }
        open = []
        var after = ""
        for _ in 0..<100 {
            after = try await f.run("open", "wget -q -O - http://localhost:\(port)/hello.txt")
            if after == "hello through the proxy\n" { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(after == "hello through the proxy\n")
        await f.stop()
    }

    /// Sockets, pipes and files this process holds (what a proxy could leak; event-loop
    /// descriptors come and go with the runtime's own pools), and its threads.
    static func counts() -> (fds: Int, threads: Int) {
        let fm = FileManager.default
        let fds = ((try? fm.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).filter { fd in
            let target = (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? ""
            return target.hasPrefix("socket:") || target.hasPrefix("pipe:") || target.hasPrefix("/")
        }
        return (fds.count, (try? fm.contentsOfDirectory(atPath: "/proc/self/task").count) ?? -1)
    }

    @Test func aDestroyedSandboxLeavesNoListenerConnectionOrDescriptor() async throws {
        let f = try await Fixture()
        let port = f.upstream.port
        /// A sandbox, connections through its proxy (one left open by a background job when
        /// the sandbox goes), then the sandbox destroyed.
        func cycle() async throws {
            let out = try await f.run(
                "open",
                """
                (printf 'CONNECT localhost:\(port) HTTP/1.1\\r\\n\\r\\n'; sleep 30) | nc 127.0.0.1 3128 > /dev/null &
                wget -q -O - http://localhost:\(port)/hello.txt
                """)
            #expect(out == "hello through the proxy\n", "\(out)")
            try await f.host.evict("open")
        }
        // Two rounds first: the host opens what it keeps for its life (the cache index, the
        // resolver's threads) on first use.
        for _ in 0..<2 { try await cycle() }
        try await Task.sleep(for: .milliseconds(300))
        let before = Self.counts()
        for _ in 0..<5 { try await cycle() }
        // Closes finish on the proxy's and the sandboxes' own threads; a leak never comes down.
        var after = Self.counts()
        for _ in 0..<60 where after.fds > before.fds || after.threads > before.threads {
            try await Task.sleep(for: .milliseconds(50))
            after = Self.counts()
        }
        // Five sandboxes, each with a listener and two proxied connections: a leak of any of
        // them would show as five or more descriptors.
        #expect(after.fds <= before.fds, "\(before) → \(after)")
        #expect(after.threads <= before.threads, "\(before) → \(after)")
        await f.stop()
    }

    @Test func aProjectsConnectionsAreCappedAndTheCapFreesAsTheyClose() async throws {
        let f = try await Fixture()
        let port = f.upstream.port
        // Three tunnels held open for a moment under max_connections = 2.
        let out = try await f.run(
            "open",
            """
            for i in 1 2 3; do (printf 'CONNECT localhost:\(port) HTTP/1.1\\r\\n\\r\\n'; sleep 2) | nc 127.0.0.1 3128 > /tmp/c$i & done
            wait; cat /tmp/c1 /tmp/c2 /tmp/c3 | grep -c 'HTTP/1.1 200'; cat /tmp/c1 /tmp/c2 /tmp/c3 | grep -c 'HTTP/1.1 429'
            """)
        #expect(out == "2\n1\n", "\(out)")
        let capped = try await f.event(host: "localhost")
        #expect(f.events.withLock { $0.contains { $0.rule == "connection_cap" } }, "\(String(describing: capped))")
        let after = try await f.run("open", "wget -q -O - http://localhost:\(port)/hello.txt")
        #expect(after == "hello through the proxy\n")
        await f.stop()
    }
}
