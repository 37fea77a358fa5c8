import Foundation
import TestSupport
import Testing

@testable import Host

/// Server-side request forgery through a project source: a registration that names the
/// host's own loopback, the cloud metadata address or the private network is refused when it
/// is registered and again whenever a transfer would connect there (a redirect, or DNS that
/// changed since). Exceptions are explicit settings.
@Suite struct CacheSourceAddressTests {
    let f: CacheFixture
    let www: String

    init() throws {
        f = try CacheFixture()
        www = f.tmp.path + "/www"
        try FileManager.default.createDirectory(atPath: www, withIntermediateDirectories: true)
        try ArchiveFixture.write(CacheFixture.project, format: .tarGz, to: www + "/p.tgz")
    }

    static let loopbackRefusal =
        "127.0.0.1 is a loopback address; http(s) sources may reach it only if allowed with --allow-source-host"

    // MARK: - Addresses and patterns

    @Test(arguments: [
        ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("10.1.2.3", "private"), ("172.16.0.1", "private"),
        ("172.31.255.255", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "link-local"),
        ("100.100.100.200", "shared (CGNAT)"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
        ("255.255.255.255", "reserved"), ("::1", "loopback"), ("::", "unspecified"), ("fd00::1", "unique local"),
        ("fe80::1", "link-local"), ("ff02::1", "multicast"), ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"), ("64:ff9b::a9fe:a9fe", "NAT64"), ("::127.0.0.1", "reserved"),
    ])
    func nonPublicAddressesAreRestricted(_ text: String, _ kind: String) throws {
        #expect(try #require(IPAddress(text)).restrictedKind == kind)
    }

    @Test(arguments: ["93.184.216.34", "8.8.8.8", "172.32.0.1", "11.0.0.1", "2606:4700::1111", "::ffff:8.8.8.8"])
    func publicAddressesAreNot(_ text: String) throws {
        #expect(try #require(IPAddress(text)).restrictedKind == nil)
    }

    @Test func patternsParseStrictly() throws {
        #expect(try SourceHostPattern(parsing: "Files.Internal.") == .name("files.internal"))
        #expect(try SourceHostPattern(parsing: "*.corp.example") == .subdomains(of: "corp.example"))
        #expect(try SourceHostPattern(parsing: "10.0.0.0/8") == .network(IPAddress("10.0.0.0")!, prefixLength: 8))
        #expect(try SourceHostPattern(parsing: "127.0.0.1") == .network(IPAddress("127.0.0.1")!, prefixLength: 32))
        #expect(try SourceHostPattern(parsing: "fd00::/8").description == "fd00::/8")
        #expect(
            throws: SourceHostPattern.ParseError(
                description: "\"10.0.0.0/33\" is not an address range such as 10.0.0.0/8")
        ) {
            try SourceHostPattern(parsing: "10.0.0.0/33")
        }
        #expect(
            throws: SourceHostPattern.ParseError(
                description: "\"bad_host\" is not a host name, *.domain, address or address range")
        ) { try SourceHostPattern(parsing: "bad_host") }
        #expect(throws: SourceHostPattern.ParseError(description: "\"*.-corp\" is not *.domain")) {
            try SourceHostPattern(parsing: "*.-corp")
        }
    }

    @Test func allowancesNameExactlyWhatTheyAllow() throws {
        let policy = try SourceAddressPolicy(allowing: ["10.0.0.0/8", "files.internal", "*.corp.example", "127.0.0.1"])
        let private10 = IPAddress("10.9.9.9")!
        let private192 = IPAddress("192.168.0.1")!
        #expect(policy.refusal(host: "anything", address: private10) == nil)
        #expect(
            policy.refusal(host: "anything", address: private192)
                == .forbiddenAddress(host: "anything", address: "192.168.0.1", kind: "private"))
        #expect(policy.refusal(host: "FILES.internal", address: private192) == nil)
        #expect(policy.refusal(host: "a.b.corp.example", address: private192) == nil)
        #expect(policy.refusal(host: "corp.example", address: private192) != nil)
        #expect(policy.refusal(host: "files.internal.evil", address: private192) != nil)
        // An allowed address is allowed however it is written.
        #expect(policy.refusal(host: "x", address: IPAddress("::ffff:127.0.0.1")!) == nil)
        #expect(policy.refusal(host: "x", address: IPAddress("127.0.0.2")!) != nil)
        #expect(SourceAddressPolicy(allowPrivate: true).refusal(host: "x", address: private192) == nil)
    }

    // MARK: - Registration and transfers

    @Test func loopbackIsRefusedAtRegistrationByDefaultAndNothingIsRegistered() async throws {
        let server = try FaultHTTPServer(serving: URL(fileURLWithPath: www))
        defer { server.stop() }
        let cache = try await f.open(sourceAddresses: SourceAddressPolicy())
        let refusal = CacheError.forbiddenAddress(host: "127.0.0.1", address: "127.0.0.1", kind: "loopback")
        await #expect(throws: refusal) { try await cache.register("p", source: server.url("p.tgz")) }
        #expect(refusal.description == Self.loopbackRefusal)
        #expect(refusal.code == "forbidden_address")
        await #expect(throws: CacheError.unknownProject("p")) { try await cache.status("p") }
        #expect(try server.counts() == [:])
    }

    @Test func otherSpellingsOfPrivateAddressesAreRefusedToo() async throws {
        let cache = try await f.open(sourceAddresses: SourceAddressPolicy())
        let cases: [(String, CacheError)] = [
            (
                "http://169.254.169.254/latest/meta-data/",
                .forbiddenAddress(
                    host: "169.254.169.254", address: "169.254.169.254", kind: "link-local")
            ),
            (
                "http://2130706433:8080/p.tgz",
                .forbiddenAddress(host: "127.0.0.1", address: "127.0.0.1", kind: "loopback")
            ),
            ("http://0x7f.1/p.tgz", .forbiddenAddress(host: "127.0.0.1", address: "127.0.0.1", kind: "loopback")),
            (
                "https://[::ffff:10.0.0.1]/p.tgz",
                .forbiddenAddress(
                    host: "::ffff:10.0.0.1", address: "::ffff:10.0.0.1", kind: "private")
            ),
            ("http://[fd12::1]:9/p.tgz", .forbiddenAddress(host: "fd12::1", address: "fd12::1", kind: "unique local")),
        ]
        for (source, refusal) in cases {
            await #expect(throws: refusal, "\(source)") { try await cache.register("p", source: source) }
        }
        // A name is resolved at registration: localhost is loopback whichever address comes first.
        let refusal = await #expect(throws: CacheError.self) {
            try await cache.register("p", source: "http://localhost/p.tgz")
        }
        #expect(
            [
                CacheError.forbiddenAddress(host: "localhost", address: "127.0.0.1", kind: "loopback"),
                .forbiddenAddress(host: "localhost", address: "::1", kind: "loopback"),
            ].contains(refusal))
    }

    @Test func anAllowedAddressIsRegisteredAndMaterialized() async throws {
        let server = try FaultHTTPServer(serving: URL(fileURLWithPath: www))
        defer { server.stop() }
        let cache = try await f.open(sourceAddresses: try SourceAddressPolicy(allowing: ["127.0.0.1"]))
        try await cache.register("p", source: server.url("p.tgz"))
        let workspace = try await cache.materialize("p")
        #expect(describeTree(workspace.path) == CacheFixture.projectTree)
        #expect(try server.counts() == ["/p.tgz": 1])
    }

    @Test func aRedirectFromAnAllowedHostToALoopbackAddressIsRefused() async throws {
        let server = try FaultHTTPServer(serving: URL(fileURLWithPath: www))
        let redirecting = try FaultHTTPServer(
            serving: URL(fileURLWithPath: www), rules: ["/r.tgz": ["redirect": server.url("p.tgz")]])
        defer {
            server.stop()
            redirecting.stop()
        }
        // Only the name is allowed: whatever it redirects to is checked on its own.
        let cache = try await f.open(sourceAddresses: try SourceAddressPolicy(allowing: ["localhost"]))
        try await cache.register("p", source: "http://localhost:\(redirecting.port)/r.tgz")
        await #expect(throws: CacheError.forbiddenAddress(host: "127.0.0.1", address: "127.0.0.1", kind: "loopback")) {
            try await cache.materialize("p")
        }
        // Refused before connecting, and not retried.
        #expect(try redirecting.counts() == ["/r.tgz": 1])
        #expect(try server.counts() == [:])
        #expect(try await cache.status("p").state == .cold)
        #expect(f.dataContents().filter { $0.hasPrefix("staging/") || $0.hasPrefix("downloads/") } == [])
    }

    @Test func aTransferChecksTheAddressItConnectsToWhateverWasRegistered() async throws {
        let server = try FaultHTTPServer(serving: URL(fileURLWithPath: www))
        defer { server.stop() }
        let target = f.tmp.path + "/download.part"
        await #expect(throws: CacheError.forbiddenAddress(host: "127.0.0.1", address: "127.0.0.1", kind: "loopback")) {
            try await HTTPBlobStore().get(server.url("p.tgz"), to: target, limit: nil, progress: nil)
        }
        #expect(try server.counts() == [:])
        #expect(!FileManager.default.fileExists(atPath: target))
    }
}
