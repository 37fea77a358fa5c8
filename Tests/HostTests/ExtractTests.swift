import Foundation
import Glibc
import Host
import TestSupport
import Testing

/// The extractor against every bad-archive attack in THREATS.md, plus the formats it must read.
///
/// Each test extracts into `<tmp>/box/stage` with a sentinel directory `<tmp>/outside`;
/// after an attack, nothing may exist outside `stage` that was not there before.
@Suite struct ExtractTests {
    let tmp: TemporaryDirectory
    let stage: String
    let outside: String

    init() throws {
        tmp = try TemporaryDirectory(prefix: "corral-extract")
        stage = tmp.path + "/box/stage"
        outside = tmp.path + "/outside"
        try FileManager.default.createDirectory(atPath: stage, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
    }

    func archive(_ entries: [ArchiveFixture.Entry], _ format: ArchiveFixture.Format = .tarGz) throws -> String {
        let path = tmp.path + "/input.\(UUID().uuidString).\(format.rawValue)"
        try ArchiveFixture.write(entries, format: format, to: path)
        return path
    }

    /// Extracts and expects `error`; then checks that nothing appeared outside the stage.
    func expectRejected(
        _ entries: [ArchiveFixture.Entry], _ format: ArchiveFixture.Format = .tarGz,
        limits: ExtractionLimits = ExtractionLimits(), rejects error: CacheError
    ) throws {
        let input = try archive(entries, format)
        let before = allPaths(tmp.path).filter { !$0.hasPrefix("box/stage/") && !$0.hasPrefix("input.") }
        #expect(throws: error) { try Extractor.extract(archive: input, into: stage, limits: limits) }
        let after = allPaths(tmp.path).filter { !$0.hasPrefix("box/stage/") && !$0.hasPrefix("input.") }
        #expect(after == before)
        #expect(allPaths(outside).isEmpty)
    }

    // MARK: - Formats

    @Test(arguments: ArchiveFixture.Format.allCases)
    func extractsEveryFormatExactly(_ format: ArchiveFixture.Format) throws {
        let input = try archive(
            [
                .dir("src"), .file("src/main.py", "print('hi')\n"),
                .file("run.sh", "#!/bin/sh\necho ok\n", mode: 0o755),
                .file("empty.txt", ""), .file("deep/a/b/c.txt", "nested"), .symlink("latest", to: "src/main.py"),
            ], format)
        let report = try Extractor.extract(archive: input, into: stage)
        #expect(
            describeTree(stage) == [
                "src": "dir", "src/main.py": "file:print('hi')\n", "run.sh": "file:#!/bin/sh\necho ok\n",
                "empty.txt": "file:", "deep": "dir", "deep/a": "dir", "deep/a/b": "dir",
                "deep/a/b/c.txt": "file:nested",
                "latest": "link:src/main.py",
            ])
        #expect(lstatMode(stage + "/run.sh") & 0o7777 == 0o755)
        #expect(lstatMode(stage + "/empty.txt") & 0o7777 == 0o644)
        #expect(report.files == 4)
        #expect(report.symlinks == 1)
        #expect(report.bytes == Int64("print('hi')\n".utf8.count + "#!/bin/sh\necho ok\n".utf8.count + 6))
    }

    @Test func laterEntryWinsLikeTar() throws {
        let input = try archive([.file("a.txt", "old"), .file("a.txt", "new")])
        _ = try Extractor.extract(archive: input, into: stage)
        #expect(describeTree(stage) == ["a.txt": "file:new"])
    }

    // MARK: - Paths

    @Test(arguments: [ArchiveFixture.Format.tarGz, .zip])
    func zipSlipIsRejected(_ format: ArchiveFixture.Format) throws {
        try expectRejected(
            [.file("ok.txt", "fine"), .file("../../outside/x", "pwned")], format,
            rejects: .unsafeEntry(path: "../../outside/x", reason: "path contains '..'"))
    }

    @Test func absolutePathIsRejected() throws {
        let target = outside + "/abs.txt"
        try expectRejected([.file(target, "pwned")], rejects: .unsafeEntry(path: target, reason: "absolute path"))
        #expect(!FileManager.default.fileExists(atPath: target))
    }

    @Test(arguments: [ArchiveFixture.Format.tar, .zip])
    func fileThroughAnEarlierSymlinkIsRejected(_ format: ArchiveFixture.Format) throws {
        try expectRejected(
            [.symlink("escape", to: outside), .file("escape/pwned.txt", "pwned")], format,
            rejects: .unsafeEntry(path: "escape/pwned.txt", reason: "escape is a symlink or a file, not a directory"))
    }

    @Test func fileReplacingAnEarlierSymlinkReplacesTheLinkNotItsTarget() throws {
        let victim = outside + "/victim.txt"
        try "original".write(toFile: victim, atomically: true, encoding: .utf8)
        let input = try archive([.symlink("evil", to: victim), .file("evil", "pwned")])
        _ = try Extractor.extract(archive: input, into: stage)
        #expect(describeTree(stage) == ["evil": "file:pwned"])
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "original")
    }

    @Test func directoryCannotBeReplacedByALink() throws {
        try expectRejected(
            [.dir("d"), .file("d/f", "x"), .symlink("d", to: outside)],
            rejects: .unsafeEntry(path: "d", reason: "would replace a directory"))
    }

    // MARK: - Links

    @Test func hardlinkToAHostFileIsRejected() throws {
        try expectRejected(
            [.hardlink("passwd", to: "/etc/passwd")],
            rejects: .unsafeEntry(path: "/etc/passwd", reason: "absolute hardlink target"))
        try expectRejected(
            [.hardlink("passwd", to: "../../../../etc/passwd")],
            rejects: .unsafeEntry(path: "../../../../etc/passwd", reason: "hardlink target contains '..'"))
    }

    @Test func hardlinkThroughASymlinkIsRejected() throws {
        try expectRejected(
            [.symlink("l", to: "/etc/passwd"), .hardlink("h", to: "l")],
            rejects: .unsafeEntry(path: "h", reason: "hardlink target l is not a file extracted earlier"))
    }

    @Test func hardlinkInsideTheProjectSharesTheInode() throws {
        let input = try archive([.file("a.txt", "same"), .hardlink("b.txt", to: "a.txt")], .tar)
        let report = try Extractor.extract(archive: input, into: stage)
        #expect(describeTree(stage) == ["a.txt": "file:same", "b.txt": "file:same"])
        #expect(lstatInode(stage + "/a.txt") == lstatInode(stage + "/b.txt"))
        #expect(report.hardlinks == 1)
    }

    // MARK: - Special files and modes

    @Test func deviceNodesAreRejected() throws {
        try expectRejected([.device("null")], rejects: .unsafeEntry(path: "null", reason: "device node"))
        try expectRejected([.device("sda", block: true)], rejects: .unsafeEntry(path: "sda", reason: "device node"))
    }

    @Test func fifosAreRejected() throws {
        try expectRejected([.fifo("pipe")], rejects: .unsafeEntry(path: "pipe", reason: "FIFO"))
    }

    @Test func setuidSetgidAndStickyBitsAreStripped() throws {
        let input = try archive([.file("suid", "x", mode: 0o4755), .dir("sgid", mode: 0o3775), .file("plain", "y")])
        let report = try Extractor.extract(archive: input, into: stage)
        #expect(lstatMode(stage + "/suid") & 0o7777 == 0o755)
        #expect(lstatMode(stage + "/sgid") & 0o7777 == 0o775)
        #expect(report.strippedModes == 2)
    }

    // MARK: - Caps

    @Test func zipBombIsStoppedByTheRatioCap() throws {
        let limits = ExtractionLimits(maxCompressionRatio: 100, ratioAllowance: 1 << 20)
        try expectRejected(
            [.zeros("bomb.bin", 20 << 20)], .zip, limits: limits,
            rejects: .tooLarge("compression ratio above 100:1 (zip bomb?)"))
    }

    @Test func hugeEntryIsStoppedByTheByteCap() throws {
        try expectRejected(
            [.zeros("big.bin", 2 << 20)], .tarGz, limits: ExtractionLimits(maxBytes: 1 << 20),
            rejects: .tooLarge("big.bin declares 2097152 bytes, over the 1048576-byte cap"))
    }

    @Test func entryCountIsCapped() throws {
        try expectRejected(
            (0..<11).map { .file("f\($0)", "") }, limits: ExtractionLimits(maxEntries: 10),
            rejects: .tooLarge("archive has more than 10 entries"))
    }

    // MARK: - Corrupt input

    @Test func garbageIsACorruptArchive() throws {
        let input = tmp.path + "/garbage.bin"
        try Data(repeating: 0x5a, count: 4096).write(to: URL(fileURLWithPath: input))
        #expect(throws: CacheError.corruptArchive("Unrecognized archive format")) {
            try Extractor.extract(archive: input, into: stage)
        }
    }

    @Test func truncatedArchiveIsACorruptArchive() throws {
        let input = try archive((0..<50).map { .file("f\($0).txt", String(repeating: "data \($0) ", count: 400)) })
        let bytes = try Data(contentsOf: URL(fileURLWithPath: input))
        try bytes.prefix(bytes.count / 2).write(to: URL(fileURLWithPath: input))
        do {
            _ = try Extractor.extract(archive: input, into: stage)
            Issue.record("a truncated archive was accepted")
        } catch {
            guard case .corruptArchive = error else {
                Issue.record("expected corruptArchive, got \(error)")
                return
            }
        }
    }

    /// libarchive's mtree reader would read `/etc/passwd` from the host as file content;
    /// only tar and zip are enabled, so this is not an archive at all.
    @Test func mtreeManifestNamingHostFilesIsNotRead() throws {
        let input = tmp.path + "/evil.mtree"
        try "#mtree\npasswd type=file contents=/etc/passwd\n".write(toFile: input, atomically: true, encoding: .utf8)
        #expect(throws: CacheError.corruptArchive("Unrecognized archive format")) {
            try Extractor.extract(archive: input, into: stage)
        }
        #expect(allPaths(stage).isEmpty)
    }
}
