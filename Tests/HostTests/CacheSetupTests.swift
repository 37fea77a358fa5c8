import Foundation
import TestSupport
import Testing

@testable import Host

/// The record of a project's setup goes with the workspace it prepared: through the index
/// across a restart, beside the write-back snapshot through an eviction or to another host,
/// and nowhere the files are new.
@Suite struct CacheSetupTests {
    static func record(_ key: String, _ status: SetupRecord.Status = .succeeded) -> SetupRecord {
        SetupRecord(
            status: status, key: key, startedAt: Date(timeIntervalSince1970: 1_800_000_000), durationMs: 12,
            exitCode: 0, outputTail: "$ true\n")
    }

    @Test func theRecordFollowsTheTreeThroughARestartAWriteBackAndAnotherHost() async throws {
        let f = try CacheFixture()
        let source = try f.source("p.tar.gz", CacheFixture.project)
        let cache = try await f.open()
        try await cache.register("p", source: source)
        let workspace = try await cache.materialize("p")
        let state = try await cache.setupState("p")
        // Fresh files from the source: none ran, and the base is the source's version.
        #expect(state.record == nil && state.workspace == workspace)
        let base = try #require(state.baseVersion)
        #expect(base == "sha256:" + f.sha256(ofFile: f.sources + "/p.tar.gz"))
        #expect(try await !cache.isDirty("p"))

        // A setup that ends leaves the workspace dirty even when it wrote nothing.
        #expect(try await cache.recordSetup("p", Self.record("k1"), on: workspace))
        #expect(try await cache.isDirty("p"))
        // A record for a workspace that is no longer the project's changes nothing.
        var stale = workspace
        stale.materializedAt = .distantPast
        #expect(try await !cache.recordSetup("p", Self.record("k2"), on: stale))

        let reopened = try await f.open()
        #expect(try await reopened.setupState("p").record == Self.record("k1"))
        try await reopened.evict("p")
        let sidecar = try #require(FileManager.default.contents(atPath: f.blobs + "/snapshots/p.setup.json"))
        let written = try JSONDecoder().decode(SetupSidecar.self, from: sidecar)
        #expect(written.setup == Self.record("k1") && written.baseVersion == base)
        // Another host with its own index, sharing the store, restores the record with the tree.
        var elsewhere = f.configuration(primary: LocalBlobStore(directory: f.blobs))
        elsewhere.dataDirectory = f.tmp.path + "/elsewhere"
        let second = try await ProjectCache.open(elsewhere)
        try await second.register("p", source: source)
        _ = try await second.materialize("p")
        let restored = try await second.setupState("p")
        #expect(restored.record == Self.record("k1") && restored.baseVersion == base)
        #expect(try await !second.isDirty("p"))
    }

    @Test func aSidecarOfAnotherSnapshotIsNoRecord() async throws {
        let f = try CacheFixture()
        let cache = try await f.open()
        try await cache.register("p", source: try f.source("p.tar.gz", CacheFixture.project))
        let workspace = try await cache.materialize("p")
        _ = try await cache.recordSetup("p", Self.record("k1"), on: workspace)
        _ = try await cache.snapshot("p", force: true)
        // The host stopped between the archive's upload and its sidecar's: the sidecar is an
        // older write-back's.
        let path = f.blobs + "/snapshots/p.setup.json"
        var sidecar = try JSONDecoder().decode(
            SetupSidecar.self, from: try #require(FileManager.default.contents(atPath: path)))
        sidecar.snapshotVersion = "sha256:" + String(repeating: "0", count: 64)
        try JSONEncoder().encode(sidecar).write(to: URL(fileURLWithPath: path))
        try await cache.evict("p", discard: true)
        _ = try await cache.materialize("p")
        #expect(try await cache.setupState("p").record == nil)
    }

    @Test func newFilesStartWithoutARecordAndTakeTheSidecarWithTheSnapshot() async throws {
        let f = try CacheFixture()
        let cache = try await f.open()
        let archive = try ArchiveFixture.tarGz(["a.txt": "a\n"])
        try await cache.upload("p", bytes: archive)
        let first = try await cache.setupState("p")
        let sha = SHA256.hash(archive).hexString
        #expect(first.baseVersion == "sha256:\(sha)" && first.record == nil)
        _ = try await cache.recordSetup("p", Self.record("k1"), on: try #require(first.workspace))
        _ = try await cache.snapshot("p")
        #expect(FileManager.default.fileExists(atPath: f.blobs + "/snapshots/p.setup.json"))
        // A patch keeps it: the project's source is the same.
        _ = try await cache.patch("p", bytes: try ArchiveFixture.tarGz(["b.txt": "b\n"]))
        #expect(try await cache.setupState("p").record == Self.record("k1"))
        // A replacement does not, and the old snapshot's sidecar goes with the old snapshot.
        let replacement = try ArchiveFixture.tarGz(["a.txt": "a2\n"])
        try await cache.upload("p", bytes: replacement)
        let replaced = try await cache.setupState("p")
        #expect(replaced.record == nil)
        #expect(replaced.baseVersion == "sha256:" + SHA256.hash(replacement).hexString)
        #expect(!FileManager.default.fileExists(atPath: f.blobs + "/snapshots/p.setup.json"))
        try await cache.remove("p")
    }
}
