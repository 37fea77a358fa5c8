import Foundation
import Host
import TestSupport
import Testing

/// Materialization of a 10,000-file, ~100 MB project against `bsdtar -xf` of the same
/// archive, measured in the same run (these machines are noisy). Not a timed test: it only
/// runs with CORRAL_BENCH=1 (see benchmarks/materialize) and prints p50/p99 and ratios.
@Suite(.enabled(if: ProcessInfo.processInfo.environment["CORRAL_BENCH"] == "1", "benchmark: set CORRAL_BENCH=1"))
struct CacheBenchmarkTests {
    static let files = 10_000
    static let runs = Int(ProcessInfo.processInfo.environment["CORRAL_BENCH_RUNS"] ?? "") ?? 7

    /// Source-like content: words from a small vocabulary, so it compresses roughly like code.
    static func makeTree(_ root: String) throws -> Int64 {
        let words = [
            "let", "func", "return", "if", "else", "struct", "import", "value", "count", "error", "{", "}", "(", ")",
        ]
        var total: Int64 = 0
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in 0..<files {
            let dir = "\(root)/pkg\(i % 50)/mod\(i % 7)"
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let size = 2_000 + Int(seed % 16_000)
            var text = ""
            text.reserveCapacity(size + 16)
            while text.utf8.count < size {
                seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                text += words[Int(seed >> 60) % words.count]
                text += (seed >> 40) % 9 == 0 ? "\n" : " "
            }
            try text.write(toFile: "\(dir)/file\(i).swift", atomically: false, encoding: .utf8)
            total += Int64(text.utf8.count)
        }
        return total
    }

    static func run(_ tool: String, _ args: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else { throw TestSupportError("\(tool) \(args) failed") }
    }

    static func percentile(_ xs: [Double], _ p: Double) -> Double {
        let s = xs.sorted()
        return s[min(s.count - 1, Int((Double(s.count - 1) * p).rounded()))]
    }

    static func ms(_ d: Duration) -> Double {
        Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
    }

    @Test func materializeVersusBsdtar() async throws {
        let tmp = try TemporaryDirectory(prefix: "corral-bench")
        let bytes = try Self.makeTree(tmp.path + "/tree")
        let archive = tmp.path + "/sources/project.tar.zst"
        try FileManager.default.createDirectory(atPath: tmp.path + "/sources", withIntermediateDirectories: true)
        try Self.run("/usr/bin/bsdtar", ["--zstd", "-cf", archive, "-C", tmp.path + "/tree", "."])
        let archiveSize = (try FileManager.default.attributesOfItem(atPath: archive)[.size] as? Int) ?? 0

        let stores = BlobStores(
            primary: LocalBlobStore(directory: tmp.path + "/blobs"), fileRoots: [tmp.path + "/sources"])
        let cache = try await ProjectCache.open(
            CacheConfiguration(dataDirectory: tmp.path + "/data", stores: stores, snapshotInterval: nil))
        try await cache.register("bench", source: "file://\(archive)")

        var corral: [Double] = []
        var extractOnly: [Double] = []
        var bsdtar: [Double] = []
        let clock = ContinuousClock()
        for i in 0..<Self.runs {
            corral.append(Self.ms(try await clock.measure { _ = try await cache.materialize("bench") }))
            try await cache.evict("bench", discard: true)

            let stage = "\(tmp.path)/x\(i)"
            try FileManager.default.createDirectory(atPath: stage, withIntermediateDirectories: true)
            extractOnly.append(Self.ms(try clock.measure { _ = try Extractor.extract(archive: archive, into: stage) }))
            try FileManager.default.removeItem(atPath: stage)

            let out = "\(tmp.path)/b\(i)"
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            bsdtar.append(Self.ms(try clock.measure { try Self.run("/usr/bin/bsdtar", ["-xf", archive, "-C", out]) }))
            try FileManager.default.removeItem(atPath: out)
        }
        func line(_ name: String, _ xs: [Double]) -> String {
            let p50 = Self.percentile(xs, 0.5)
            let p99 = Self.percentile(xs, 0.99)
            let ratio = p50 / Self.percentile(bsdtar, 0.5)
            return "\(name.padding(toLength: 34, withPad: " ", startingAt: 0)) p50 \(String(format: "%8.1f", p50)) ms"
                + "  p99 \(String(format: "%8.1f", p99)) ms  ×bsdtar \(String(format: "%.2f", ratio))"
        }
        print(
            """
            materialize benchmark: \(Self.files) files, \(bytes / 1_000_000) MB, tar.zst \(archiveSize / 1_000_000) MB, \(Self.runs) runs
            \(line("bsdtar -xf (baseline)", bsdtar))
            \(line("Extractor.extract", extractOnly))
            \(line("ProjectCache.materialize (full)", corral))
            """)
        #expect(corral.count == Self.runs)
    }
}
