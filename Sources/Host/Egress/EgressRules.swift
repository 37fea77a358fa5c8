/// What a project's sandbox may reach through the egress proxy: its policy's `[network]`
/// section, checked for every connection (so a policy reload applies to the next one).
///
/// Two checks, in order: the name (and port) the program asked for, against ``mode`` and
/// ``egress``; then every address that name resolves to on the host, which must be public
/// unless ``allowPrivate`` holds it. A name on the list that resolves to 127.0.0.1 or
/// 169.254.169.254 is still refused: allowing a name never allows an address.
public struct EgressRules: Sendable, Hashable {
    /// The policy these come from and its file, for messages that say what to change.
    public let policy: String
    public let file: String
    public let mode: Mode
    /// Hosts the sandbox may reach in ``Mode/allowlist`` mode.
    public let egress: [EgressHost]
    /// Non-public ranges that may be reached anyway (an internal registry).
    public let allowPrivate: [AddressRange]
    /// The most connections the project may have open through the proxy at once.
    public let maxConnections: Int
    /// The most bytes (both ways together) the project may move through the proxy in an hour.
    public let maxBytesPerHour: UInt64
    /// The policy section these come from, as refusals name it: `network`, or
    /// `setup.network` while the project's setup runs.
    public let section: String

    /// How a sandbox reaches the network.
    public enum Mode: String, Sendable, Hashable, CaseIterable {
        /// Nothing: the proxy refuses every connection, saying so.
        case none
        /// The hosts in ``EgressRules/egress`` only.
        case allowlist
        /// Any host name or public address.
        case `public`
    }

    public init(
        policy: String, file: String, mode: Mode, egress: [EgressHost] = [], allowPrivate: [AddressRange] = [],
        maxConnections: Int = EgressRules.defaultMaxConnections,
        maxBytesPerHour: UInt64 = EgressRules.defaultMaxBytesPerHour, section: String = "network"
    ) {
        self.section = section
        self.policy = policy
        self.file = file
        self.mode = mode
        self.egress = egress
        self.allowPrivate = allowPrivate
        self.maxConnections = maxConnections
        self.maxBytesPerHour = maxBytesPerHour
    }

    public static let defaultMaxConnections = 64
    public static let defaultMaxBytesPerHour: UInt64 = 4 << 30

    /// The name check: nil if `host`:`port` may be tried, else why not.
    public func refusal(host rawHost: String, port: Int) -> EgressRefusal? {
        let host = EgressHost.normalized(rawHost)
        switch mode {
        case .none:
            return EgressRefusal(
                rule: "network_none",
                message:
                    "policy \"\(policy)\" (\(file)) gives this project no network ([\(section)] mode = \"none\"); an admin can set mode = \"allowlist\" with egress = [\"\(host)\"]"
            )
        case .public:
            return nil
        case .allowlist:
            let named = egress.filter { $0.matches(name: host) }
            if named.isEmpty {
                let glob = Self.parent(of: host).map { " (or \"*.\($0)\")" } ?? ""
                return EgressRefusal(
                    rule: "not_allowed",
                    message:
                        "\(host) is not in [\(section)] egress of policy \"\(policy)\" (\(file)); an admin can add \"\(host)\"\(glob) to egress"
                )
            }
            if !named.contains(where: { $0.ports.contains(port) }) {
                let ports = Set(named.flatMap(\.ports)).sorted().map(String.init).joined(separator: ", ")
                return EgressRefusal(
                    rule: "port",
                    message:
                        "\(host) is allowed on port \(ports), not \(port), by [\(section)] egress of policy \"\(policy)\" (\(file)); an admin can add \"\(host):\(port)\""
                )
            }
            return nil
        }
    }

    /// The address check: nil if the proxy may connect to `address` for `host`, else why not.
    public func refusal(host: String, address: IPAddress) -> EgressRefusal? {
        guard let kind = address.restrictedKind else { return nil }
        if allowPrivate.contains(where: { $0.contains(address) }) { return nil }
        return EgressRefusal(
            rule: "private_address",
            message:
                "\(EgressHost.normalized(host)) resolves to \(address) (\(kind)); non-public addresses are refused unless [\(section)] allow_private of policy \"\(policy)\" (\(file)) names a range that holds it"
        )
    }

    /// `cdn.example.net` for `a.cdn.example.net`: a domain worth a `*.` glob, never a
    /// bare top-level one, and nothing for an address.
    private static func parent(of host: String) -> String? {
        guard IPAddress(host) == nil, let dot = host.firstIndex(of: ".") else { return nil }
        let rest = host[host.index(after: dot)...]
        return rest.contains(".") ? String(rest) : nil
    }
}

/// Why the proxy refused a connection: a stable rule name (audit, metrics) and a message
/// that says which policy key would allow it.
public struct EgressRefusal: Error, Sendable, Hashable, CustomStringConvertible {
    /// `network_none`, `not_allowed`, `port`, `private_address`, `connection_cap`,
    /// `byte_cap`, `bad_request`, `unresolved`, `unreachable`.
    public let rule: String
    public let message: String

    public init(rule: String, message: String) {
        self.rule = rule
        self.message = message
    }

    public var description: String { message }
}

/// One entry of `[network] egress`: a host name, every subdomain of a name (`*.example.net`),
/// or an address, with the ports it may be reached on (80 and 443 unless it names one).
public struct EgressHost: Sendable, Hashable, CustomStringConvertible {
    public enum Name: Sendable, Hashable {
        case exact(String)
        case subdomains(of: String)
        case address(IPAddress)
    }

    public let name: Name
    public let ports: [Int]

    public static let defaultPorts = [80, 443]

    /// Why an entry was refused.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let description: String
    }

    /// Parses `packages.example.org`, `*.cdn.example.net`, `internal.example:8443`,
    /// `192.0.2.10`, `[2001:db8::1]:8443`.
    public init(parsing text: String) throws(ParseError) {
        var host = text
        var port: Int?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw ParseError(description: "\"\(text)\" has no closing ]")
            }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = Int(rest.dropFirst()) else {
                    throw ParseError(description: "\"\(text)\": after ] only :PORT may follow")
                }
                port = value
            }
        } else if let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon {
            host = String(text[..<colon])
            guard let value = Int(text[text.index(after: colon)...]) else {
                throw ParseError(description: "\"\(text)\": the port must be a number")
            }
            port = value
        }
        if let port, !(1...65535).contains(port) {
            throw ParseError(description: "\"\(text)\": port \(port) is not in 1...65535")
        }
        ports = port.map { [$0] } ?? Self.defaultPorts
        let normalized = Self.normalized(host)
        if let address = IPAddress(normalized) {
            name = .address(address)
        } else if normalized.hasPrefix("*.") {
            let suffix = String(normalized.dropFirst(2))
            guard SourceHostPattern.isHostName(suffix), suffix.contains(".") else {
                throw ParseError(description: "\"\(text)\": *. must be followed by a domain such as example.net")
            }
            name = .subdomains(of: suffix)
        } else {
            guard SourceHostPattern.isHostName(normalized) else {
                throw ParseError(
                    description:
                        "\"\(text)\" is not a host name, *.domain or address (with an optional :port); names are letters, digits, - and ."
                )
            }
            name = .exact(normalized)
        }
    }

    public var description: String {
        let host =
            switch name {
            case .exact(let name): name
            case .subdomains(let suffix): "*." + suffix
            case .address(let address): address.bytes.count == 16 ? "[\(address)]" : address.description
            }
        return ports == Self.defaultPorts ? host : "\(host):\(ports[0])"
    }

    /// Whether `host` (normalized) is this entry's name, ignoring the port.
    func matches(name host: String) -> Bool {
        switch name {
        case .exact(let allowed): host == allowed
        case .subdomains(let suffix): host.hasSuffix("." + suffix)
        case .address(let address): IPAddress(host).map { $0.canonical == address.canonical } ?? false
        }
    }

    /// Lower case, without a trailing dot or the brackets of an IPv6 literal.
    static func normalized(_ host: String) -> String {
        var host = host.lowercased()
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.hasSuffix(".") { host.removeLast() }
        return host
    }
}

/// An address range, `10.20.0.0/16` or `fd00::/8` (one address without a length).
public struct AddressRange: Sendable, Hashable, CustomStringConvertible {
    public let network: IPAddress
    public let prefixLength: Int

    public init(parsing text: String) throws(EgressHost.ParseError) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), let address = IPAddress(String(parts[0])) else {
            throw EgressHost.ParseError(description: "\"\(text)\" is not an address range such as 10.20.0.0/16")
        }
        let bits = address.bytes.count * 8
        let length = parts.count == 2 ? Int(parts[1]) : bits
        guard let length, (0...bits).contains(length) else {
            throw EgressHost.ParseError(description: "\"\(text)\": the prefix length must be 0...\(bits)")
        }
        network = address
        prefixLength = length
    }

    public var description: String { "\(network)/\(prefixLength)" }

    func contains(_ address: IPAddress) -> Bool {
        address.canonical.isIn(network.canonical, prefixLength: prefixLength)
    }
}
