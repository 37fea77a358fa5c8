// corral-bench-egress: the egress proxy's cost. A client socket made in a real sandbox's
// network namespace (where jobs' sockets live) goes through the host's proxy at
// 127.0.0.1:3128 inside to a server on the host's loopback; the baseline is the same
// client on the host connecting to the same server directly, in the same run.
// Usage: corral-bench-egress ROOTFS_DIR [RUNS] [MEGABYTES]
import Foundation
import Glibc
import Host
import Sandbox

let args = CommandLine.arguments
let rootfsDir = args.count > 1 ? args[1] : "rootfs/out"
let runs = args.count > 2 ? Int(args[2]) ?? 1000 : 1000
let megabytes = args.count > 3 ? Int(args[3]) ?? 200 : 200
let rootfs = URL(fileURLWithPath: rootfsDir).standardizedFileURL.path + "/minimal"

func percentile(_ samples: [Double], _ p: Double) -> Double {
    let sorted = samples.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count - 1) * p))]
}

func milliseconds(since start: ContinuousClock.Instant) -> Double {
    Double((ContinuousClock.now - start) / .nanoseconds(1)) / 1e6
}

func loopback(_ port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
    return address
}

func connectTo(_ fd: Int32, port: Int) -> Bool {
    var address = loopback(port)
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
        }
    }
}

func send(_ fd: Int32, _ text: String) { _ = text.withCString { write(fd, $0, strlen($0)) } }

/// Reads until the end of an HTTP response head (the proxy's answer to CONNECT).
func readHead(_ fd: Int32) -> String {
    var out: [UInt8] = []
    var byte: UInt8 = 0
    while read(fd, &byte, 1) == 1 {
        out.append(byte)
        if out.count >= 4 && out.suffix(4) == [13, 10, 13, 10] { break }
    }
    return String(decoding: out, as: UTF8.self)
}

/// Reads to end of stream; the byte count.
func drain(_ fd: Int32) -> Int {
    var buffer = [UInt8](repeating: 0, count: 256 * 1024)
    var total = 0
    while true {
        let n = read(fd, &buffer, buffer.count)
        if n <= 0 { return total }
        total += n
    }
}

/// A loopback TCP server on its own threads: each connection gets `bytes` bytes, then EOF.
func serve(bytes: Int) -> Int {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var one: Int32 = 1
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = loopback(0)
    _ = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    listen(listener, 512)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
    }
    let chunk = [UInt8](repeating: 0x61, count: 256 * 1024)
    Thread.detachNewThread {
        while true {
            let fd = accept(listener, nil, nil)
            if fd < 0 { continue }
            Thread.detachNewThread {
                var left = bytes
                while left > 0 {
                    let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, min(left, chunk.count)) }
                    if n <= 0 { break }
                    left -= n
                }
                close(fd)
            }
        }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

let workspace = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-egress-\(getpid())").path
try FileManager.default.createDirectory(atPath: workspace, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: workspace) }
let sandbox = try await ProjectSandbox.create(
    SandboxConfiguration(projectID: "bench", workspace: workspace, rootfs: rootfs))
let namespace = try sandbox.networkNamespace()
let proxy = EgressProxy()
// Any name, and loopback allowed: the server is on the host's 127.0.0.1.
let rules = EgressRules(
    policy: "bench", file: "bench.toml", mode: .public, allowPrivate: [try AddressRange(parsing: "127.0.0.0/8")],
    maxConnections: 10_000, maxBytesPerHour: 1 << 50)
let endpoint = try await proxy.open(project: "bench", namespace: namespace, rules: { rules })
let small = serve(bytes: 0)
let large = serve(bytes: megabytes << 20)

/// A socket in the sandbox's namespace, as a job's own `socket()` makes it. Made before the
/// clock starts: the host-side thread that makes it is the benchmark's cost, not a job's.
func sandboxSocket() throws -> Int32 { try namespace.socket() }

/// One connection through the proxy on `fd`: CONNECT `host`:`port`, wait for 200; then `body`.
func throughProxy(_ fd: Int32, _ host: String, _ port: Int, _ body: (Int32) -> Void) {
    defer { close(fd) }
    guard connectTo(fd, port: Int(EgressProxy.port)) else { fatalError("connect to the proxy: errno \(errno)") }
    send(fd, "CONNECT \(host):\(port) HTTP/1.1\r\n\r\n")
    let head = readHead(fd)
    guard head.hasPrefix("HTTP/1.1 200") else { fatalError("proxy said: \(head)") }
    body(fd)
}

func direct(_ port: Int, _ body: (Int32) -> Void) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    guard connectTo(fd, port: port) else { fatalError("connect: errno \(errno)") }
    body(fd)
}

// Warm up both paths.
for _ in 0..<50 {
    throughProxy(try sandboxSocket(), "localhost", small) { _ in }
    direct(small) { _ in }
}

print("| path | runs | p50 ms | p99 ms |")
print("|---|---|---|---|")
var rows: [(String, [Double])] = []
for (label, host) in [("CONNECT by name (resolved on the host)", "localhost"), ("CONNECT to an address", "127.0.0.1")] {
    var samples: [Double] = []
    for _ in 0..<runs {
        let fd = try sandboxSocket()
        let start = ContinuousClock.now
        throughProxy(fd, host, small) { _ in }
        samples.append(milliseconds(since: start))
    }
    rows.append((label, samples))
}
var baseline: [Double] = []
for _ in 0..<runs {
    let start = ContinuousClock.now
    direct(small) { _ in }
    baseline.append(milliseconds(since: start))
}
rows.append(("baseline: direct connect on the host", baseline))
for (label, samples) in rows {
    print(
        "| \(label) | \(runs) | \(String(format: "%.3f", percentile(samples, 0.5))) | \(String(format: "%.3f", percentile(samples, 0.99))) |"
    )
}
for (label, samples) in rows.dropLast() {
    print(
        "\(label): extra p50 \(String(format: "%.3f", percentile(samples, 0.5) - percentile(baseline, 0.5))) ms over the baseline"
    )
}

print()
print("| download of \(megabytes) MiB | runs | p50 MB/s | ratio to the baseline |")
print("|---|---|---|---|")
var proxied: [Double] = []
var plain: [Double] = []
for _ in 0..<5 {
    let fd = try sandboxSocket()
    var start = ContinuousClock.now
    var got = 0
    throughProxy(fd, "localhost", large) { got = drain($0) }
    precondition(got == megabytes << 20, "short read through the proxy: \(got)")
    proxied.append(Double(got) / 1e6 / (milliseconds(since: start) / 1000))
    start = ContinuousClock.now
    direct(large) { got = drain($0) }
    precondition(got == megabytes << 20, "short read: \(got)")
    plain.append(Double(got) / 1e6 / (milliseconds(since: start) / 1000))
}
let ratio = percentile(proxied, 0.5) / percentile(plain, 0.5)
print(
    "| through the proxy | 5 | \(String(format: "%.0f", percentile(proxied, 0.5))) | \(String(format: "%.2f", ratio))× |"
)
print("| baseline: direct on the host | 5 | \(String(format: "%.0f", percentile(plain, 0.5))) | 1× |")
await endpoint.close()
await proxy.shutdown()
await sandbox.destroy()
