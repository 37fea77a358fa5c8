import Testing

@testable import Host

/// The policy TOML reader: the subset it accepts, read exactly, with lines.
@Suite struct PolicyTOMLTests {
    func value(_ text: String, _ key: String) throws -> TOMLValue.Kind {
        try #require(try TOMLParser.parse(text)[key]).value.kind
    }

    func error(_ text: String) -> TOMLError? {
        do {
            _ = try TOMLParser.parse(text)
            return nil
        } catch {
            return error
        }
    }

    @Test func scalars() throws {
        #expect(try value("a = \"x\\ty\\u00e9\"", "a") == .string("x\ty\u{e9}"))
        #expect(try value("a = 'C:\\path'", "a") == .string("C:\\path"))
        #expect(try value("a = 1_000", "a") == .integer(1000))
        #expect(try value("a = -7", "a") == .integer(-7))
        #expect(try value("a = 0x7E02_0000", "a") == .integer(0x7E02_0000))
        #expect(try value("a = 0o755", "a") == .integer(0o755))
        #expect(try value("a = 0b101", "a") == .integer(5))
        #expect(try value("a = 1.5", "a") == .float(1.5))
        #expect(try value("a = 2e3", "a") == .float(2000))
        #expect(try value("a = true", "a") == .boolean(true))
    }

    /// A regression from `make fuzz`: deep nesting overflowed the reader's stack.
    @Test func deepNestingIsRefusedNotRecursed() throws {
        let depth = TOMLParser.maxNesting
        #expect(error("a = " + String(repeating: "[", count: depth) + String(repeating: "]", count: depth)) == nil)
        for text in [
            "a = " + String(repeating: "[", count: depth + 1) + String(repeating: "]", count: depth + 1),
            "a = " + String(repeating: "[", count: 200_000),
            "a = " + String(repeating: "{b = ", count: 200_000),
            "a = " + String(repeating: "[{b = ", count: 100_000),
        ] {
            let failure = error(text)
            #expect(failure?.message == "arrays and inline tables nested more than \(depth) deep")
            #expect(failure?.line == 1)
        }
        let names = Array(repeating: "t", count: depth + 1).joined(separator: ".")
        #expect(error("[\(names)]")?.message == "a table header of more than \(depth) names")
        #expect(error("[\(String(repeating: "t.", count: 100_000))t]") != nil)
        let fits = Array(repeating: "t", count: depth).joined(separator: ".")
        #expect(try TOMLParser.parse("[\(fits)]\nk = 1").entries.count == 1)
    }

    @Test func refusedNumbers() {
        for bad in [
            "a = 007", "a = 1__0", "a = _1", "a = 0x", "a = 1.", "a = .5", "a = 9223372036854775808", "a = inf",
        ] {
            #expect(error(bad)?.message.hasSuffix("is not a valid value") == true, "\(bad)")
        }
        #expect(error("a = 1979-05-27")?.message == "dates and times are not supported")
    }

    @Test func multiLineArrayWithCommentsKeepsLines() throws {
        let table = try TOMLParser.parse("# top\n\nlist = [\n  \"a\", # first\n\n  \"b\",\n]\nnext = 1\n")
        let list = try #require(table["list"])
        #expect(list.line == 3)
        guard case .array(let items) = list.value.kind else { throw TOMLError(line: 0, key: "", message: "", hint: "") }
        #expect(items.map(\.line) == [4, 6])
        #expect(table["next"]?.line == 8)
    }

    @Test func tablesAndArraysOfTables() throws {
        let text = "[a]\nx = 1\n[a.b]\ny = 2\n[[r]]\nn = 1\n[[r]]\nn = 2\n[r.sub]\nz = 3\n"
        let table = try TOMLParser.parse(text)
        guard case .table(let a) = try #require(table["a"]).value.kind,
            case .table(let b) = try #require(a["b"]).value.kind
        else { throw TOMLError(line: 0, key: "", message: "", hint: "") }
        #expect(a["x"]?.value.kind == .integer(1))
        #expect(b["y"]?.value.kind == .integer(2))
        guard case .table(let r) = try #require(table["r"]).value.kind else {
            throw TOMLError(line: 0, key: "", message: "", hint: "")
        }
        #expect(r.isArrayOfTables)
        #expect(r.elements.map { $0["n"]?.value.kind } == [.integer(1), .integer(2)])
        #expect(r.elements[1]["sub"] != nil)
    }

    @Test func inlineTables() throws {
        guard case .array(let args) = try value("args = [{ index = 0, op = \"eq\" }, {}]", "args") else {
            throw TOMLError(line: 0, key: "", message: "", hint: "")
        }
        guard case .table(let first) = args[0].kind else { throw TOMLError(line: 0, key: "", message: "", hint: "") }
        #expect(first.keys == ["index", "op"])
        #expect(error("x = { a = 1, a = 2 }")?.message == "duplicate key \"a\"")
        #expect(error("x = { a = 1 }\n[x]\n")?.message == "[x] redefines a key that is not a table")
    }

    @Test func syntaxErrorsPointAtTheirLine() {
        #expect(
            error("a = 1\nb = 2 3\n")
                == TOMLError(
                    line: 2, key: "b", message: "unexpected text after the value",
                    hint: "put each key = value on its own line"))
        #expect(
            error("a = [1, 2\n")
                == TOMLError(
                    line: 2, key: "a", message: "expected , or ] in the array", hint: "separate array items with commas"
                ))
        #expect(error("[a\n")?.message == "expected ] to close the table header")
        #expect(error("a\n")?.message == "expected = after \"a\"")
        #expect(error("a = \n")?.message == "missing value")
        #expect(error("a = \"\\q\"\n")?.message == "invalid escape in a string")
        #expect(error("x = 1\n[x]\n")?.message == "[x] redefines a key that is not a table")
        #expect(error("[[x]]\n[x]\n")?.message == "table [x] is defined twice; see line 1")
    }
}
