import Foundation
import Testing

@testable import Host

/// The matchers under the tools: globs, .gitignore rules and the regex pre-check.
@Suite struct FileToolPatternTests {
    @Test(arguments: [
        ("*.swift", "a.swift", true), ("*.swift", "src/a.swift", false), ("**/*.swift", "a.swift", true),
        ("**/*.swift", "x/y/z/a.swift", true), ("src/**", "src", false), ("src/**", "src/a/b", true),
        ("a/**/b", "a/b", true), ("a/**/b", "a/x/y/b", true), ("a/**/b", "a/x/c", false),
        ("[a-c]?.txt", "b1.txt", true), ("[!a-c]?.txt", "b1.txt", false), ("[]x].md", "].md", true),
        ("*.{ts,tsx}", "a.tsx", true), ("{src,lib}/**/*.{c,h}", "lib/x/y.h", true), ("\\*.md", "*.md", true),
        ("\\*.md", "a.md", false), ("a*b*c", "aXbYbZc", true), ("a*b*c", "aXbYbZ", false),
        ("**/**/**/**/x", "a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/x", true),
    ])
    func globs(pattern: String, path: String, matches: Bool) {
        #expect(GlobPattern(pattern).matches(path.split(separator: "/").map(String.init)) == matches)
    }

    @Test func globLiteralPrefix() {
        #expect(GlobPattern("src/app/**/*.ts").literalPrefix == ["src", "app"])
        #expect(GlobPattern("*.ts").literalPrefix == [])
        #expect(GlobPattern("{src,lib}/*.ts").literalPrefix == [])
        #expect(GlobPattern("src/a.ts").literalPrefix == ["src"])
    }

    @Test func gitignoreRules() {
        let rules = Gitignore("*.o\n!keep.o\n/top\nlogs/\n# comment\n\n\\!bang\nfoo/bar\n")
        #expect(rules.isIgnored(["x", "y.o"], isDirectory: false))
        #expect(!rules.isIgnored(["x", "keep.o"], isDirectory: false))
        #expect(rules.isIgnored(["top"], isDirectory: false))
        #expect(!rules.isIgnored(["a", "top"], isDirectory: false))
        #expect(rules.isIgnored(["a", "logs"], isDirectory: true))
        #expect(!rules.isIgnored(["a", "logs"], isDirectory: false))
        #expect(rules.isIgnored(["!bang"], isDirectory: false))
        #expect(rules.isIgnored(["foo", "bar"], isDirectory: false))
        #expect(!rules.isIgnored(["x", "foo", "bar"], isDirectory: false))
        #expect(!rules.isIgnored(["# comment"], isDirectory: false))
    }

    @Test(
        arguments: [
            ("hello", "hello"), ("\\bstat\\b", "stat"), ("struct\\s+stat", "struct"), ("colou?r", "colo"),
            ("ab*cdef", "cdef"), ("x{0,3}yz", "yz"), ("ab{2}", "ab"), ("(foo)barbaz", "barbaz"), ("foo|bar", nil),
            ("(?i)abc", nil), ("[abc]+def", "def"), ("\\x41BCD", "BCD"), ("\\p{L}abc", "abc"), ("\\u00e9tude", "tude"),
            ("a\\.b\\(c", "a.b(c"), ("^import Foundation$", "import Foundation"), ("\\d+", nil), (".*", nil),
            ("[[a-z]&&[^q]]xy", "xy"), ("\\k<n>abc", "abc"), ("(a)\\1zz", "zz"),
        ] as [(String, String?)])
    func requiredLiterals(pattern: String, literal: String?) {
        #expect(RequiredLiteral.longest(in: pattern) == literal)
    }

    @Test func prefilters() {
        typealias P = RequiredLiteral.Prefilter
        let hello = RequiredLiteral.prefilter("HELLO", fixedStrings: true, caseInsensitive: true)
        #expect(hello == P(literals: [Array("hello".utf8)], asciiFilesOnly: true))
        let error = RequiredLiteral.prefilter("ERROR", fixedStrings: true, caseInsensitive: true)
        #expect(error == P(literals: [Array("error".utf8)], asciiFilesOnly: false))
        #expect(RequiredLiteral.prefilter("é", fixedStrings: true, caseInsensitive: true) == P())
        #expect(
            RequiredLiteral.prefilter("Straße", fixedStrings: true, caseInsensitive: false).literals == [
                Array("Straße".utf8)
            ])
        // Every run of three or more must occur; a shorter one only when it is the longest.
        #expect(
            RequiredLiteral.prefilter("struct\\s+stat\\b", fixedStrings: false, caseInsensitive: false).literals
                == [Array("struct".utf8), Array("stat".utf8)])
        #expect(RequiredLiteral.prefilter("a.b", fixedStrings: false, caseInsensitive: false).literals == [[97]])
        #expect(
            RequiredLiteral.prefilter("ab.c", fixedStrings: false, caseInsensitive: false).literals == [
                Array("ab".utf8)
            ])
        #expect(RequiredLiteral.prefilter("foo|bar", fixedStrings: false, caseInsensitive: false) == P())
    }

    @Test func caseInsensitiveGrepFindsUnicodeFoldings() throws {
        // ICU folds ſ→s, ß→ss, ﬁ→fi: a byte pre-check must not hide these lines.
        let f = try FileToolFixture(files: ["a.txt": "stra\u{DF}e\n\u{FB01}le\n\u{17F}un\n", "b.txt": "SUN\nfile\n"])
        #expect(try f.tools.grep("STRASSE", caseInsensitive: true, fixedStrings: true).matches.map(\.line) == [1])
        #expect(
            try f.tools.grep("file", caseInsensitive: true).matches.map { "\($0.path):\($0.line)" } == [
                "a.txt:2", "b.txt:2",
            ])
        #expect(
            try f.tools.grep("sun", caseInsensitive: true).matches.map { "\($0.path):\($0.line)" } == [
                "a.txt:3", "b.txt:1",
            ])
    }
}
