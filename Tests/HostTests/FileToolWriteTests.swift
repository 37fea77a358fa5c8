import Foundation
import Host
import Testing

/// `write_file`: atomic replacement, parents, ownership, modes and the stale-file check.
@Suite struct FileToolWriteTests {
    @Test func createsFileAndParentsOwnedByTheJobUser() throws {
        let f = try FileToolFixture()
        let result = try f.tools.writeFile("a/b/c.txt", content: "hello\nworld\n")
        #expect(result.created)
        #expect(result.bytesWritten == 12)
        #expect(result.text == "Created `a/b/c.txt`: 12 bytes, 2 lines.")
        #expect(f.contents("a/b/c.txt") == "hello\nworld\n")
        for (path, mode) in [("a", S_IFDIR | 0o755), ("a/b", S_IFDIR | 0o755), ("a/b/c.txt", S_IFREG | 0o644)] {
            let st = try #require(f.stat(path))
            #expect(st.st_uid == FileToolFixture.owner.uid, "\(path)")
            #expect(st.st_gid == FileToolFixture.owner.gid, "\(path)")
            #expect(st.st_mode == mode, "\(path)")
        }
    }

    @Test func overwritingReplacesTheInodeKeepsTheModeAndLeavesNoTemporaryFile() throws {
        let f = try FileToolFixture(files: ["run.sh": "#!/bin/sh\n"])
        chmod(f.root + "/run.sh", 0o4755)
        let before = try #require(f.stat("run.sh"))
        let result = try f.tools.writeFile("run.sh", content: "#!/bin/sh\necho hi\n")
        #expect(!result.created)
        #expect(result.text == "Overwrote `run.sh`: 18 bytes, 2 lines.")
        let after = try #require(f.stat("run.sh"))
        #expect(after.st_ino != before.st_ino)  // renamed over, never written in place
        #expect(after.st_mode == S_IFREG | 0o755)  // setuid dropped
        #expect(after.st_uid == FileToolFixture.owner.uid)
        for index in 0..<20 { _ = try f.tools.writeFile("run.sh", content: "v\(index)") }
        #expect(f.names() == ["run.sh"])
        #expect(f.contents("run.sh") == "v19")
    }

    @Test func emptyContentAndUnicodeAreWrittenExactly() throws {
        let f = try FileToolFixture()
        _ = try f.tools.writeFile("empty", content: "")
        _ = try f.tools.writeFile("uni.txt", content: "héllo 🌍\r\n")
        #expect(f.contents("empty") == "")
        #expect(Array(f.contents("uni.txt")!.utf8) == Array("héllo 🌍\r\n".utf8))
    }

    @Test func writingADirectoryOrThroughAFileFails() throws {
        let f = try FileToolFixture(files: ["dir/a.txt": "x", "file.txt": "y"])
        let before = f.snapshot()
        expectError(.isDirectory(path: "dir")) { try f.tools.writeFile("dir", content: "x") }
        expectError(.isDirectory(path: ".")) { try f.tools.writeFile(".", content: "x") }
        expectError(.isDirectory(path: ".")) { try f.tools.writeFile("/workspace/", content: "x") }
        #expect(errorOf { try f.tools.writeFile("file.txt/inner", content: "x") }?.code == "not_found")
        #expect(f.snapshot() == before)
    }

    @Test func writesThroughASymlinkedDirectoryInsideTheProject() throws {
        let f = try FileToolFixture(files: ["real/keep.txt": ""])
        try f.symlink("alias", to: "real")
        try f.symlink("absalias", to: "/real")
        _ = try f.tools.writeFile("alias/new.txt", content: "via link")
        _ = try f.tools.writeFile("absalias/abs.txt", content: "via absolute link")
        #expect(f.contents("real/new.txt") == "via link")
        #expect(f.contents("real/abs.txt") == "via absolute link")
        #expect(f.names() == ["absalias", "alias", "real"])
    }

    @Test func staleFileFlow() throws {
        let f = try FileToolFixture(files: ["a.txt": "one\n"])
        // Never read by this caller: refused; new files need no read.
        expectError(.staleFile(path: "a.txt", reason: .neverRead)) {
            try f.tools.writeFile("a.txt", content: "two\n", caller: "agent-1")
        }
        _ = try f.tools.writeFile("new.txt", content: "fresh\n", caller: "agent-1")
        // Read, then write: fine, and writing again needs no new read.
        _ = try f.tools.readFile("/workspace/a.txt", caller: "agent-1")
        _ = try f.tools.writeFile("a.txt", content: "two\n", caller: "agent-1")
        _ = try f.tools.writeFile("./a.txt", content: "three\n", caller: "agent-1")
        // A job changes the file behind the agent's back.
        try f.write("a.txt", "changed by a job\n")
        expectError(.staleFile(path: "a.txt", reason: .modified)) {
            try f.tools.writeFile("a.txt", content: "four\n", caller: "agent-1")
        }
        expectError(.staleFile(path: "a.txt", reason: .modified)) {
            try f.tools.editFile("a.txt", oldString: "job", newString: "agent", caller: "agent-1")
        }
        #expect(f.contents("a.txt") == "changed by a job\n")
        // Another caller's reads do not count, and calls without a caller are not checked.
        _ = try f.tools.readFile("a.txt", caller: "agent-2")
        #expect(errorOf { try f.tools.writeFile("a.txt", content: "x", caller: "agent-1") }?.code == "stale_file")
        _ = try f.tools.writeFile("a.txt", content: "unchecked\n")
        // Re-reading clears it.
        _ = try f.tools.readFile("a.txt", caller: "agent-1")
        _ = try f.tools.writeFile("a.txt", content: "five\n", caller: "agent-1")
        #expect(f.contents("a.txt") == "five\n")
    }

    @Test func aTouchThatKeepsSizeAndMtimeIsStillSeen() throws {
        let f = try FileToolFixture(files: ["a.txt": "abc\n"])
        f.setModified("a.txt", 1_600_000_000)
        _ = try f.tools.readFile("a.txt", caller: "agent")
        // Same size, mtime set back: only ctime (and, here, the inode) tells.
        try f.write("a.txt", "xyz\n")
        f.setModified("a.txt", 1_600_000_000)
        expectError(.staleFile(path: "a.txt", reason: .modified)) {
            try f.tools.writeFile("a.txt", content: "mine\n", caller: "agent")
        }
    }
}
