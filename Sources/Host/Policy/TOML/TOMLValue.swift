/// A TOML value and the line it starts on, so every policy error can point at its line.
///
/// Corral reads policies with its own small, strict TOML reader because general TOML
/// libraries drop the position of each key, and "file:line: key" is the whole point of a
/// policy error.
struct TOMLValue: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case string(String)
        case integer(Int64)
        case float(Double)
        case boolean(Bool)
        case array([TOMLValue])
        case table(TOMLTable)
    }

    var kind: Kind
    /// 1-based line of the value's first character.
    var line: Int
    /// An inline `{ ... }` table, which TOML forbids extending with a later `[header]`.
    var isInline = false

    init(kind: Kind, line: Int) {
        self.kind = kind
        self.line = line
    }

    /// The TOML type's name, for "expected X, found Y" messages.
    var typeName: String {
        switch kind {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .boolean: "boolean"
        case .array: "array"
        case .table(let table): table.isArrayOfTables ? "array of tables" : "table"
        }
    }
}

/// A TOML table: keys in the order they were written, each with its line.
struct TOMLTable: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        var key: String
        var value: TOMLValue
        /// Line of the key (for a `[header]` table, the header's line).
        var line: Int
    }

    var entries: [Entry] = []
    /// Line of the `[header]`, `{`, or 0 for the document root.
    var line: Int
    /// Defined by its own `[header]` (a second header for it is an error) rather than
    /// implied by a longer one such as `[env.set]`.
    var isExplicit = false
    /// Holds `[[name]]` elements as `.table` values under the key `elements`.
    var isArrayOfTables = false

    init(line: Int) { self.line = line }

    subscript(key: String) -> Entry? { entries.first { $0.key == key } }

    var keys: [String] { entries.map(\.key) }

    /// The elements of an array of tables.
    var elements: [TOMLTable] {
        entries.compactMap {
            if case .table(let table) = $0.value.kind { return table }
            return nil
        }
    }
}

/// A syntax error: where, which key (if one was being read), what, and how to fix it.
struct TOMLError: Error, Sendable, Equatable {
    var line: Int
    var key: String
    var message: String
    var hint: String
}
