import Foundation
import Host
import Testing

/// `list_dir` and `glob`: skipping, .gitignore, depth, limits, links and ordering.
@Suite struct FileToolListTests {
    static let gitignore = """
        # build output
        build/
        *.log
        !keep.log
        /root-only.txt
        docs/**/*.tmp
        **/cache
        \\#literal
        spaced.txt   
        """

    static func project() throws -> FileToolFixture {
        try FileToolFixture(files: [
            ".gitignore": gitignore, "README.md": "", "keep.log": "", "app.log": "", "root-only.txt": "",
            "#literal": "", "spaced.txt": "", "src/main.swift": "", "src/root-only.txt": "", "src/debug.log": "",
            "src/cache/x": "", "build/out.o": "", "docs/a/b/c.tmp": "", "docs/a/b/c.md": "", "docs/top.tmp": "",
            ".git/HEAD": "", "node_modules/left-pad/index.js": "", "src/node_modules/x.js": "",
        ])
    }

    @Test func skipsGitNodeModulesAndIgnoredPathsAndSaysSo() throws {
        let f = try Self.project()
        let result = try f.tools.listDir(".", depth: 5)
        #expect(
            result.entries.map(\.path) == [
                ".gitignore", "README.md", "docs", "docs/a", "docs/a/b", "docs/a/b/c.md", "keep.log", "src",
                "src/main.swift", "src/root-only.txt",
            ])
        #expect(
            Set(result.skipped) == [
                "#literal", ".git/", "app.log", "build/", "docs/a/b/c.tmp", "docs/top.tmp", "node_modules/",
                "root-only.txt", "spaced.txt", "src/cache/", "src/debug.log", "src/node_modules/",
            ])
        // The same set `git status --ignored` reports for this tree, plus .git and node_modules.
        #expect(result.skippedCount == 12)
        #expect(!result.truncated)
        #expect(
            result.text == """
                ./
                  .gitignore
                  README.md
                  docs/
                    a/
                      b/
                        c.md
                  keep.log
                  src/
                    main.swift
                    root-only.txt
                (not listed: 12 paths under .git, node_modules, .corral or ignored by .gitignore: \(result.skipped.joined(separator: ", ")). Call list_dir on one to see inside.)
                """)
    }

    @Test func aSkippedDirectoryCanBeListedByName() throws {
        let f = try Self.project()
        #expect(try f.tools.listDir("build").entries.map(\.path) == ["build/out.o"])
        #expect(try f.tools.listDir(".git").entries.map(\.path) == [".git/HEAD"])
    }

    @Test func depthAndLimit() throws {
        let f = try Self.project()
        let shallow = try f.tools.listDir(".", depth: 1)
        #expect(shallow.entries.map(\.path) == [".gitignore", "README.md", "docs", "keep.log", "src"])
        #expect(
            shallow.text.contains(
                "(directories at the depth limit are not expanded; call list_dir on one, or raise depth)"))
        let limited = try f.tools.listDir(".", depth: 3, limit: 3)
        #expect(limited.truncated)
        // Breadth first: the first entries are top-level ones.
        #expect(limited.entries.map(\.path) == [".gitignore", "README.md", "docs"])
        #expect(limited.text.hasSuffix("(stopped at 3 entries; list a subdirectory or lower depth to see the rest)"))
        expectError(.invalidArguments(argument: "depth", detail: "must be between 1 and 64.")) {
            try f.tools.listDir(".", depth: 0)
        }
        expectError(.invalidArguments(argument: "limit", detail: "must be between 1 and 10000.")) {
            try f.tools.listDir(".", limit: 0)
        }
        #expect(errorOf { try f.tools.listDir("README.md") }?.code == "invalid_argument")
    }

    @Test func symlinkedDirectoriesAreShownNotFollowed() throws {
        let f = try FileToolFixture(files: ["real/inner.txt": ""])
        try f.symlink("link", to: "real")
        try f.symlink("host", to: "/etc")
        let result = try f.tools.listDir(".", depth: 5)
        #expect(result.entries.map(\.path) == ["host", "link", "real", "real/inner.txt"])
        #expect(result.entries.map(\.kind) == [.symlink, .symlink, .directory, .file])
        #expect(result.text == "./\n  host -> /etc\n  link -> real\n  real/\n    inner.txt")
    }

    @Test func emptyDirectoryAndNamesWithControlCharacters() throws {
        let f = try FileToolFixture()
        try f.mkdir("empty")
        #expect(try f.tools.listDir("empty").text == "empty/\n  (empty directory)")
        try f.write("evil\nname.txt", "")
        #expect(try f.tools.listDir().text == "./\n  empty/\n  evil\\nname.txt")
    }

    @Test func globFindsFilesNewestFirst() throws {
        let f = try FileToolFixture(files: [
            "a.swift": "", "src/b.swift": "", "src/deep/c.swift": "", "src/d.ts": "", "src/e.tsx": "", "notes.md": "",
            "node_modules/m/x.swift": "", ".git/y.swift": "",
        ])
        f.setModified("a.swift", 1_000)
        f.setModified("src/b.swift", 3_000)
        f.setModified("src/deep/c.swift", 2_000)
        let all = try f.tools.glob("**/*.swift")
        #expect(all.paths == ["src/b.swift", "src/deep/c.swift", "a.swift"])
        #expect(all.text == "src/b.swift\nsrc/deep/c.swift\na.swift")
        #expect(try f.tools.glob("*.swift").paths == ["a.swift"])
        #expect(try f.tools.glob("src/**/*.swift").paths == ["src/b.swift", "src/deep/c.swift"])
        #expect(try f.tools.glob("*.swift", path: "src").paths == ["src/b.swift"])
        #expect(Set(try f.tools.glob("src/*.{ts,tsx}").paths) == ["src/d.ts", "src/e.tsx"])
        #expect(try f.tools.glob("/workspace/src/deep/*").paths == ["src/deep/c.swift"])
        #expect(try f.tools.glob("src/[a-c].swift").paths == ["src/b.swift"])
        let limited = try f.tools.glob("**/*.swift", limit: 1)
        #expect(limited.paths == ["src/b.swift"])
        #expect(limited.truncated)
        #expect(limited.totalMatches == 3)
        #expect(
            limited.text == "src/b.swift\n(showing 1 of 3 matches, newest first; narrow the pattern or raise limit)")
    }

    @Test func globWithoutMatchesExplainsPatterns() throws {
        let f = try FileToolFixture(files: ["src/a.py": ""])
        let result = try f.tools.glob("*.py")
        #expect(result.paths.isEmpty)
        #expect(
            result.text
                == "No files match `*.py` under `.`. Patterns match the whole path below `path`: `*.py` only finds "
                + "files directly in it; use `**/*.py` to search every directory.")
        #expect(try f.tools.glob("nope/**/*.py").paths.isEmpty)
        expectError(.pathOutsideProject(path: "/etc/*", reason: "absolute patterns must start with /workspace/")) {
            try f.tools.glob("/etc/*")
        }
        // `..` in a pattern matches no name: it cannot climb out.
        #expect(try f.tools.glob("../*").paths.isEmpty)
    }
}
