/// The first thing a program sends the egress proxy, parsed: an HTTP `CONNECT`, a plain
/// HTTP request in absolute form, or a SOCKS5 greeting and request.
///
/// The parser is strict on purpose: it is the one piece of the proxy that reads bytes a
/// program in the sandbox chose. Anything it does not fully understand is refused with a
/// clear reason instead of being passed on for an upstream server to read differently
/// (request smuggling).
enum ProxyRequest: Equatable {
    /// `CONNECT host:port`: a tunnel; the bytes after the head go upstream as they are.
    case connect(host: String, port: Int)
    /// A plain HTTP request for `host:port`, rewritten to origin form (`head`, to send
    /// upstream) with the proxy's own headers removed and `Connection: close`.
    case http(host: String, port: Int, head: [UInt8])
    /// SOCKS5 `CONNECT` to `host:port` (the method negotiation was answered before).
    case socks(host: String, port: Int)

    /// The largest request head read before giving up.
    static let maxHead = 16 * 1024

    /// The outcome of parsing what has arrived so far.
    enum Parse: Equatable {
        /// More bytes are needed.
        case incomplete
        /// A SOCKS5 greeting that wants the "no authentication" answer before anything else.
        case socksGreeting(consumed: Int)
        /// A complete request, and how many bytes of the input it took.
        case complete(ProxyRequest, consumed: Int)
        /// Not a request the proxy serves: the reason, said to the program.
        case invalid(String)
    }

    /// Parses `bytes` (everything received so far). `greeted` says the SOCKS5 greeting
    /// has already been answered, so the bytes start with its request.
    static func parse(_ bytes: [UInt8], greeted: Bool = false) -> Parse {
        if greeted { return parseSocksRequest(bytes) }
        guard let first = bytes.first else { return .incomplete }
        if first == 0x05 { return parseSocksGreeting(bytes) }
        if first == 0x04 { return .invalid("SOCKS4 is not served; use SOCKS5 (socks5h://) or HTTP CONNECT") }
        return parseHTTP(bytes)
    }

    // MARK: - HTTP

    private static func parseHTTP(_ bytes: [UInt8]) -> Parse {
        guard let end = headEnd(bytes) else {
            return bytes.count > maxHead ? .invalid("the request head is over \(maxHead) bytes") : .incomplete
        }
        guard end <= maxHead else { return .invalid("the request head is over \(maxHead) bytes") }
        // Every line must end in CRLF, and no byte may be a control character other than
        // the CRLFs and tabs: a bare CR or LF, or a NUL, is how one request is made to read
        // as two.
        var lines: [String] = []
        var start = 0
        var index = 0
        while index < end - 2 {
            let byte = bytes[index]
            if byte == 0x0D {
                guard index + 1 < end, bytes[index + 1] == 0x0A else {
                    return .invalid("a bare CR in the request head")
                }
                lines.append(String(decoding: bytes[start..<index], as: UTF8.self))
                index += 2
                start = index
                continue
            }
            if byte == 0x0A { return .invalid("a bare LF in the request head") }
            if byte < 0x20 && byte != 0x09 || byte == 0x7F {
                return .invalid("a control character in the request head")
            }
            index += 1
        }
        guard let requestLine = lines.first else { return .invalid("an empty request") }
        let parts = requestLine.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0" else {
            return .invalid("the request line is not METHOD TARGET HTTP/1.x")
        }
        let method = String(parts[0])
        let target = String(parts[1])
        guard !method.isEmpty, method.utf8.allSatisfy({ (0x41...0x5A).contains($0) || $0 == 0x2D }) else {
            return .invalid("\"\(method)\" is not a method")
        }
        var headers: [(name: String, value: String)] = []
        for line in lines.dropFirst() {
            if line.first == " " || line.first == "\t" { return .invalid("a folded header line") }
            guard let colon = line.firstIndex(of: ":") else { return .invalid("a header line without a colon") }
            let name = String(line[..<colon])
            guard !name.isEmpty, name.utf8.allSatisfy(isTokenByte) else {
                return .invalid("\"\(name)\" is not a header name")
            }
            let value = line[line.index(after: colon)...].trimmingSpaces
            headers.append((name, value))
        }
        let lengths = headers.filter { $0.name.lowercased() == "content-length" }
        let chunked = headers.contains { $0.name.lowercased() == "transfer-encoding" }
        if chunked && !lengths.isEmpty { return .invalid("both Transfer-Encoding and Content-Length") }
        if Set(lengths.map(\.value)).count > 1 { return .invalid("conflicting Content-Length headers") }
        if let length = lengths.first, UInt64(length.value) == nil { return .invalid("Content-Length is not a number") }
        let hosts = headers.filter { $0.name.lowercased() == "host" }
        if hosts.count > 1 { return .invalid("more than one Host header") }

        if method == "CONNECT" {
            guard let (host, port) = authority(target, defaultPort: nil) else {
                return .invalid("CONNECT needs host:port, not \"\(target)\"")
            }
            return .complete(.connect(host: host, port: port), consumed: end)
        }
        let lower = target.lowercased()
        if lower.hasPrefix("https://") {
            return .invalid("https:// through a proxy goes over CONNECT; set HTTPS_PROXY and let the client tunnel")
        }
        guard lower.hasPrefix("http://") else {
            return .invalid(
                "this is Corral's egress proxy: send CONNECT host:port or an absolute http:// URL, not \"\(target)\"")
        }
        let rest = target.dropFirst("http://".count)
        let slash = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authorityText = String(rest[..<slash])
        if authorityText.contains("@") { return .invalid("user information in the URL") }
        guard let (host, port) = authority(authorityText, defaultPort: 80) else {
            return .invalid("\"\(authorityText)\" is not host[:port]")
        }
        if let given = hosts.first, let (hostHeader, hostPort) = authority(given.value, defaultPort: 80),
            hostHeader != host || hostPort != port
        {
            return .invalid("the Host header (\(given.value)) names another host than the URL (\(authorityText))")
        }
        var path = String(rest[slash...])
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        var head = "\(method) \(path) \(parts[2])\r\n"
        if hosts.isEmpty { head += "Host: \(authorityText)\r\n" }
        for (name, value) in headers {
            let lower = name.lowercased()
            // The proxy's own headers stop here; the connection is the proxy's to manage.
            if lower.hasPrefix("proxy-") || lower == "connection" || lower == "keep-alive" { continue }
            head += "\(name): \(value)\r\n"
        }
        head += "Connection: close\r\n\r\n"
        return .complete(.http(host: host, port: port, head: Array(head.utf8)), consumed: end)
    }

    /// The index just past the first CRLFCRLF, or nil.
    private static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for i in 3..<bytes.count
        where bytes[i] == 0x0A && bytes[i - 1] == 0x0D && bytes[i - 2] == 0x0A && bytes[i - 3] == 0x0D {
            return i + 1
        }
        return nil
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
            || Array("!#$%&'*+-.^_`|~".utf8).contains(byte)
    }

    /// `host:port`, `[v6]:port`, or a host alone when `defaultPort` is given.
    static func authority(_ text: String, defaultPort: Int?) -> (String, Int)? {
        var host: Substring
        var portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { return nil }
                portText = rest.dropFirst()
            }
        } else if let colon = text.lastIndex(of: ":") {
            guard text.firstIndex(of: ":") == colon else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            host = Substring(text)
        }
        let port: Int
        if let portText {
            guard !portText.isEmpty, portText.utf8.allSatisfy({ (0x30...0x39).contains($0) }), portText.count <= 5,
                let value = Int(portText), (1...65535).contains(value)
            else { return nil }
            port = value
        } else {
            guard let defaultPort else { return nil }
            port = defaultPort
        }
        guard !host.isEmpty, host.utf8.count <= 253,
            host.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "/") && $0 != UInt8(ascii: "@") })
        else { return nil }
        return (EgressHost.normalized(String(host)), port)
    }

    // MARK: - SOCKS5 (RFC 1928)

    private static func parseSocksGreeting(_ bytes: [UInt8]) -> Parse {
        guard bytes.count >= 2 else { return .incomplete }
        let count = Int(bytes[1])
        guard count > 0 else { return .invalid("a SOCKS5 greeting with no methods") }
        guard bytes.count >= 2 + count else { return .incomplete }
        // 0x00: no authentication, the only method served (the proxy is reachable from one
        // sandbox only, so there is nobody else to tell apart).
        guard bytes[2..<(2 + count)].contains(0x00) else {
            return .invalid("SOCKS5 without authentication is the only method served")
        }
        return .socksGreeting(consumed: 2 + count)
    }

    private static func parseSocksRequest(_ bytes: [UInt8]) -> Parse {
        guard bytes.count >= 5 else { return .incomplete }
        guard bytes[0] == 0x05, bytes[2] == 0x00 else { return .invalid("not a SOCKS5 request") }
        guard bytes[1] == 0x01 else { return .invalid("only SOCKS5 CONNECT is served") }
        let host: String
        let addressEnd: Int
        switch bytes[3] {
        case 0x01:
            guard bytes.count >= 10 else { return .incomplete }
            host = bytes[4..<8].map(String.init).joined(separator: ".")
            addressEnd = 8
        case 0x03:
            let length = Int(bytes[4])
            guard length > 0 else { return .invalid("an empty SOCKS5 host name") }
            guard bytes.count >= 5 + length + 2 else { return .incomplete }
            let name = Array(bytes[5..<(5 + length)])
            guard name.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                return .invalid("a SOCKS5 host name with odd bytes")
            }
            host = EgressHost.normalized(String(decoding: name, as: UTF8.self))
            addressEnd = 5 + length
        case 0x04:
            guard bytes.count >= 22 else { return .incomplete }
            host = IPAddress(bytes: Array(bytes[4..<20])).description
            addressEnd = 20
        default:
            return .invalid("an unknown SOCKS5 address type")
        }
        let port = Int(bytes[addressEnd]) << 8 | Int(bytes[addressEnd + 1])
        guard port > 0 else { return .invalid("SOCKS5 port 0") }
        return .complete(.socks(host: host, port: port), consumed: addressEnd + 2)
    }
}

extension Substring {
    /// Without leading and trailing spaces and tabs (header values' optional whitespace).
    fileprivate var trimmingSpaces: String {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return String(text)
    }
}
