import Foundation
import Host

// MARK: - Forks (docs/BENCHMARKS.md, "Forks")

/// A workspace of `files` files of `bytes` bytes each in 100 directories, written directly
/// (a tar of 1 GiB would cost more than the tree), then packed with bsdtar as an upload.
/// Contents differ per file but compress well, so the archive stays small in memory.
func forkTree(at root: String, files: Int, bytes: Int) throws -> [UInt8] {
    for d in 0..<100 {
        try FileManager.default.createDirectory(atPath: "\(root)/t/d\(d)", withIntermediateDirectories: true)
    }
    for i in 0..<files {
        let line = "file \(i) of the fork benchmark\n"
        var text = String(repeating: line, count: max(1, bytes / line.utf8.count))
        text += String(repeating: "x", count: max(0, bytes - text.utf8.count))
        try text.write(toFile: "\(root)/t/d\(i % 100)/f\(i).txt", atomically: false, encoding: .utf8)
    }
    let tar = Process()
    tar.executableURL = URL(fileURLWithPath: "/usr/bin/bsdtar")
    tar.arguments = ["--zstd", "-cf", "\(root)/t.tar.zst", "-C", "\(root)/t", "."]
    try tar.run()
    tar.waitUntilExit()
    try FileManager.default.removeItem(atPath: "\(root)/t")
    defer { try? FileManager.default.removeItem(atPath: "\(root)/t.tar.zst") }
    return Array(try Data(contentsOf: URL(fileURLWithPath: "\(root)/t.tar.zst")))
}

func milliseconds(_ d: Duration) -> Double {
    Double(d.components.attoseconds) / 1e15 + Double(d.components.seconds) * 1000
}

/// Waits (outside any clock) until the host's spare filesystems are refilled, as they are
/// between forks on a host that is not forking continuously.
func awaitSpares(_ host: CorralHost) async throws {
    for _ in 0..<600 {
        let counts = await host.cache.spareCounts
        if !counts.isEmpty && counts.values.allSatisfy({ $0 >= 2 }) { return }
        try await Task.sleep(for: .milliseconds(50))
    }
}

/// `cp -a` of the project's workspace, `runs` times, in ms (each copy removed after).
func copyTimes(_ host: CorralHost, _ id: String, to scratch: String, runs: Int) async throws -> [Double] {
    guard let workspace = try await host.cache.currentWorkspace(id) else { throw BenchFailure(message: "\(id) cold") }
    var samples: [Double] = []
    for _ in 0..<runs {
        let cp = Process()
        cp.executableURL = URL(fileURLWithPath: "/bin/cp")
        cp.arguments = ["-a", workspace.path, scratch]
        let start = ContinuousClock.now
        try cp.run()
        cp.waitUntilExit()
        samples.append(milliseconds(ContinuousClock.now - start))
        try FileManager.default.removeItem(atPath: scratch)
    }
    return samples
}

/// Forks of `id`'s current workspace, `runs` times each way, in ms: with the source changed
/// since its last fork (its tree is frozen into a new layer: two new volumes), and unchanged
/// (the fork shares its stack: one new volume). Each fork is deleted outside the clock.
func forkTimes(_ host: CorralHost, _ id: String, runs: Int) async throws -> (changed: [Double], unchanged: [Double]) {
    var changed: [Double] = []
    var unchanged: [Double] = []
    for i in 0..<(2 * runs) {
        let dirty = i % 2 == 0
        if dirty {
            let r = try await host.jobService.run(
                JobRequest(project: id, command: "echo \(i) > changed-\(i)", timeoutSeconds: 30), budget: .seconds(30))
            guard r.record.result?.exitCode == 0 else {
                throw BenchFailure(message: "change: \(r.record.error ?? "?")")
            }
        }
        try await awaitSpares(host)
        let start = ContinuousClock.now
        _ = try await host.fork(id, into: "\(id)-fork-\(i)")
        let elapsed = milliseconds(ContinuousClock.now - start)
        if dirty { changed.append(elapsed) } else { unchanged.append(elapsed) }
        try await host.delete("\(id)-fork-\(i)")
    }
    return (changed, unchanged)
}

/// The same test suite (`command`) in 8 projects at once: 8 forks of the warm `id`, or 8
/// uploads of `archive`; ms from the first call until the 8th result.
func eightAtOnce(_ host: CorralHost, _ id: String, archive: [UInt8], command: String) async throws
    -> (forks: Double, uploads: Double)
{
    func suite(_ project: String) async throws {
        let r = try await host.jobService.run(
            JobRequest(project: project, command: command, timeoutSeconds: 600), budget: .seconds(600))
        guard r.record.result?.exitCode == 0 else { throw BenchFailure(message: "suite: \(r.record.error ?? "?")") }
    }
    try await awaitSpares(host)
    var start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<8 {
            // Forks of one source are made one at a time (each waits for the last), and each
            // fork's suite starts as soon as it exists.
            _ = try await host.fork(id, into: "\(id)-eight-\(i)")
            group.addTask { try await suite("\(id)-eight-\(i)") }
        }
        try await group.waitForAll()
    }
    let forks = milliseconds(ContinuousClock.now - start)
    for i in 0..<8 { try await host.delete("\(id)-eight-\(i)") }
    start = ContinuousClock.now
    try await withThrowingTaskGroup(of: Void.self) { group in
        for i in 0..<8 {
            group.addTask {
                _ = try await host.upload("\(id)-upload-\(i)", archive: archive)
                try await suite("\(id)-upload-\(i)")
            }
        }
        try await group.waitForAll()
    }
    let uploads = milliseconds(ContinuousClock.now - start)
    for i in 0..<8 { try await host.delete("\(id)-upload-\(i)") }
    return (forks, uploads)
}

/// The "Forks" section: for each tree, fork p50/p99 beside `cp -a` of the same workspace,
/// and for the 80 MB tree 8 forks vs 8 uploads running the same suite.
func forkSection(_ host: CorralHost, scratch: String, sizes: [(label: String, files: Int, bytes: Int)]) async throws {
    print("## Forks: fork of the current workspace vs `cp -a` of it (in-process)")
    print("")
    print("| workspace | step | runs | p50 ms | p99 ms | p50 vs `cp -a` |")
    print("|---|---|---|---|---|---|")
    var eight: (forks: Double, uploads: Double)?
    for size in sizes {
        let id = "fork-\(size.files)"
        let archive = try forkTree(at: scratch, files: size.files, bytes: size.bytes)
        _ = try await host.upload(id, archive: archive)
        // A sandbox has run over it, as over any project an agent worked in.
        _ = try await host.jobService.run(
            JobRequest(project: id, command: "true", timeoutSeconds: 60), budget: .seconds(60))
        let copies = try await copyTimes(host, id, to: scratch + "/copy", runs: 3)
        let forks = try await forkTimes(host, id, runs: 15)
        let cp = percentile(copies, 0.5)
        for (name, samples) in [
            ("`cp -a` (baseline)", copies), ("fork, source changed since its last fork", forks.changed),
            ("fork, source unchanged", forks.unchanged),
        ] {
            print(
                "| \(size.label) | \(name) | \(samples.count) | \(format(percentile(samples, 0.5))) | "
                    + "\(format(percentile(samples, 0.99))) | \(String(format: "%.4f×", percentile(samples, 0.5) / cp)) |"
            )
        }
        if size.files <= 20_000 {
            eight = try await eightAtOnce(
                host, id, archive: archive, command: "find . -type f -name '*.txt' -exec cat {} + | wc -c")
        }
        try await host.delete(id)
    }
    if let eight {
        print("")
        print("| 8 projects running the same suite (read every file) at once | ms to all 8 results |")
        print("|---|---|")
        print("| 8 forks of one warm project | \(format(eight.forks)) |")
        print("| 8 uploads of the same archive | \(format(eight.uploads)) |")
    }
    print("")
}
