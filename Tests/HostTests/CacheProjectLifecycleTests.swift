import Foundation
import Glibc
import Host
import TestSupport
import Testing

/// Deleting a project, replacing its files with a new upload, and patching them, at the
/// cache: exact trees before and after, and what is left in the blob store.
@Suite struct CacheProjectLifecycleTests {
    let f: CacheFixture

    init() throws { f = try CacheFixture() }

    /// An archive of `entries` as bytes, as an upload or a patch sends it.
    func archive(_ entries: [ArchiveFixture.Entry], format: ArchiveFixture.Format = .tarGz) throws -> [UInt8] {
        let path = f.tmp.path + "/archive-\(UUID().uuidString)"
        defer { unlink(path) }
        try ArchiveFixture.write(entries, format: format, to: path)
        return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
    }

    /// Blob keys in the local primary store.
    var blobs: [String] { describeTree(f.blobs).filter { $0.value != "dir" }.keys.sorted() }

    // MARK: - Delete

    @Test func removeTakesTheWorkspaceSnapshotUploadAndRowAndTheIdCanComeBack() async throws {
        let cache = try await f.open()
        try await cache.upload("p", bytes: try archive(CacheFixture.project))
        let ws = try await cache.materialize("p")
        try "edited".write(toFile: ws.path + "/README.md", atomically: false, encoding: .utf8)
        _ = try await cache.snapshot("p")
        #expect(blobs.count == 2)
        try await cache.remove("p")
        #expect(!FileManager.default.fileExists(atPath: ws.path))
        // No blob, and no directory the project's blobs were in.
        #expect(allPaths(f.blobs) == ["snapshots", "uploads"])
        #expect(f.dataContents().filter { $0.hasPrefix("workspaces/") || $0.hasPrefix("staging/") } == [])
        await #expect(throws: CacheError.unknownProject("p")) { try await cache.status("p") }
        // The row is gone from the index too: a reopened cache does not know the project.
        let reopened = try await f.open()
        #expect(await reopened.list().isEmpty)
        try await cache.upload("p", bytes: try archive([.file("fresh.txt", "new project\n")]))
        let again = try await cache.materialize("p")
        #expect(describeTree(again.path) == ["fresh.txt": "file:new project\n"])
    }

    @Test func removeRefusesAPinnedProjectAndKeepsEverything() async throws {
        let cache = try await f.open()
        try await cache.upload("p", bytes: try archive(CacheFixture.project))
        let ws = try await cache.acquire("p")
        await #expect(throws: CacheError.busy("p has 1 running job(s)")) { try await cache.remove("p") }
        #expect(describeTree(ws.path) == CacheFixture.projectTree)
        #expect(blobs.count == 1)
        try await cache.release("p")
        try await cache.remove("p")
        #expect(blobs == [])
    }

    // MARK: - Replace

    @Test func uploadOverAMaterializedProjectSwapsTheTreeAndDropsTheOldSnapshot() async throws {
        let cache = try await f.open()
        try await cache.upload("p", bytes: try archive(CacheFixture.project))
        let old = try await cache.materialize("p")
        try "edited".write(toFile: old.path + "/README.md", atomically: false, encoding: .utf8)
        _ = try await cache.snapshot("p")
        let oldKeys = blobs
        f.clock.advance(1)
        try await cache.upload("p", bytes: try archive([.dir("lib"), .file("lib/new.py", "print('v2')\n")]))
        let status = try await cache.status("p")
        #expect(status.state == .ready)
        #expect(status.dirty == false)
        #expect(status.snapshotVersion == nil)
        let new = try await cache.materialize("p")
        #expect(new.path == old.path)
        // A new materialization: a sandbox over the old one is replaced, not reused.
        #expect(new.materializedAt != old.materializedAt)
        #expect(new.sourceVersion != old.sourceVersion)
        #expect(describeTree(new.path) == ["lib": "dir", "lib/new.py": "file:print('v2')\n"])
        // The old upload and the old snapshot are gone; only the new archive is stored.
        #expect(blobs.count == 1)
        #expect(Set(blobs).isDisjoint(with: oldKeys))
        #expect(f.dataContents().filter { $0.hasPrefix("trash/") || $0.hasPrefix("staging/") } == [])
        // The new archive is the base: an eviction and a new materialization give it back.
        try await cache.evict("p")
        #expect(
            describeTree(try await cache.materialize("p").path) == ["lib": "dir", "lib/new.py": "file:print('v2')\n"])
    }

    @Test func uploadWhileTheWorkspaceIsInUseIsRefusedAndChangesNothing() async throws {
        let cache = try await f.open()
        try await cache.upload("p", bytes: try archive(CacheFixture.project))
        let ws = try await cache.acquire("p")
        let before = blobs
        await #expect {
            try await cache.upload("p", bytes: try archive([.file("other.txt", "x")]))
        } throws: { error in
            (error as? CacheError)?.code == "project_busy"
        }
        #expect(describeTree(ws.path) == CacheFixture.projectTree)
        #expect(blobs == before)
        #expect(f.dataContents().filter { $0.hasPrefix("staging/") } == [])
        try await cache.release("p")
    }

    // MARK: - Patch

    @Test func patchAddsOverwritesAndDeletesExactly() async throws {
        let cache = try await f.open()
        try await cache.upload(
            "p",
            bytes: try archive(
                CacheFixture.project + [
                    .dir("old"), .file("old/a.txt", "a"), .dir("old/deep"), .file("old/deep/b", "b"),
                ]
            ))
        let ws = try await cache.materialize("p")
        let patch = try archive([
            .file("src/app.py", "print('patched')\n"),  // overwrite
            .dir("src/new"), .file("src/new/mod.py", "x = 1\n"),  // a new directory
            .file("notes.txt", "added\n"),  // a new file
            .file(".wh.README.md", ""),  // delete a file
            .file(".wh.old", ""),  // delete a whole directory
            .file("src/.wh.missing", ""),  // a whiteout of nothing
            .file(".wh.app", ""), .file("app", "now a file\n"),  // delete, then write the same name
        ])
        let summary = try await cache.patch("p", bytes: patch)
        #expect(
            summary
                == PatchSummary(
                    project: "p", filesWritten: 4, directoriesCreated: 1, pathsDeleted: 3,
                    bytesWritten: Int64("print('patched')\n".utf8.count + 6 + 6 + 11)))
        #expect(
            describeTree(ws.path) == [
                "src": "dir", "src/app.py": "file:print('patched')\n", "src/new": "dir",
                "src/new/mod.py": "file:x = 1\n",
                "notes.txt": "file:added\n", "build.sh": "file:#!/bin/sh\nmake\n", "app": "file:now a file\n",
            ])
        #expect(try await cache.isDirty("p"))
        #expect(f.dataContents().filter { $0.hasPrefix("trash/") || $0.hasPrefix("staging/") } == [])
    }

    @Test(arguments: [
        ([ArchiveFixture.Entry.file("ok.txt", "x"), .file("../escape.txt", "x")], "unsafe_entry"),
        ([.file("ok.txt", "x"), .file("/abs.txt", "x")], "unsafe_entry"),
        ([.file("ok.txt", "x"), .device("null")], "unsafe_entry"),
        ([.file("ok.txt", "x"), .file("src/.wh..wh..opq", "")], "unsafe_entry"),
        // The workspace has a file `README.md`: a directory there needs a whiteout first.
        ([.file("ok.txt", "x"), .file("README.md/inner", "x")], "unsafe_entry"),
        // `app` is a symlink in the workspace: the patch never writes through it.
        ([.file("ok.txt", "x"), .file("app/inner", "x")], "unsafe_entry"),
        // `src` is a directory: a file cannot silently replace the tree.
        ([.file("ok.txt", "x"), .file("src", "x")], "unsafe_entry"),
    ])
    func hostileOrConflictingPatchChangesNothing(_ entries: [ArchiveFixture.Entry], code: String) async throws {
        let cache = try await f.open()
        try await cache.upload("p", bytes: try archive(CacheFixture.project))
        let ws = try await cache.materialize("p")
        await #expect {
            _ = try await cache.patch("p", bytes: try archive(entries))
        } throws: { error in
            (error as? CacheError)?.code == code
        }
        #expect(describeTree(ws.path) == CacheFixture.projectTree)
        #expect(try await cache.isDirty("p") == false)
        #expect(!FileManager.default.fileExists(atPath: f.tmp.path + "/escape.txt"))
        #expect(f.dataContents().filter { $0.hasPrefix("trash/") || $0.hasPrefix("staging/") } == [])
    }

    @Test func patchMaterializesAColdProjectFirst() async throws {
        let cache = try await f.open()
        try await cache.upload("p", bytes: try archive(CacheFixture.project))
        let summary = try await cache.patch("p", bytes: try archive([.file("extra.txt", "e")], format: .zip))
        #expect(summary.filesWritten == 1)
        let ws = try await cache.materialize("p")
        #expect(describeTree(ws.path)["extra.txt"] == "file:e")
        #expect(describeTree(ws.path)["README.md"] == "file:# demo\n")
    }
}
