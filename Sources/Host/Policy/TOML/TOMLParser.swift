/// Parses the TOML subset policies use: comments, `[tables]`, `[[arrays of tables]]`, bare
/// and quoted keys, basic and literal strings, integers (decimal, hex, octal, binary),
/// floats, booleans, arrays (across lines) and inline tables.
///
/// Anything else — dotted keys, multi-line strings, dates — is refused with a hint rather
/// than half-supported, because an admin must be able to trust that what they wrote is
/// what took effect.
struct TOMLParser {
    private var bytes: [UInt8]
    private var pos = 0
    private var line = 1
    private var root = TOMLTable(line: 0)
    private var tablePath: [String] = []
    /// The dotted key being read, for error messages.
    private var currentKey = ""
    /// How many arrays and inline tables enclose the value being read.
    private var nesting = 0

    /// The deepest nesting of arrays and inline tables, and the most names in a table header,
    /// a policy may have. Policies use two or three levels; the cap keeps a hostile or broken
    /// file from recursing the reader off the end of its thread's stack (found by `make fuzz`).
    static let maxNesting = 32

    init(_ text: String) { bytes = Array(text.utf8) }

    static func parse(_ text: String) throws(TOMLError) -> TOMLTable {
        var parser = TOMLParser(text)
        return try parser.document()
    }

    private mutating func document() throws(TOMLError) -> TOMLTable {
        while true {
            skipBlank()
            guard let byte = peek() else { return root }
            if byte == UInt8(ascii: "\n") {
                newline()
            } else if byte == UInt8(ascii: "#") {
                try comment()
            } else if byte == UInt8(ascii: "[") {
                try header()
            } else {
                try keyValue()
            }
        }
    }

    // MARK: - Tables and keys

    private mutating func header() throws(TOMLError) {
        let headerLine = line
        pos += 1
        let isArray = peek() == UInt8(ascii: "[")
        if isArray { pos += 1 }
        var path: [String] = []
        repeat {
            skipBlank()
            path.append(try key())
            skipBlank()
        } while consume(".")
        currentKey = path.joined(separator: ".")
        // Tables are defined by recursion down the path, so its length is capped like nesting.
        guard path.count <= Self.maxNesting else {
            throw fail(
                "a table header of more than \(Self.maxNesting) names", hint: "policies need only a few levels")
        }
        guard consume("]"), !isArray || consume("]") else {
            throw fail("expected \(isArray ? "]]" : "]") to close the table header", hint: "write [name] or [[name]]")
        }
        try endOfLine()
        try Self.defineTable(in: &root, path: path[...], isArray: isArray, line: headerLine, fullPath: currentKey)
        tablePath = path
    }

    private static func defineTable(
        in table: inout TOMLTable, path: ArraySlice<String>, isArray: Bool, line: Int, fullPath: String
    ) throws(TOMLError) {
        let name = path.first!
        let index = table.entries.firstIndex { $0.key == name }
        if path.count > 1 {
            if index == nil {
                table.entries.append(
                    .init(key: name, value: .init(kind: .table(TOMLTable(line: line)), line: line), line: line))
            }
            let at = index ?? table.entries.count - 1
            try descend(&table.entries[at], line: line, fullPath: fullPath) { (child) throws(TOMLError) in
                try defineTable(in: &child, path: path.dropFirst(), isArray: isArray, line: line, fullPath: fullPath)
            }
            return
        }
        var fresh = TOMLTable(line: line)
        fresh.isExplicit = true
        guard let at = index else {
            if isArray {
                var array = TOMLTable(line: line)
                array.isArrayOfTables = true
                array.entries.append(.init(key: "0", value: .init(kind: .table(fresh), line: line), line: line))
                fresh = array
            }
            table.entries.append(.init(key: name, value: .init(kind: .table(fresh), line: line), line: line))
            return
        }
        let existing = table.entries[at]
        guard case .table(var child) = existing.value.kind, !existing.value.isInline else {
            throw TOMLError(
                line: line, key: fullPath, message: "[\(fullPath)] redefines a key that is not a table",
                hint: "the key was set on line \(existing.line)")
        }
        if isArray != child.isArrayOfTables || (!isArray && child.isExplicit) {
            let what = isArray ? "[[\(fullPath)]] conflicts with" : "table [\(fullPath)] is defined twice; see"
            throw TOMLError(
                line: line, key: fullPath, message: "\(what) line \(existing.line)",
                hint: "each table may have one [header]; merge the two")
        }
        if isArray {
            child.entries.append(
                .init(key: "\(child.entries.count)", value: .init(kind: .table(fresh), line: line), line: line))
        } else {
            child.isExplicit = true
            child.line = line
        }
        table.entries[at].value.kind = .table(child)
        if !isArray { table.entries[at].line = line }
    }

    /// Runs `body` on the table an entry holds, or on the last element of an array of tables.
    private static func descend(
        _ entry: inout TOMLTable.Entry, line: Int, fullPath: String, _ body: (inout TOMLTable) throws(TOMLError) -> Void
    ) throws(TOMLError) {
        guard case .table(var child) = entry.value.kind, !entry.value.isInline else {
            throw TOMLError(
                line: line, key: fullPath, message: "\"\(entry.key)\" is not a table here",
                hint: "it was set to a value on line \(entry.line)")
        }
        if child.isArrayOfTables {
            let last = child.entries.count - 1
            guard case .table(var element) = child.entries[last].value.kind else { return }
            try body(&element)
            child.entries[last].value.kind = .table(element)
        } else {
            try body(&child)
        }
        entry.value.kind = .table(child)
    }

    private mutating func keyValue() throws(TOMLError) {
        let keyLine = line
        let name = try key()
        currentKey = (tablePath + [name]).joined(separator: ".")
        skipBlank()
        if peek() == UInt8(ascii: ".") {
            throw fail("dotted keys are not supported", hint: "use a [table] header instead")
        }
        guard consume("=") else { throw fail("expected = after \"\(name)\"", hint: "write \(name) = value") }
        skipBlank()
        let value = try value()
        try endOfLine()
        try Self.insert(into: &root, path: tablePath[...], key: name, value: value, line: keyLine, fullKey: currentKey)
    }

    private static func insert(
        into table: inout TOMLTable, path: ArraySlice<String>, key: String, value: TOMLValue, line: Int, fullKey: String
    ) throws(TOMLError) {
        if let name = path.first, let at = table.entries.firstIndex(where: { $0.key == name }) {
            try descend(&table.entries[at], line: line, fullPath: fullKey) { (child) throws(TOMLError) in
                try insert(into: &child, path: path.dropFirst(), key: key, value: value, line: line, fullKey: fullKey)
            }
            return
        }
        if let existing = table[key] {
            throw TOMLError(
                line: line, key: fullKey, message: "duplicate key \"\(key)\"",
                hint: "it is already set on line \(existing.line); keep one")
        }
        table.entries.append(.init(key: key, value: value, line: line))
    }

    private mutating func key() throws(TOMLError) -> String {
        if peek() == UInt8(ascii: "\"") { return try basicString() }
        if peek() == UInt8(ascii: "'") { return try literalString() }
        let start = pos
        while let byte = peek(), Self.isBareKey(byte) { pos += 1 }
        guard pos > start else {
            throw fail("expected a key", hint: "keys are letters, digits, _ and -, or a quoted string")
        }
        return String(decoding: bytes[start..<pos], as: UTF8.self)
    }

    static func isBareKey(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
            true
        default: false
        }
    }

    // MARK: - Values

    private mutating func value() throws(TOMLError) -> TOMLValue {
        let start = line
        guard let byte = peek(), byte != UInt8(ascii: "\n"), byte != UInt8(ascii: "#") else {
            throw fail("missing value", hint: "write \(currentKey.split(separator: ".").last ?? "key") = value")
        }
        switch byte {
        case UInt8(ascii: "\""): return TOMLValue(kind: .string(try basicString()), line: start)
        case UInt8(ascii: "'"): return TOMLValue(kind: .string(try literalString()), line: start)
        case UInt8(ascii: "["), UInt8(ascii: "{"):
            guard nesting < Self.maxNesting else {
                throw fail(
                    "arrays and inline tables nested more than \(Self.maxNesting) deep",
                    hint: "flatten the value; policies need only a few levels")
            }
            nesting += 1
            defer { nesting -= 1 }
            return byte == UInt8(ascii: "[") ? try array() : try inlineTable()
        default: return try scalar()
        }
    }

    private mutating func array() throws(TOMLError) -> TOMLValue {
        let start = line
        pos += 1
        var items: [TOMLValue] = []
        while true {
            try skipInsideArray()
            if consume("]") { break }
            items.append(try value())
            try skipInsideArray()
            if consume("]") { break }
            guard consume(",") else {
                throw fail("expected , or ] in the array", hint: "separate array items with commas")
            }
        }
        return TOMLValue(kind: .array(items), line: start)
    }

    private mutating func inlineTable() throws(TOMLError) -> TOMLValue {
        var table = TOMLTable(line: line)
        let outerKey = currentKey
        pos += 1
        skipBlank()
        if !consume("}") {
            repeat {
                skipBlank()
                let keyLine = line
                let name = try key()
                currentKey = outerKey + "." + name
                skipBlank()
                guard consume("=") else {
                    throw fail("expected = after \"\(name)\"", hint: "write { \(name) = value }")
                }
                skipBlank()
                let item = try value()
                if table[name] != nil {
                    throw fail("duplicate key \"\(name)\"", hint: "each key may appear once in an inline table")
                }
                table.entries.append(.init(key: name, value: item, line: keyLine))
                skipBlank()
            } while consume(",")
            guard consume("}") else {
                throw fail("expected } to close the inline table", hint: "inline tables stay on one line")
            }
        }
        currentKey = outerKey
        var value = TOMLValue(kind: .table(table), line: table.line)
        value.isInline = true
        return value
    }

    private mutating func scalar() throws(TOMLError) -> TOMLValue {
        let start = pos
        while let byte = peek(),
            Self.isBareKey(byte) || byte == UInt8(ascii: "+") || byte == UInt8(ascii: ".")
                || byte == UInt8(ascii: ":")
        {
            pos += 1
        }
        let token = String(decoding: bytes[start..<pos], as: UTF8.self)
        guard let kind = TOMLScalar.parse(token) else {
            if token.contains(":") || token.split(separator: "-").count == 3 {
                throw fail("dates and times are not supported", hint: "write the value as a string")
            }
            let shown = token.isEmpty ? String(decoding: bytes[pos..<min(pos + 1, bytes.count)], as: UTF8.self) : token
            throw fail("\"\(shown)\" is not a valid value", hint: "strings need quotes, e.g. \"\(shown)\"")
        }
        return TOMLValue(kind: kind, line: line)
    }

    private mutating func basicString() throws(TOMLError) -> String {
        if hasPrefix("\"\"\"") { throw fail("multi-line strings are not supported", hint: "use one line") }
        pos += 1
        var out: [UInt8] = []
        while true {
            guard let byte = peek(), byte != UInt8(ascii: "\n") else {
                throw fail("unterminated string", hint: "close it with \" on the same line")
            }
            pos += 1
            if byte == UInt8(ascii: "\"") { break }
            if byte == UInt8(ascii: "\\") {
                out += try escape()
            } else if byte < 0x20 && byte != UInt8(ascii: "\t") || byte == 0x7f {
                throw fail("control character in a string", hint: "write it as an escape such as \\u0001")
            } else {
                out.append(byte)
            }
        }
        return try utf8(out)
    }

    private mutating func escape() throws(TOMLError) -> [UInt8] {
        guard let byte = peek() else { throw fail("unterminated string", hint: "close it with \"") }
        pos += 1
        let simple: [UInt8: UInt8] = [
            UInt8(ascii: "b"): 8, UInt8(ascii: "t"): 9, UInt8(ascii: "n"): 10, UInt8(ascii: "f"): 12,
            UInt8(ascii: "r"): 13, UInt8(ascii: "\""): 34, UInt8(ascii: "\\"): 92,
        ]
        if let mapped = simple[byte] { return [mapped] }
        let width = byte == UInt8(ascii: "u") ? 4 : byte == UInt8(ascii: "U") ? 8 : 0
        guard width > 0, pos + width <= bytes.count,
            let code = UInt32(String(decoding: bytes[pos..<pos + width], as: UTF8.self), radix: 16),
            let scalar = Unicode.Scalar(code)
        else {
            throw fail("invalid escape in a string", hint: "use \\\\, \\\", \\n, \\t, \\uXXXX, or a literal 'string'")
        }
        pos += width
        return Array(String(Character(scalar)).utf8)
    }

    private mutating func literalString() throws(TOMLError) -> String {
        if hasPrefix("'''") { throw fail("multi-line strings are not supported", hint: "use one line") }
        pos += 1
        let start = pos
        while let byte = peek(), byte != UInt8(ascii: "'") {
            if byte == UInt8(ascii: "\n") { break }
            pos += 1
        }
        guard consume("'") else { throw fail("unterminated string", hint: "close it with ' on the same line") }
        return try utf8(Array(bytes[start..<pos - 1]))
    }

    private func utf8(_ raw: [UInt8]) throws(TOMLError) -> String {
        guard let text = String(validating: raw, as: UTF8.self) else {
            throw fail("string is not valid UTF-8", hint: "save the file as UTF-8")
        }
        return text
    }

    // MARK: - Whitespace, comments, lines

    private mutating func skipBlank() {
        while let byte = peek(), byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == 13 { pos += 1 }
    }

    private mutating func skipInsideArray() throws(TOMLError) {
        while true {
            skipBlank()
            if peek() == UInt8(ascii: "\n") {
                newline()
            } else if peek() == UInt8(ascii: "#") {
                try comment()
            } else {
                return
            }
        }
    }

    private mutating func comment() throws(TOMLError) {
        while let byte = peek(), byte != UInt8(ascii: "\n") {
            if byte < 0x20 && byte != UInt8(ascii: "\t") && byte != 13 {
                throw fail("control character in a comment", hint: "remove it")
            }
            pos += 1
        }
    }

    private mutating func endOfLine() throws(TOMLError) {
        skipBlank()
        if peek() == UInt8(ascii: "#") { try comment() }
        guard let byte = peek() else { return }
        guard byte == UInt8(ascii: "\n") else {
            throw fail("unexpected text after the value", hint: "put each key = value on its own line")
        }
        newline()
    }

    private mutating func newline() {
        pos += 1
        line += 1
    }

    private func peek() -> UInt8? { pos < bytes.count ? bytes[pos] : nil }

    private func hasPrefix(_ text: String) -> Bool { bytes[pos...].starts(with: text.utf8) }

    private mutating func consume(_ character: Unicode.Scalar) -> Bool {
        guard peek() == UInt8(ascii: character) else { return false }
        pos += 1
        return true
    }

    private func fail(_ message: String, hint: String) -> TOMLError {
        TOMLError(line: line, key: currentKey, message: message, hint: hint)
    }
}
