import Foundation
import Host
import Testing

/// `edit_file` and `insert`: exact matching, uniqueness, near misses, all-or-nothing.
@Suite struct FileToolEditTests {
    static let source = (1...12).map { "line \($0)" }.joined(separator: "\n") + "\n"

    @Test func replacesOneOccurrenceAndShowsTheLinesAround() throws {
        let f = try FileToolFixture(files: ["a.txt": Self.source])
        let result = try f.tools.editFile("a.txt", oldString: "line 6\n", newString: "six\nsix and a half\n")
        #expect(result.replacements == 1)
        #expect(f.contents("a.txt") == Self.source.replacingOccurrences(of: "line 6\n", with: "six\nsix and a half\n"))
        #expect(
            result.snippet
                == "     2\tline 2\n     3\tline 3\n     4\tline 4\n     5\tline 5\n     6\tsix\n     7\tsix and a half\n"
                + "     8\tline 7\n     9\tline 8\n    10\tline 9\n    11\tline 10")
        #expect(result.text == "Edited `a.txt`: 1 replacement. The changed lines with context:\n" + result.snippet)
        let st = try #require(f.stat("a.txt"))
        #expect(st.st_uid == FileToolFixture.owner.uid)
        #expect(f.names() == ["a.txt"])
    }

    @Test func anAmbiguousOldStrNamesEveryLine() throws {
        let f = try FileToolFixture(files: ["a.txt": "x = 1\ny = 2\nx = 1\n\nx = 1\n"])
        let before = f.snapshot()
        expectError(.oldStrNotUnique(path: "a.txt", edit: nil, lines: [1, 3, 5])) {
            try f.tools.editFile("a.txt", oldString: "x = 1", newString: "x = 2")
        }
        #expect(f.snapshot() == before)
        let all = try f.tools.editFile("a.txt", oldString: "x = 1", newString: "x = 2", replaceAll: true)
        #expect(all.replacements == 3)
        #expect(f.contents("a.txt") == "x = 2\ny = 2\nx = 2\n\nx = 2\n")
    }

    /// `replace_all` of one byte in a 10 MiB file with a 7 MiB text once asked the host to
    /// allocate 70 TB, and a failed allocation ends the process. The edit is refused first,
    /// and the file is left as it was.
    @Test func anEditThatWouldGrowTheFilePastTheLimitIsRefusedBeforeAllocating() throws {
        let f = try FileToolFixture(files: ["a.txt": String(repeating: "a", count: 1 << 20)])
        let before = f.snapshot()
        let error = errorOf {
            try f.tools.editFile(
                "a.txt", oldString: "a", newString: String(repeating: "b", count: 1 << 20), replaceAll: true)
        }
        guard case .invalidArguments(let argument, let detail) = error else {
            Issue.record("unexpected \(String(describing: error))")
            return
        }
        #expect(argument == "new_str")
        #expect(
            detail
                == "this edit would make a.txt 1 TiB (1048576 replacements), above the 10 MiB limit for editing a whole file. Write a large file with a command instead."
        )
        #expect(f.snapshot() == before)
        let ok = try f.tools.editFile("a.txt", oldString: "a", newString: "bb", replaceAll: true)
        #expect(ok.replacements == 1 << 20)
        #expect(f.contents("a.txt")?.utf8.count == 2 << 20)
    }

    @Test func aNearMissShowsTheClosestText() throws {
        let code = "func a() {\n    let x = 1\n    let y = 2\n    return x + y\n}\n"
        let f = try FileToolFixture(files: ["a.swift": code])
        let before = f.snapshot()
        let error = errorOf { try f.tools.editFile("a.swift", oldString: "let x = 1\nlet y = 2", newString: "z") }
        guard case .oldStrNotFound(let path, let edit, let closest?, let hint) = error else {
            Issue.record("expected old_str_not_found with a closest match, got \(String(describing: error))")
            return
        }
        #expect(path == "a.swift")
        #expect(edit == nil)
        #expect(hint == nil)
        #expect(closest.startLine == 2)
        #expect(closest.endLine == 3)
        #expect(closest.similarity == 0.95)
        #expect(closest.numberedText == "     2\t    let x = 1\n     3\t    let y = 2")
        #expect(
            error?.message.contains("The closest text is at lines 2-3 (95% similar):\n     2\t    let x = 1") == true)
        #expect(f.snapshot() == before)
    }

    @Test func pastedLineNumbersGetAHint() throws {
        let f = try FileToolFixture(files: ["a.txt": "alpha\nbeta\n"])
        let error = errorOf { try f.tools.editFile("a.txt", oldString: "     1\talpha\n     2\tbeta", newString: "x") }
        guard case .oldStrNotFound(_, _, _, let hint) = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(
            hint == "old_str seems to include the line-number prefixes read_file adds (`    12\\t`); leave them out.")
    }

    @Test func nothingSimilarMeansNoClosestMatch() throws {
        let f = try FileToolFixture(files: ["a.txt": "alpha\nbeta\n"])
        expectError(.oldStrNotFound(path: "a.txt", edit: nil, closest: nil, hint: nil)) {
            try f.tools.editFile("a.txt", oldString: "QQQQ ZZZZ", newString: "x")
        }
    }

    @Test func identicalStringsAreANoOp() throws {
        let f = try FileToolFixture(files: ["a.txt": "alpha\n"])
        expectError(.noOpEdit(path: "a.txt", edit: nil)) {
            try f.tools.editFile("a.txt", oldString: "alpha", newString: "alpha")
        }
        expectError(
            .invalidArguments(
                argument: "old_str",
                detail: "must not be empty. To replace a whole file use write_file; to add lines use insert.")
        ) {
            try f.tools.editFile("a.txt", oldString: "", newString: "x")
        }
    }

    @Test func multiEditIsAllOrNothing() throws {
        let f = try FileToolFixture(files: ["a.txt": Self.source])
        let before = f.snapshot()
        let edits = [
            Edit(oldString: "line 1\n", newString: "first\n"),
            Edit(oldString: "line 2\n", newString: "second\n"),
            Edit(oldString: "no such line", newString: "x"),
        ]
        let error = errorOf { try f.tools.editFile("a.txt", edits: edits) }
        guard case .oldStrNotFound(_, let index, _, _) = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(index == 2)
        #expect(error?.message.hasPrefix("edits[2]: old_str was not found in `a.txt`.") == true)
        #expect(f.snapshot() == before)
        // A no-op anywhere in the list is caught before anything is read.
        expectError(.noOpEdit(path: "a.txt", edit: 1)) {
            try f.tools.editFile("a.txt", edits: [edits[0], Edit(oldString: "a", newString: "a")])
        }
        #expect(f.snapshot() == before)
    }

    @Test func multiEditsApplyInOrderOnTheEditedText() throws {
        let f = try FileToolFixture(files: ["a.txt": Self.source])
        let result = try f.tools.editFile(
            "a.txt",
            edits: [
                Edit(oldString: "line 1\n", newString: "first\n"),
                Edit(oldString: "first\nline 2", newString: "first\nsecond"),
                Edit(oldString: "line 12", newString: "last"),
            ])
        #expect(result.replacements == 3)
        #expect(f.contents("a.txt")?.hasPrefix("first\nsecond\nline 3\n") == true)
        #expect(f.contents("a.txt")?.hasSuffix("line 11\nlast\n") == true)
        #expect(
            result.snippet
                == "     1\tfirst\n     2\tsecond\n     3\tline 3\n     4\tline 4\n     5\tline 5\n     6\tline 6\n...\n"
                + "     8\tline 8\n     9\tline 9\n    10\tline 10\n    11\tline 11\n    12\tlast")
    }

    @Test func windowsLineEndingsMatchLinesCopiedFromReadFile() throws {
        let f = try FileToolFixture(files: ["dos.txt": "one\r\ntwo\r\nthree\r\n"])
        _ = try f.tools.editFile("dos.txt", oldString: "one\ntwo", newString: "1\n2")
        #expect(f.contents("dos.txt") == "1\r\n2\r\nthree\r\n")
    }

    @Test func insertAddsLinesAfterTheGivenLine() throws {
        let f = try FileToolFixture(files: ["a.txt": "a\nb\n", "open.txt": "a\nb"])
        let top = try f.tools.insert("a.txt", line: 0, text: "top")
        #expect(top.text == "Edited `a.txt`: inserted text at the top. The changed lines with context:\n" + top.snippet)
        #expect(top.snippet == "     1\ttop\n     2\ta\n     3\tb")
        _ = try f.tools.insert("a.txt", line: 2, text: "middle\n")
        _ = try f.tools.insert("a.txt", line: 4, text: "end")
        #expect(f.contents("a.txt") == "top\na\nmiddle\nb\nend\n")
        _ = try f.tools.insert("open.txt", line: 2, text: "c")
        #expect(f.contents("open.txt") == "a\nb\nc")
        expectError(
            .invalidRange(path: "a.txt", detail: "insert_line 6 is outside the file, which has 5 lines (use 0 to 5).")
        ) {
            try f.tools.insert("a.txt", line: 6, text: "x")
        }
        #expect(errorOf { try f.tools.insert("a.txt", line: -1, text: "x") }?.code == "invalid_range")
    }

    @Test func editsRefuseBinaryMissingAndHugeFiles() throws {
        var limits = FileTools.Limits()
        limits.maxFileBytes = 100
        let f = try FileToolFixture(limits: limits, files: ["big.txt": String(repeating: "x\n", count: 100)])
        try f.write("bin", bytes: [0x61, 0, 0x62])
        let before = f.snapshot()
        expectError(.binaryFile(path: "bin", size: 3)) { try f.tools.editFile("bin", oldString: "a", newString: "b") }
        expectError(.fileTooLarge(path: "big.txt", size: 200, limit: 100)) {
            try f.tools.editFile("big.txt", oldString: "x", newString: "y", replaceAll: true)
        }
        #expect(errorOf { try f.tools.editFile("nope.txt", oldString: "a", newString: "b") }?.code == "not_found")
        #expect(errorOf { try f.tools.editFile("no/dir/x.txt", oldString: "a", newString: "b") }?.code == "not_found")
        #expect(f.snapshot() == before)
    }

    @Test func pathologicalMatchingStaysLinear() throws {
        // 4 MiB of one letter and an old_str that almost matches everywhere: a naive search
        // would compare ~4 billion bytes.
        let f = try FileToolFixture(files: ["a.txt": String(repeating: "a", count: 4 << 20)])
        let start = ContinuousClock.now
        let needle = String(repeating: "a", count: 1000) + "b"
        #expect(
            errorOf { try f.tools.editFile("a.txt", oldString: needle, newString: "x") }?.code == "old_str_not_found")
        let lines = try FileToolFixture(files: ["b.txt": String(repeating: "x\n", count: 100_000)])
        let error = errorOf { try lines.tools.editFile("b.txt", oldString: "x", newString: "y") }
        guard case .oldStrNotUnique(_, _, let found) = error else {
            Issue.record("got \(String(describing: error))")
            return
        }
        #expect(found.count == 100_000)
        #expect(found.last == 100_000)
        #expect(ContinuousClock.now - start < .seconds(20))
    }
}
