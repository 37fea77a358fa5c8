import Foundation
import Host
import Testing

/// `read_file` and `file_info`: numbering, paging, limits and the errors a model sees.
@Suite struct FileToolReadTests {
    static func numberedFile(_ count: Int) -> String {
        (1...count).map { "line \($0)" }.joined(separator: "\n") + "\n"
    }

    @Test func linesAreNumberedLikeCatN() throws {
        let f = try FileToolFixture(files: ["a.txt": "alpha\n\tbeta\n\ngamma"])
        let result = try f.tools.readFile("a.txt")
        #expect(result.text == "     1\talpha\n     2\t\tbeta\n     3\t\n     4\tgamma")
        #expect(result.startLine == 1)
        #expect(result.endLine == 4)
        #expect(result.totalLines == 4)
        #expect(result.nextOffset == nil)
    }

    @Test func pagingSaysHowToContinue() throws {
        let f = try FileToolFixture(files: ["big.txt": Self.numberedFile(2500)])
        let first = try f.tools.readFile("big.txt")
        #expect(first.endLine == 2000)
        #expect(first.text.hasPrefix("     1\tline 1\n     2\tline 2\n"))
        #expect(first.text.hasSuffix("  2000\tline 2000\n... 500 more lines; call read_file with offset=2001"))
        #expect(first.nextOffset == 2001)
        let rest = try f.tools.readFile("big.txt", offset: 2001)
        #expect(rest.startLine == 2001)
        #expect(rest.endLine == 2500)
        #expect(rest.nextOffset == nil)
        #expect(rest.text.hasSuffix("  2500\tline 2500"))
        let window = try f.tools.readFile("big.txt", offset: 10, limit: 3)
        #expect(
            window.text
                == "    10\tline 10\n    11\tline 11\n    12\tline 12\n... 2,488 more lines; call read_file with offset=13"
        )
    }

    @Test func badRangesAreInvalidRange() throws {
        let f = try FileToolFixture(files: ["a.txt": "one\ntwo\n", "empty.txt": ""])
        expectError(
            .invalidRange(path: "a.txt", detail: "offset 3 is past the end of the file, which has 2 lines.")
        ) { try f.tools.readFile("a.txt", offset: 3) }
        expectError(.invalidRange(path: "a.txt", detail: "offset must be 1 or more (lines are numbered from 1).")) {
            try f.tools.readFile("a.txt", offset: 0)
        }
        expectError(.invalidRange(path: "a.txt", detail: "limit must be 1 or more.")) {
            try f.tools.readFile("a.txt", limit: 0)
        }
        #expect(errorOf { try f.tools.readFile("a.txt", offset: -5) }?.code == "invalid_range")
        #expect(errorOf { try f.tools.readFile("empty.txt", offset: 2) }?.code == "invalid_range")
        let empty = try f.tools.readFile("empty.txt")
        #expect(empty.text == "(`empty.txt` is empty)")
        #expect(empty.totalLines == 0)
    }

    @Test func longLinesAreCutWithAMarker() throws {
        let long = String(repeating: "x", count: 3000)
        let f = try FileToolFixture(files: ["long.txt": "short\n\(long)\nend\n"])
        let result = try f.tools.readFile("long.txt")
        #expect(result.truncatedLines == [2])
        let lines = result.text.split(separator: "\n")
        #expect(
            lines[1] == "     2\t" + String(repeating: "x", count: 2000)
                + "… [line cut at 2,000 characters; 3,000 bytes in all]")
        #expect(lines[2] == "     3\tend")
    }

    @Test func binaryFilesAreRefused() throws {
        let f = try FileToolFixture()
        try f.write("image.png", bytes: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13])
        expectError(.binaryFile(path: "image.png", size: 12)) { try f.tools.readFile("image.png") }
        let info = try f.tools.fileInfo("image.png")
        #expect(info.isBinary == true)
        #expect(info.lineCount == nil)
    }

    @Test func largeFilesNeedARange() throws {
        var limits = FileTools.Limits()
        limits.maxFileBytes = 1000
        let f = try FileToolFixture(limits: limits, files: ["big.log": Self.numberedFile(500)])
        expectError(.fileTooLarge(path: "big.log", size: 4392, limit: 1000)) { try f.tools.readFile("big.log") }
        let page = try f.tools.readFile("big.log", offset: 100, limit: 2)
        #expect(
            page.text == "   100\tline 100\n   101\tline 101\n... more lines follow; call read_file with offset=102")
        #expect(page.totalLines == nil)
        // A range past the end of a large file is still found out.
        #expect(errorOf { try f.tools.readFile("big.log", offset: 900, limit: 5) }?.code == "invalid_range")
    }

    @Test func outputIsCappedAndContinues() throws {
        var limits = FileTools.Limits()
        limits.maxOutputBytes = 100
        let f = try FileToolFixture(limits: limits, files: ["a.txt": Self.numberedFile(50)])
        let result = try f.tools.readFile("a.txt")
        #expect(result.endLine == 7)
        #expect(result.nextOffset == 8)
        #expect(result.text.hasSuffix("... 43 more lines; call read_file with offset=8"))
    }

    @Test func windowsLineEndingsAreShownWithoutCarriageReturns() throws {
        let f = try FileToolFixture(files: ["dos.txt": "one\r\ntwo\r\n"])
        #expect(try f.tools.readFile("dos.txt").text == "     1\tone\n     2\ttwo")
    }

    @Test func pathsMayBeRelativeOrUnderWorkspace() throws {
        let f = try FileToolFixture(files: ["src/a.txt": "hi\n"])
        for path in ["src/a.txt", "./src/a.txt", "/workspace/src/a.txt", "src/../src/./a.txt", "src//a.txt"] {
            let result = try f.tools.readFile(path)
            #expect(result.text == "     1\thi")
            #expect(result.path == "src/a.txt")
        }
    }

    @Test func missingFilesNameSimilarOnes() throws {
        let f = try FileToolFixture(files: ["src/main.swift": "", "src/menu.swift": "", "src/Other.txt": ""])
        expectError(.notFound(path: "src/mian.swift", similar: ["src/main.swift", "src/menu.swift"], detail: nil)) {
            try f.tools.readFile("src/mian.swift")
        }
        expectError(.notFound(path: "srx/main.swift", similar: ["src"], detail: "there is no `srx`")) {
            try f.tools.readFile("srx/main.swift")
        }
        expectError(
            .notFound(path: "src/main.swift/x", similar: [], detail: "`src/main.swift` is a file, not a directory")
        ) {
            try f.tools.readFile("src/main.swift/x")
        }
        let message = errorOf { try f.tools.readFile("src/mian.swift") }?.message
        #expect(
            message
                == "`src/mian.swift` does not exist. Did you mean: src/main.swift, src/menu.swift? "
                + "Use list_dir or glob to find the right path.")
    }

    @Test func directoriesAreNotFiles() throws {
        let f = try FileToolFixture(files: ["src/a.txt": ""])
        expectError(.isDirectory(path: "src")) { try f.tools.readFile("src") }
        expectError(.isDirectory(path: ".")) { try f.tools.readFile("/workspace") }
    }

    @Test func fileInfoDescribesFiles() throws {
        let f = try FileToolFixture(files: ["a.txt": "one\ntwo\n"])
        chmod(f.root + "/a.txt", 0o640)
        f.setModified("a.txt", 1_700_000_000)
        let info = try f.tools.fileInfo("a.txt")
        #expect(info.kind == .file)
        #expect(info.size == 8)
        #expect(info.mode == "0640")
        #expect(info.modified == 1_700_000_000)
        #expect(info.lineCount == 2)
        #expect(info.isBinary == false)
        #expect(
            info.text
                == "path: a.txt\ntype: file\nsize: 8 bytes\nmode: 0640\nmodified: 2023-11-14T22:13:20Z\nlines: 2\nbinary: no"
        )
        #expect(try f.tools.fileInfo(".").kind == .directory)
    }
}
