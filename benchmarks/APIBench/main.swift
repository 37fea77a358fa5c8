import API
import Foundation
import Host
import Logging
import Sandbox
import ServiceLifecycle
import Synchronization

// The HTTP API under load on loopback, driven by wrk: `corral-bench-api ROOTFS_DIR SECONDS`.
//
// Serves a real host (minimal rootfs, one warm project) and measures, at 1 and 32
// connections: GET /health (the HTTP floor, baseline), POST exec `true` (a real job in a
// real sandbox per request), POST tools/read_file (the host's file tool on a 200-line file)
// and POST tools/read_memory (the same answer from memory: the gateway alone), then the
// read again while 4 CPU-bound builds run in the project. Beside them, the same `true`
// through the job system in-process, so the figures say what HTTP adds; and a GET relayed
// to a server in the sandbox (`/ports/8080/…`) beside the same GET made directly.

let arguments = CommandLine.arguments
let rootfs = URL(fileURLWithPath: arguments.count > 1 ? arguments[1] : "rootfs/out").standardizedFileURL.path
let seconds = arguments.count > 2 ? Int(arguments[2]) ?? 10 : 10
let token = "bench-secret-0123456789"

/// The host's file tools, plus `read_memory`: the same 200 numbered lines from memory, so
/// the gateway's own cost shows beside the real tool's.
struct BenchFiles: FileToolBackend {
    let host: HostFileTools
    let text = (1...200).map { "\($0)\tline \($0) of a file the benchmark reads" }.joined(separator: "\n")
    var fileToolNames: [String] { host.fileToolNames + ["read_memory"] }

    func callFileTool(project: String, name: String, arguments: [String: JSON], caller: String?) async throws
        -> ToolResult
    {
        guard name == "read_memory" else {
            return try await host.callFileTool(
                project: project, name: name, arguments: arguments, caller: caller)
        }
        return ToolResult(
            text: text, structured: ["path": "bench.txt", "start_line": 1, "end_line": 200], isError: false)
    }
}

/// One wrk run's figures.
struct Load {
    var p50: Double
    var p99: Double
    var perSecond: Double
}

/// Runs wrk with `--latency` and reads its p50, p99 (ms) and requests/s.
func wrk(_ port: Int, path: String, body: String?, connections: Int) throws -> Load {
    let script = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-\(UUID()).lua")
    var lua = "wrk.headers[\"Authorization\"] = \"Bearer \(token)\"\n"
    if let body {
        lua += "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[\(body)]]\n"
    }
    try lua.write(to: script, atomically: true, encoding: .utf8)
    defer { try? FileManager.default.removeItem(at: script) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/wrk")
    process.arguments = [
        "-t", String(min(connections, 2)), "-c", String(connections), "-d", "\(seconds)s", "--latency", "-s",
        script.path,
        "http://127.0.0.1:\(port)\(path)",
    ]
    let out = Pipe()
    process.standardOutput = out
    try process.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    func milliseconds(_ label: String) -> Double {
        guard
            let line = text.split(separator: "\n").first(where: {
                $0.trimmingCharacters(in: .whitespaces).hasPrefix(label)
            }),
            let value = line.split(separator: " ", omittingEmptySubsequences: true).last
        else { return .nan }
        let units: [(String, Double)] = [("us", 0.001), ("ms", 1), ("s", 1000)]
        for (suffix, scale) in units where value.hasSuffix(suffix) {
            return (Double(value.dropLast(suffix.count)) ?? .nan) * scale
        }
        return .nan
    }
    let rate =
        text.split(separator: "\n").first { $0.hasPrefix("Requests/sec:") }
        .flatMap { Double($0.split(separator: " ").last ?? "") } ?? .nan
    if text.contains("Non-2xx") { print("warning: non-2xx answers on \(path):\n\(text)") }
    return Load(p50: milliseconds("50%"), p99: milliseconds("99%"), perSecond: rate)
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]
}

func format(_ value: Double) -> String { String(format: "%.3f", value) }

// MARK: - A host with one warm project

let data = FileManager.default.temporaryDirectory.appendingPathComponent("corral-bench-api-\(UUID())").path
let policies = data + "/policies"
try FileManager.default.createDirectory(atPath: policies, withIntermediateDirectories: true)
defer { try? FileManager.default.removeItem(atPath: data) }
let shipped = try String(contentsOfFile: "policies/default.toml", encoding: .utf8)
try shipped.split(separator: "\n", omittingEmptySubsequences: false)
    .map { $0.hasPrefix("rootfs = ") ? "rootfs = \"minimal\"" : String($0) }.joined(separator: "\n")
    .write(toFile: policies + "/default.toml", atomically: true, encoding: .utf8)
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}
let host = try await CorralHost.open(
    HostConfiguration(
        dataDirectory: data + "/var", rootfsDirectory: rootfs, policiesDirectory: policies,
        jobLimits: JobLimits(perProject: [.short: 32, .long: 4])))
let tar = Process()
let source = data + "/src"
try FileManager.default.createDirectory(atPath: source, withIntermediateDirectories: true)
try (1...200).map { "line \($0) of a file the benchmark reads\n" }.joined()
    .write(toFile: source + "/bench.txt", atomically: true, encoding: .utf8)
tar.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
tar.arguments = ["-czf", data + "/src.tar.gz", "-C", source, "."]
try tar.run()
tar.waitUntilExit()
_ = try await host.upload("bench", archive: Array(try Data(contentsOf: URL(fileURLWithPath: data + "/src.tar.gz"))))
_ = try await host.warm("bench")

/// `rounds` of the same `true` through the job system in-process (no HTTP), in ms.
func inProcessExec(_ runs: Int) async throws -> [Double] {
    var samples: [Double] = []
    for _ in 0..<runs {
        let start = ContinuousClock.now
        _ = try await host.jobService.run(
            JobRequest(project: "bench", command: "true", timeoutSeconds: 30), budget: .seconds(30))
        let elapsed = ContinuousClock.now - start
        samples.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
    }
    return samples
}

// MARK: - Cold start

struct BenchFailure: Error { let message: String }

/// A new project from a 200-file archive: upload, then the first `exec true`'s result, in
/// ms, with the upload's and the first job's shares; each project is discarded afterwards,
/// outside the clock, so the host never holds more than one of them.
func coldStarts(_ runs: Int, archive: [UInt8]) async throws -> (total: [Double], upload: [Double], firstJob: [Double]) {
    func ms(_ d: Duration) -> Double { Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1000 }
    var total: [Double] = []
    var upload: [Double] = []
    var firstJob: [Double] = []
    for i in 0..<runs {
        let id = "cold-\(i)"
        let start = ContinuousClock.now
        _ = try await host.upload(id, archive: archive)
        let uploaded = ContinuousClock.now
        let r = try await host.jobService.run(
            JobRequest(project: id, command: "true", timeoutSeconds: 30), budget: .seconds(30))
        let end = ContinuousClock.now
        guard r.record.result?.exitCode == 0 else {
            throw BenchFailure(message: "cold start: \(r.record.error ?? "?")")
        }
        total.append(ms(end - start))
        upload.append(ms(uploaded - start))
        firstJob.append(ms(end - uploaded))
        try await host.delete(id)
    }
    return (total, upload, firstJob)
}

let manyFiles = data + "/many"
try FileManager.default.createDirectory(atPath: manyFiles + "/src", withIntermediateDirectories: true)
for i in 1...200 {
    try "// file \(i)\nexport const value\(i) = \(i);\n".write(
        toFile: manyFiles + "/src/f\(i).js", atomically: false, encoding: .utf8)
}
let manyTar = Process()
manyTar.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
manyTar.arguments = ["-czf", data + "/many.tar.gz", "-C", manyFiles, "."]
try manyTar.run()
manyTar.waitUntilExit()
let manyArchive = Array(try Data(contentsOf: URL(fileURLWithPath: data + "/many.tar.gz")))
_ = try await coldStarts(3, archive: manyArchive)
let cold = try await coldStarts(40, archive: manyArchive)
let warmBaseline = try await inProcessExec(40)
print("## Cold start: a new project from a 200-file archive (in-process, 40 runs)")
print("")
print("| step | p50 ms | p99 ms | p50 vs warm exec |")
print("|---|---|---|---|")
let warmP50 = percentile(warmBaseline, 0.5)
for (name, samples) in [
    ("upload + first `exec true` result", cold.total), ("upload (extract into a new volume)", cold.upload),
    ("first `exec true` (sandbox created)", cold.firstJob), ("`exec true` in a warm project (baseline)", warmBaseline),
] {
    print(
        "| \(name) | \(format(percentile(samples, 0.5))) | \(format(percentile(samples, 0.99))) | "
            + "\(String(format: "%.2f×", percentile(samples, 0.5) / warmP50)) |")
}
print("")

// Forks: the 1 GiB / 100,000-file workspace, and an 80 MB / 20,000-file one
// (`CORRAL_BENCH_FORK_SIZES=small` runs only the latter).
let forkSizes: [(label: String, files: Int, bytes: Int)] =
    ProcessInfo.processInfo.environment["CORRAL_BENCH_FORK_SIZES"] == "small"
    ? [("80 MB, 20,000 files", 20_000, 4_000)]
    : [("1 GiB, 100,000 files", 100_000, 10_737), ("80 MB, 20,000 files", 20_000, 4_000)]
try await forkSection(host, scratch: data + "/forks", sizes: forkSizes)

// MARK: - The API on loopback

let tokens = TokenStore([(Principal(name: "bench", projects: ["*"], admin: true, rate: .unlimited), token)])
let port = Mutex(0)
let app = try buildApplication(
    APIConfiguration(port: 0, tokens: tokens), host: host, jobs: host.jobService,
    files: BenchFiles(host: HostFileTools(host: host)), sessions: host.sessionService,
    logger: Logger(label: "bench")
) { bound in port.withLock { $0 = bound } }
let group = ServiceGroup(configuration: .init(services: [app], logger: Logger(label: "bench")))
let server = Task { try await group.run() }
while port.withLock({ $0 }) == 0 { try await Task.sleep(for: .milliseconds(20)) }
let bound = port.withLock { $0 }

print("## HTTP API on loopback (\(seconds) s per row, wrk, \(ProcessInfo.processInfo.activeProcessorCount) cores)")
print("")
print("| call | connections | p50 ms | p99 ms | req/s |")
print("|---|---|---|---|---|")
var rows: [String: Load] = [:]
let calls: [(String, String, String?)] = [
    ("GET /health (baseline)", "/health", nil),
    ("POST exec `true`", "/v1/projects/bench/exec", #"{"command": "true", "timeout_s": 30}"#),
    ("POST tools/read_file (host's tool, 200 lines)", "/v1/projects/bench/tools/read_file", #"{"path": "bench.txt"}"#),
    ("POST tools/read_memory (gateway only)", "/v1/projects/bench/tools/read_memory", #"{"path": "bench.txt"}"#),
]
for (name, path, body) in calls {
    for connections in [1, 32] {
        let load = try wrk(bound, path: path, body: body, connections: connections)
        rows["\(name) \(connections)"] = load
        print("| \(name) | \(connections) | \(format(load.p50)) | \(format(load.p99)) | \(Int(load.perSecond)) |")
    }
}
// MARK: - Sessions

// A run of `true` in a shell session against `exec true` in the same project, interleaved in
// rounds; python `1+1`; and each kind's memory when idle (its cgroup leaf's memory.current,
// and the driver's proportional set size, which shares the image's pages fairly).
func sessionMemory(_ id: String, project: String) async throws -> (current: UInt64, pss: Int) {
    try await Task.sleep(for: .milliseconds(300))
    let info = try await host.sessionService.info(project, id, caller: nil)
    var pss = 0
    for leaf in await host.sessionProcesses(project, id) {
        let text = (try? String(contentsOfFile: "/proc/\(leaf)/smaps_rollup", encoding: .utf8)) ?? ""
        for line in text.split(separator: "\n") where line.hasPrefix("Pss:") {
            pss += Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? 0
        }
    }
    return (info.memoryBytes ?? 0, pss * 1024)
}
print("")
print("## Sessions (wrk, 1 connection, median of 5 interleaved rounds)")
print("")
let shell = try await host.sessionService.create("bench", SessionRequest(kind: .shell), caller: "bench")
let runPath = "/v1/projects/bench/sessions/\(shell.sessionID)/run"
var sessionRounds: [Load] = []
var execRounds: [Load] = []
for _ in 0..<5 {
    execRounds.append(try wrk(bound, path: "/v1/projects/bench/exec", body: calls[1].2, connections: 1))
    sessionRounds.append(try wrk(bound, path: runPath, body: #"{"input": "true"}"#, connections: 1))
}
let execP50 = percentile(execRounds.map(\.p50), 0.5)
let sessionP50 = percentile(sessionRounds.map(\.p50), 0.5)
print("| call | p50 ms | p99 ms | req/s |")
print("|---|---|---|---|")
print(
    "| POST exec `true` (baseline) | \(format(execP50)) | \(format(percentile(execRounds.map(\.p99), 0.5))) | "
        + "\(Int(percentile(execRounds.map(\.perSecond), 0.5))) |")
print(
    "| POST sessions/{sid}/run `true` (shell: \(shell.interpreter)) | \(format(sessionP50)) | "
        + "\(format(percentile(sessionRounds.map(\.p99), 0.5))) | \(Int(percentile(sessionRounds.map(\.perSecond), 0.5))) |"
)
print("")
print("session run / exec = \(String(format: "%.2f", sessionP50 / execP50))× (goal ≤ 0.5×)")
let shellMemory = try await sessionMemory(shell.sessionID, project: "bench")
print(
    "idle shell session (\(shell.interpreter)): memory.current \(shellMemory.current / 1024) KiB, "
        + "Pss \(shellMemory.pss / 1024) KiB (goal ≤ 1 MiB)")
if FileManager.default.fileExists(atPath: rootfs + "/devtools/.corral-rootfs") {
    try "extends = \"default\"\nrootfs = \"devtools\"\n".write(
        toFile: policies + "/py.toml", atomically: true, encoding: .utf8)
    await host.policies.reload()
    _ = try await host.upload(
        "py", archive: Array(try Data(contentsOf: URL(fileURLWithPath: data + "/src.tar.gz"))), policy: "py")
    let python = try await host.sessionService.create("py", SessionRequest(kind: .python), caller: "bench")
    let pythonPath = "/v1/projects/py/sessions/\(python.sessionID)/run"
    var pythonRounds: [Load] = []
    var inProcessPython: [Double] = []
    for _ in 0..<5 {
        pythonRounds.append(try wrk(bound, path: pythonPath, body: #"{"input": "1+1"}"#, connections: 1))
        for _ in 0..<200 {
            let start = ContinuousClock.now
            _ = try await host.sessionService.run(
                "py", python.sessionID, SessionRunRequest(input: "1+1"), budget: .seconds(10), caller: nil)
            let elapsed = ContinuousClock.now - start
            inProcessPython.append(
                Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
        }
    }
    print(
        "| POST sessions/{sid}/run `1+1` (\(python.interpreter)) | \(format(percentile(pythonRounds.map(\.p50), 0.5))) | "
            + "\(format(percentile(pythonRounds.map(\.p99), 0.5))) | \(Int(percentile(pythonRounds.map(\.perSecond), 0.5))) |"
    )
    print(
        "| in-process sessionService.run `1+1` | \(format(percentile(inProcessPython, 0.5))) | "
            + "\(format(percentile(inProcessPython, 0.99))) | |")
    let idle = try await sessionMemory(python.sessionID, project: "py")
    print("idle python session: memory.current \(idle.current / 1024) KiB, Pss \(idle.pss / 1024) KiB (goal ≤ 20 MiB)")
    _ = try await host.sessionService.run(
        "py", python.sessionID, SessionRunRequest(input: "import pandas, numpy"), budget: .seconds(60), caller: nil)
    let pandas = try await sessionMemory(python.sessionID, project: "py")
    let bash = try await host.sessionService.create("py", SessionRequest(kind: .shell), caller: "bench")
    _ = try await host.sessionService.run(
        "py", bash.sessionID, SessionRunRequest(input: "true"), budget: .seconds(10), caller: nil)
    let bashMemory = try await sessionMemory(bash.sessionID, project: "py")
    print(
        "idle shell session (\(bash.interpreter)): memory.current \(bashMemory.current / 1024) KiB, "
            + "Pss \(bashMemory.pss / 1024) KiB (goal ≤ 1 MiB)")
    print(
        "python session with pandas imported: memory.current \(pandas.current / 1024) KiB, Pss \(pandas.pss / 1024) KiB"
    )
} else {
    print("(python rows skipped: no devtools image in \(rootfs); make rootfs-devtools)")
}

// A server a job runs in the project (busybox httpd), through the ports relay, and
// directly: the host's own socket in the sandbox's network namespace, one request per
// connection as the relay makes it, in-process. Interleaved in rounds, as exec below.
let httpd = try await host.jobService.submit(
    JobRequest(
        project: "bench", command: "httpd -f -p 127.0.0.1:8080 -h /workspace", timeoutSeconds: 1800, background: true))
// Until the job has started the sandbox, there is no sandbox to ask.
while (try? await host.ports("bench").ports.isEmpty) ?? true { try await Task.sleep(for: .milliseconds(20)) }
func direct(_ runs: Int) async throws -> [Double] {
    var samples: [Double] = []
    var buffer = [UInt8](repeating: 0, count: 65536)
    for _ in 0..<runs {
        let start = ContinuousClock.now
        guard case .socket(let fd) = try await host.portEndpoint("bench", port: 8080) else { break }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        _ = "GET /bench.txt HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n".withCString { write(fd, $0, strlen($0)) }
        while read(fd, &buffer, buffer.count) > 0 {}
        close(fd)
        let elapsed = ContinuousClock.now - start
        samples.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000)
    }
    return samples
}
let relayPath = "/v1/projects/bench/ports/8080/bench.txt"
let relay32 = try wrk(bound, path: relayPath, body: nil, connections: 32)
var directSamples: [Double] = []
var relayed: [Load] = []
for _ in 0..<3 {
    directSamples += try await direct(200)
    relayed.append(try wrk(bound, path: relayPath, body: nil, connections: 1))
}
let relayP50 = percentile(relayed.map(\.p50), 0.5)
let directP50 = percentile(directSamples, 0.5)
print(
    "| GET ports/8080/bench.txt (relay to busybox httpd; median of 3 rounds at 1) | 1 | \(format(relayP50)) | "
        + "\(format(percentile(relayed.map(\.p99), 0.5))) | \(Int(percentile(relayed.map(\.perSecond), 0.5))) |")
print(
    "| GET ports/8080/bench.txt | 32 | \(format(relay32.p50)) | \(format(relay32.p99)) | \(Int(relay32.perSecond)) |")
print(
    "| in-process: a socket in the sandbox, the same GET (baseline) | 1 | \(format(directP50)) | "
        + "\(format(percentile(directSamples, 0.99))) | |")
print("(the relay adds \(format(relayP50 - directP50)) ms at p50 over the direct request)")
_ = try await host.jobs.cancel(httpd.id, signal: .kill)
// The same read while 4 CPU-bound builds run in the project (busy loops in the long lane):
// the file tools run in the host, not in the project's cgroup, so a build saturating the
// project's CPU must not slow them.
var builds: [String] = []
for _ in 0..<4 {
    let build = try await host.jobService.submit(
        JobRequest(project: "bench", command: "while :; do :; done", timeoutSeconds: 600, background: true))
    builds.append(build.id)
}
try await Task.sleep(for: .seconds(1))
for connections in [1, 32] {
    let load = try wrk(bound, path: calls[2].1, body: calls[2].2, connections: connections)
    rows["read_file during builds \(connections)"] = load
    print(
        "| POST tools/read_file while 4 CPU-bound builds run | \(connections) | \(format(load.p50)) | "
            + "\(format(load.p99)) | \(Int(load.perSecond)) |")
}
var buildCPU = 0
var buildWall = 0
for build in builds {
    let ended = try await host.jobs.cancel(build, signal: .kill)
    buildCPU += ended.record.result?.cpuMs ?? 0
    buildWall = max(buildWall, ended.record.result?.durationMs ?? 0)
}
print("(the 4 builds used \(buildCPU) ms of CPU in \(buildWall) ms: the project's limit is 1 CPU)")
// Exec over HTTP and in-process, interleaved in rounds so load drift hits both alike.
var inProcess: [Double] = []
var overHTTP: [Double] = []
for _ in 0..<5 {
    inProcess += try await inProcessExec(50)
    overHTTP.append(try wrk(bound, path: "/v1/projects/bench/exec", body: calls[1].2, connections: 1).p50)
}
let base = percentile(inProcess, 0.5)
rows["POST exec `true` 1"]?.p50 = percentile(overHTTP, 0.5)
print("")
print("interleaved: exec over HTTP p50 (median of 5 rounds) \(format(percentile(overHTTP, 0.5))) ms")
print("")
print("| in-process `host.exec(true)` (baseline) | 1 | \(format(base)) | \(format(percentile(inProcess, 0.99))) | |")
if let exec = rows["POST exec `true` 1"], let health = rows["GET /health (baseline) 1"] {
    print("")
    print(
        "exec over HTTP p50 / in-process p50 = \(String(format: "%.2f", exec.p50 / base))×; "
            + "HTTP adds \(format(exec.p50 - base)) ms (GET /health p50 \(format(health.p50)) ms)")
}

await group.triggerGracefulShutdown()
_ = try? await server.value
// The data directory is thrown away: its workspace volumes go with it (a kept host
// would leave them mounted for its next start to adopt).
for project in await host.projects() { try? await host.evict(project.id, discard: true) }
await host.shutdown(grace: .seconds(5))
