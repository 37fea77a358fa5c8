import Foundation
import Host
import Testing

/// `grep`: ripgrep's output and skipping conventions, implemented in Swift.
@Suite struct FileToolGrepTests {
    static func project() throws -> FileToolFixture {
        try FileToolFixture(files: [
            ".gitignore": "dist/\n",
            "src/a.swift": "import Foundation\nlet greeting = \"Hello\"\nprint(greeting)\n",
            "src/b.swift": "// hello there\nfunc hello() {}\n",
            "notes.md": "Say HELLO.\n",
            "dist/bundle.js": "hello from a build\n",
            "node_modules/x/index.js": "hello from a dependency\n",
            ".git/config": "hello from git\n",
        ])
    }

    @Test func reportsPathLineAndText() throws {
        let f = try Self.project()
        let result = try f.tools.grep("hello")
        // With matches the answer is the matches (as rg's); the skipped paths are in the fields.
        #expect(result.text == "src/b.swift:1:// hello there\nsrc/b.swift:2:func hello() {}")
        #expect(Set(result.skipped) == [".git/", "dist/", "node_modules/"])
        #expect(result.skippedCount == 3)
        #expect(result.structured.objectValue?["skipped_count"] == .int(3))
        #expect(
            result.matches == [
                GrepMatch(path: "src/b.swift", line: 1, text: "// hello there"),
                GrepMatch(path: "src/b.swift", line: 2, text: "func hello() {}"),
            ])
        #expect(!result.truncated)
        #expect(result.filesSearched == 4)  // .gitignore, notes.md, src/a.swift, src/b.swift
    }

    /// A search that found nothing outside what it skipped says what it skipped and how to
    /// look there, so a model does not conclude the text is nowhere.
    @Test func noMatchOutsideSkippedPathsSaysWhatWasSkipped() throws {
        let f = try Self.project()
        let result = try f.tools.grep("dependency")
        #expect(result.matches.isEmpty)
        #expect(
            result.text == """
                No matches for `dependency` in `.`.
                (not searched: 3 paths under .git, node_modules, .corral or ignored by .gitignore: \(result.skipped.joined(separator: ", ")). Pass one as path to search inside it.)
                """)
        let inside = try f.tools.grep("dependency", path: "node_modules")
        #expect(
            inside.matches == [GrepMatch(path: "node_modules/x/index.js", line: 1, text: "hello from a dependency")])
        #expect(inside.skippedCount == 0)
        #expect(!inside.text.contains("not searched"))
        // glob does not read .gitignore: dist/ is walked, .git and node_modules are not.
        let found = try f.tools.glob("**/*.js")
        #expect(found.paths == ["dist/bundle.js"])
        #expect(found.text == "dist/bundle.js")
        #expect(Set(found.skipped) == [".git/", "node_modules/"])
        let glob = try f.tools.glob("**/index.js")
        #expect(glob.paths.isEmpty)
        #expect(
            glob.text == """
                No files match `**/index.js` under `.`.
                (not searched: 2 paths under .git, node_modules or .corral: \(glob.skipped.joined(separator: ", ")). Pass one as path to search inside it.)
                """)
        #expect(try f.tools.glob("**/*.js", path: "node_modules").paths == ["node_modules/x/index.js"])
    }

    @Test func caseInsensitiveAndRegex() throws {
        let f = try Self.project()
        let result = try f.tools.grep("hel+o", caseInsensitive: true)
        #expect(
            result.matches.map { "\($0.path):\($0.line)" } == [
                "notes.md:1", "src/a.swift:2", "src/b.swift:1", "src/b.swift:2",
            ])
        #expect(try f.tools.grep("^func \\w+\\(\\)").matches.map(\.line) == [2])
        #expect(try f.tools.grep("greeting\\)$").text == "src/a.swift:3:print(greeting)")
    }

    @Test func fixedStringsAndInvalidPatterns() throws {
        let f = try FileToolFixture(files: ["a.txt": "call(x.y[0])\ncallxxy0\n"])
        #expect(try f.tools.grep("(x.y[0]", fixedStrings: true).text == "a.txt:1:call(x.y[0])")
        #expect(try f.tools.grep("X.Y[0]", caseInsensitive: true, fixedStrings: true).matches.map(\.line) == [1])
        let error = errorOf { try f.tools.grep("(x.y[0]") }
        #expect(error?.code == "invalid_argument")
        #expect(
            error?.message.hasPrefix("Invalid argument `pattern`: `(x.y[0]` is not a valid regular expression.") == true
        )
    }

    @Test func contextLinesAndSeparatorsLikeRipgrep() throws {
        let text = (1...20).map { $0 == 5 || $0 == 7 || $0 == 16 ? "match \($0)" : "line \($0)" }.joined(
            separator: "\n")
        let f = try FileToolFixture(files: ["a.txt": text + "\n", "b.txt": "match b\n"])
        let result = try f.tools.grep("match", context: 2)
        #expect(
            result.text == """
                a.txt-3-line 3
                a.txt-4-line 4
                a.txt:5:match 5
                a.txt-6-line 6
                a.txt:7:match 7
                a.txt-8-line 8
                a.txt-9-line 9
                --
                a.txt-14-line 14
                a.txt-15-line 15
                a.txt:16:match 16
                a.txt-17-line 17
                a.txt-18-line 18
                --
                b.txt:1:match b
                """)
        #expect(result.matches.map(\.line) == [5, 7, 16, 1])
    }

    @Test func globFilterIncludesOrExcludes() throws {
        let f = try Self.project()
        #expect(
            try f.tools.grep("hello", glob: "*.swift", caseInsensitive: true).matches.map(\.path) == [
                "src/a.swift", "src/b.swift", "src/b.swift",
            ])
        #expect(try f.tools.grep("hello", glob: "!*.swift", caseInsensitive: true).matches.map(\.path) == ["notes.md"])
        #expect(try f.tools.grep("hello", glob: "src/*.{md,swift}").matches.count == 2)
    }

    @Test func maxResultsStopsAndSaysSo() throws {
        let f = try FileToolFixture(files: ["a.txt": String(repeating: "hit\n", count: 50), "b.txt": "hit\n"])
        let result = try f.tools.grep("hit", maxResults: 10)
        #expect(result.matches.count == 10)
        #expect(result.truncated)
        #expect(
            result.text.hasSuffix(
                "a.txt:10:hit\n(stopped at max_results=10 matching lines; narrow the pattern, path or glob, or raise max_results)"
            ))
    }

    @Test func skipsBinaryAndOversizedFilesAndCutsLongLines() throws {
        var limits = FileTools.Limits()
        limits.maxGrepFileBytes = 2000
        let f = try FileToolFixture(limits: limits, files: ["big.txt": String(repeating: "needle\n", count: 400)])
        try f.write("bin.dat", bytes: Array("needle\0".utf8))
        try f.write("min.js", String(repeating: "a", count: 700) + "needle" + String(repeating: "b", count: 700))
        let result = try f.tools.grep("needle")
        #expect(result.matches.map(\.path) == ["min.js"])
        let line = try #require(result.text.split(separator: "\n").first)
        #expect(line.hasPrefix("min.js:1:…aaa"))
        #expect(line.contains("needle"))
        #expect(line.hasSuffix("bbb… [line cut]"))
        #expect(line.count < 450)
        #expect(
            result.text.hasSuffix("(1 binary file skipped; 1 file over 2 KiB skipped; read them with read_file ranges)")
        )
    }

    @Test func searchesOneFileEvenIfIgnored() throws {
        let f = try Self.project()
        #expect(try f.tools.grep("hello", path: "dist/bundle.js").text == "dist/bundle.js:1:hello from a build")
        #expect(
            try f.tools.grep("nothing here", path: "src").text == "No matches for `nothing here` in `src`.")
    }

    @Test func aMatchMayNotRunAcrossLines() throws {
        let f = try FileToolFixture(files: ["a.txt": "foo\nbar\nfoo bar\n"])
        #expect(try f.tools.grep("foo\\s+bar").matches.map(\.line) == [3])
        #expect(try f.tools.grep("^$").matches.isEmpty)
    }

    @Test func aCatastrophicPatternStopsAtTheTimeBudget() throws {
        var limits = FileTools.Limits()
        limits.grepTimeBudget = 0.5
        let f = try FileToolFixture(limits: limits, files: ["a.txt": String(repeating: "a", count: 40) + "!\n"])
        let tools = f.tools
        let start = ContinuousClock.now
        let result = withDeadline(seconds: 30) { try? tools.grep("(a+)+$") }
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(result??.truncated == true)
        #expect(result??.text.contains("the search ran out of time") == true)
    }

    @Test func aLongNonAsciiLineIsCutAroundTheMatch() throws {
        let line = String(repeating: "é", count: 700) + "needle" + String(repeating: "ü", count: 700)
        let f = try FileToolFixture(files: ["a.txt": line + "\n"])
        let shown = try f.tools.grep("needle").text
        #expect(shown.hasPrefix("a.txt:1:…éé"))
        #expect(shown.contains("éneedleü"))
        #expect(shown.hasSuffix("üü… [line cut]"))
    }

    @Test func theWalkLimitBoundsAHugeTree() throws {
        var limits = FileTools.Limits()
        limits.maxWalkEntries = 50
        let f = try FileToolFixture(limits: limits)
        for index in 0..<200 { try f.write(String(format: "d/f%03d.txt", index), "hit\n") }
        let result = try f.tools.grep("hit", maxResults: 1000)
        #expect(result.truncated)
        #expect(result.matches.count == 49)  // the directory itself is the first entry visited
        #expect(result.text.hasSuffix("(stopped after visiting 50 entries; narrow path)"))
        let listing = try f.tools.listDir(".", depth: 3, limit: 1000)
        #expect(listing.truncated)
        #expect(listing.entries.count == 50)
    }
}
