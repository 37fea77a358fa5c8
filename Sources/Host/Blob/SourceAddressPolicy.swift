import CCurl
import Glibc

/// Which addresses an `http(s)://` project source may reach.
///
/// A registration names a URL the host then fetches: without a check, anyone who may
/// register a project could make the host fetch `http://169.254.169.254/` (cloud
/// credentials), `http://127.0.0.1:6379/` or a service on the private network, and read the
/// answer back as a "project". So by default a source host that is, or resolves to, a
/// loopback, link-local, private, unique-local, shared (CGNAT), reserved, unspecified or
/// multicast address is refused with ``CacheError/forbiddenAddress(host:address:kind:)``: at
/// registration (the name is resolved then), and again for every connection the transfer
/// opens (DNS can change, and redirects are followed), by checking the socket address libcurl
/// is about to connect to.
///
/// Exceptions are explicit: ``allowed`` patterns (`files.internal`, `*.corp.example`,
/// `10.1.0.0/16`, `127.0.0.1`), or ``allowPrivate`` to switch the check off.
public struct SourceAddressPolicy: Sendable, Equatable {
    /// No address check at all (`corral serve --allow-private-sources`).
    public var allowPrivate: Bool
    /// Hosts and networks sources may reach even though they are private
    /// (`--allow-source-host`, repeatable).
    public var allowed: [SourceHostPattern]

    /// The default refuses every non-public address.
    public init(allowPrivate: Bool = false, allowed: [SourceHostPattern] = []) {
        self.allowPrivate = allowPrivate
        self.allowed = allowed
    }

    /// A policy allowing `patterns`, each parsed as ``SourceHostPattern/init(parsing:)``.
    public init(allowing patterns: [String]) throws(SourceHostPattern.ParseError) {
        self.init(
            allowed: try patterns.map { (text) throws(SourceHostPattern.ParseError) in
                try SourceHostPattern(parsing: text)
            })
    }

    /// Why a connection for `host` (as the URL names it) to `address` is refused, or nil.
    func refusal(host: String, address: IPAddress) -> CacheError? {
        guard !allowPrivate, let kind = address.restrictedKind else { return nil }
        let host = SourceHostPattern.normalized(host)
        for pattern in allowed where pattern.matches(host: host, address: address) { return nil }
        return .forbiddenAddress(host: host, address: address.description, kind: kind)
    }

    /// The registration-time check of an `http(s)://` URL: its host, resolved now, must be
    /// allowed. A name that does not resolve is let through (it may well resolve later); the
    /// transfer checks every address it connects to anyway.
    public func check(url: String) async throws(CacheError) {
        guard !allowPrivate, let host = Self.host(ofURL: url) else { return }
        if let literal = IPAddress(host) {
            if let refusal = refusal(host: host, address: literal) { throw refusal }
            return
        }
        let normalized = SourceHostPattern.normalized(host)
        if allowed.contains(where: { $0.matches(name: normalized) }) { return }
        let addresses = await BlockingThread.run("corral-resolve") { () -> [IPAddress] in IPAddress.resolve(host) }
        for address in addresses {
            if let refusal = refusal(host: host, address: address) { throw refusal }
        }
    }

    /// The host of `url` as libcurl itself parses it (no second parser to disagree with the
    /// one that connects), without the brackets of an IPv6 literal.
    static func host(ofURL url: String) -> String? {
        guard let handle = curl_url() else { return nil }
        defer { curl_url_cleanup(handle) }
        guard curl_url_set(handle, CURLUPART_URL, url, 0) == CURLUE_OK else { return nil }
        var part: UnsafeMutablePointer<CChar>?
        guard curl_url_get(handle, CURLUPART_HOST, &part, 0) == CURLUE_OK, let part else { return nil }
        defer { curl_free(part) }
        var host = String(cString: part)
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host
    }
}

/// One exception to the address check: a host name, every subdomain of a name, or an
/// address range.
public enum SourceHostPattern: Sendable, Equatable, CustomStringConvertible {
    /// Exactly this host name (lower case, no trailing dot): its addresses are not checked.
    case name(String)
    /// Every name ending in `.suffix` (written `*.suffix`).
    case subdomains(of: String)
    /// Addresses in this network (written `10.0.0.0/8`, or one address).
    case network(IPAddress, prefixLength: Int)

    /// Why a pattern was refused.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// Parses `files.internal`, `*.corp.example`, `192.168.1.20`, `10.0.0.0/8`, `::1` or
    /// `fd00::/8`.
    public init(parsing text: String) throws(ParseError) {
        let text = Self.normalized(text)
        if let slash = text.firstIndex(of: "/") {
            let bits = text[text.index(after: slash)...]
            guard let address = IPAddress(String(text[..<slash])), let length = Int(bits),
                (0...(address.bytes.count * 8)).contains(length)
            else { throw ParseError(description: "\"\(text)\" is not an address range such as 10.0.0.0/8") }
            self = .network(address, prefixLength: length)
        } else if let address = IPAddress(text) {
            self = .network(address, prefixLength: address.bytes.count * 8)
        } else if text.hasPrefix("*.") {
            let suffix = String(text.dropFirst(2))
            guard Self.isHostName(suffix) else { throw ParseError(description: "\"\(text)\" is not *.domain") }
            self = .subdomains(of: suffix)
        } else {
            guard Self.isHostName(text) else {
                throw ParseError(description: "\"\(text)\" is not a host name, *.domain, address or address range")
            }
            self = .name(text)
        }
    }

    public var description: String {
        switch self {
        case .name(let name): name
        case .subdomains(let suffix): "*." + suffix
        case .network(let address, let length): "\(address)/\(length)"
        }
    }

    func matches(name: String) -> Bool {
        switch self {
        case .name(let allowed): name == allowed
        case .subdomains(let suffix): name.hasSuffix("." + suffix)
        case .network: false
        }
    }

    func matches(host: String, address: IPAddress) -> Bool {
        guard case .network(let network, let length) = self else { return matches(name: host) }
        return address.canonical.isIn(network.canonical, prefixLength: length)
    }

    static func normalized(_ host: String) -> String {
        var host = host.lowercased()
        if host.hasSuffix(".") { host.removeLast() }
        return host
    }

    static func isHostName(_ text: String) -> Bool {
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        return !text.isEmpty && text.utf8.count <= 253
            && labels.allSatisfy { label in
                (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                    && label.utf8.allSatisfy { ($0 >= 0x61 && $0 <= 0x7a) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2d }
            }
    }
}

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Parses the text form of an IPv4 or IPv6 address (no brackets, no zone).
    public init?(_ text: String) {
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            bytes = withUnsafeBytes(of: &v4) { Array($0) }
        } else if inet_pton(AF_INET6, text, &v6) == 1 {
            bytes = withUnsafeBytes(of: &v6) { Array($0) }
        } else {
            return nil
        }
    }

    init(bytes: [UInt8]) { self.bytes = bytes }

    /// The address in a `sockaddr_in` or `sockaddr_in6`; nil for another family.
    init?(sockaddr pointer: UnsafeRawPointer, length: Int) {
        switch Int32(pointer.load(as: sa_family_t.self)) {
        case AF_INET where length >= MemoryLayout<sockaddr_in>.size:
            var address = pointer.load(as: sockaddr_in.self).sin_addr
            bytes = withUnsafeBytes(of: &address) { Array($0) }
        case AF_INET6 where length >= MemoryLayout<sockaddr_in6>.size:
            var address = pointer.load(as: sockaddr_in6.self).sin6_addr
            bytes = withUnsafeBytes(of: &address) { Array($0) }
        default:
            return nil
        }
    }

    public var description: String {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        let ok = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
        guard ok else { return "?" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it reaches.
    var canonical: IPAddress {
        guard bytes.count == 16, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff else {
            return self
        }
        return IPAddress(bytes: Array(bytes[12...]))
    }

    func isIn(_ network: IPAddress, prefixLength: Int) -> Bool {
        guard bytes.count == network.bytes.count else { return false }
        var remaining = prefixLength
        for (mine, theirs) in zip(bytes, network.bytes) where remaining > 0 {
            let mask: UInt8 = remaining >= 8 ? 0xff : ~(0xff >> UInt8(remaining))
            if mine & mask != theirs & mask { return false }
            remaining -= 8
        }
        return true
    }

    /// The kind of address sources may not reach by default, or nil for a public one.
    var restrictedKind: String? {
        let address = canonical
        let ranges = address.bytes.count == 4 ? Self.restrictedV4 : Self.restrictedV6
        return ranges.first { address.isIn($0.network, prefixLength: $0.length) }?.kind
    }

    private static func range(_ text: String, _ kind: String) -> (network: IPAddress, length: Int, kind: String) {
        let parts = text.split(separator: "/")
        return (IPAddress(String(parts[0]))!, Int(parts[1])!, kind)
    }

    /// IANA's special-purpose registries, less the ranges that are ordinary public unicast.
    static let restrictedV4 = [
        range("0.0.0.0/8", "unspecified"), range("10.0.0.0/8", "private"), range("100.64.0.0/10", "shared (CGNAT)"),
        range("127.0.0.0/8", "loopback"), range("169.254.0.0/16", "link-local"), range("172.16.0.0/12", "private"),
        range("192.0.0.0/24", "reserved"), range("192.168.0.0/16", "private"), range("198.18.0.0/15", "reserved"),
        range("224.0.0.0/4", "multicast"), range("240.0.0.0/4", "reserved"),
    ]

    /// IPv4-mapped addresses are checked as IPv4 (``canonical``); NAT64 prefixes would reach
    /// IPv4 through a translator, so they are refused whole.
    static let restrictedV6 = [
        range("::/128", "unspecified"), range("::1/128", "loopback"), range("::/96", "reserved"),
        range("64:ff9b::/96", "NAT64"), range("64:ff9b:1::/48", "NAT64"), range("100::/64", "reserved"),
        range("fc00::/7", "unique local"), range("fe80::/10", "link-local"), range("fec0::/10", "site-local"),
        range("ff00::/8", "multicast"),
    ]

    /// Every address `host` resolves to (TCP), or none when it does not resolve. Blocks.
    static func resolve(_ host: String) -> [IPAddress] {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &list) == 0 else { return [] }
        defer { freeaddrinfo(list) }
        var out: [IPAddress] = []
        var entry = list
        while let current = entry {
            if let address = current.pointee.ai_addr,
                let parsed = IPAddress(sockaddr: UnsafeRawPointer(address), length: Int(current.pointee.ai_addrlen))
            {
                out.append(parsed)
            }
            entry = current.pointee.ai_next
        }
        return out
    }
}
