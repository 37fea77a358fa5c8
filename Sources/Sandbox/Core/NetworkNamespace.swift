import CShim
import Glibc

/// A sandbox's network namespace as the host reaches it: sockets made in it, and the TCP
/// ports its processes listen on.
///
/// The namespace has loopback only. The host never enters it: ``socket(domain:type:)``
/// makes a socket there on a thread that ends right after (see `cor_netns_socket`), and the
/// host then binds, listens, connects and accepts on that socket from its own threads. So
/// the egress proxy listens at a fixed loopback address inside every sandbox and each
/// sandbox reaches only its own, and the API reaches a port a job listens on without a
/// host port.
public final class NetworkNamespace: Sendable {
    /// `/proc/PID/ns/net` of the sandbox's init, open: it pins the namespace.
    private let descriptor: Int32
    /// The init's pid, for `/proc/PID/net/tcp`.
    let pid: pid_t

    init(pid: pid_t) throws {
        descriptor = try syscall("open(/proc/\(pid)/ns/net)") { open("/proc/\(pid)/ns/net", O_RDONLY | O_CLOEXEC) }
        self.pid = pid
    }

    deinit { close(descriptor) }

    /// A new socket in the namespace (close-on-exec), owned by the caller.
    public func socket(domain: Int32 = AF_INET, type: Int32 = Int32(SOCK_STREAM.rawValue)) throws -> Int32 {
        try syscall("socket(sandbox network)") { cor_netns_socket(descriptor, domain, type, 0) }
    }

    /// A TCP socket listening on 127.0.0.1:`port` inside, owned by the caller, non-blocking.
    /// Fails with `EADDRINUSE` if something inside took the port first.
    public func listen(port: UInt16, backlog: Int32 = 128) throws -> Int32 {
        let fd = try socket()
        do {
            var address = Self.loopback(port: port)
            try syscall("bind(127.0.0.1:\(port) in the sandbox)") {
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
            try syscall("listen(127.0.0.1:\(port) in the sandbox)") { Glibc.listen(fd, backlog) }
            let flags = fcntl(fd, F_GETFL)
            try syscall("fcntl(O_NONBLOCK)") { fcntl(fd, F_SETFL, flags | O_NONBLOCK) }
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    /// The TCP ports something in the namespace listens on, from the kernel's table for it
    /// (`/proc/PID/net/tcp` and `tcp6` show the sockets of PID's namespace), ascending.
    public func listeningPorts() -> [ListeningPort] {
        var found: [UInt16: ListeningPort] = [:]
        for (file, v6) in [("tcp", false), ("tcp6", true)] {
            guard let table = try? KernelFile.read("/proc/\(pid)/net/\(file)") else { continue }
            for port in Self.listening(in: table, v6: v6) {
                var merged = found[port.port] ?? ListeningPort(port: port.port, addresses: [])
                merged.addresses.append(contentsOf: port.addresses)
                found[port.port] = merged
            }
        }
        return found.values.sorted { $0.port < $1.port }
    }

    /// Rows of a `/proc/net/tcp`-format table in state 0A (LISTEN), in table order.
    public static func listening(in table: String, v6: Bool) -> [ListeningPort] {
        var out: [ListeningPort] = []
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count > 3, fields[3] == "0A" else { continue }
            let local = fields[1].split(separator: ":")
            guard local.count == 2, let port = UInt16(local[1], radix: 16) else { continue }
            out.append(ListeningPort(port: port, addresses: [Self.address(hex: String(local[0]), v6: v6)]))
        }
        return out
    }

    /// The kernel writes addresses as 32-bit words in host byte order (little-endian here).
    static func address(hex: String, v6: Bool) -> String {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 8, limitedBy: hex.endIndex) ?? hex.endIndex
            let word = UInt32(hex[index..<next], radix: 16) ?? 0
            withUnsafeBytes(of: word.littleEndian) { bytes.append(contentsOf: $0) }
            index = next
        }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = v6 ? AF_INET6 : AF_INET
        guard bytes.count == (v6 ? 16 : 4),
            bytes.withUnsafeBytes({ inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }) != nil
        else { return hex }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return address
    }
}

/// A TCP port something in a sandbox listens on.
public struct ListeningPort: Sendable, Hashable, Codable {
    public let port: UInt16
    /// The local addresses it is bound to (`127.0.0.1`, `0.0.0.0`, `::`).
    public var addresses: [String]

    public init(port: UInt16, addresses: [String]) {
        self.port = port
        self.addresses = addresses
    }
}
