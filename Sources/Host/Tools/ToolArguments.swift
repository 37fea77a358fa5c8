/// A tool call's arguments, read with exact type checks and spelling aliases.
///
/// Every read marks the key as used; ``finish(_:)`` then rejects whatever the tool does not
/// take, so a misspelt `replaceAll` fails loudly instead of being ignored. JSON `null`
/// counts as absent, since models send it for optional arguments.
struct ToolArguments {
    private let values: [String: JSONValue]
    private var used: Set<String> = []

    init(_ values: [String: JSONValue]) { self.values = values }

    /// The value under `name` or one of its `aliases`; an error if more than one is given.
    mutating func value(_ name: String, aliases: [String] = []) throws(ToolError) -> JSONValue? {
        let present = ([name] + aliases).filter { key in values[key].map { $0 != .null } ?? false }
        used.formUnion([name] + aliases)
        guard present.count <= 1 else {
            throw .invalidArguments(
                argument: name,
                detail: "given more than once, as \(present.map { "`\($0)`" }.joined(separator: " and ")).")
        }
        return present.first.flatMap { values[$0] }
    }

    mutating func string(_ name: String, aliases: [String] = []) throws(ToolError) -> String? {
        guard let value = try value(name, aliases: aliases) else { return nil }
        guard case .string(let text) = value else { throw Self.wrongType(name, "a string", value) }
        return text
    }

    mutating func requiredString(_ name: String, aliases: [String] = []) throws(ToolError) -> String {
        guard let text = try string(name, aliases: aliases) else { throw Self.missing(name) }
        return text
    }

    mutating func int(_ name: String, aliases: [String] = []) throws(ToolError) -> Int? {
        guard let value = try value(name, aliases: aliases) else { return nil }
        guard case .number(let number) = value, number == number.rounded(), abs(number) <= 1e15 else {
            throw Self.wrongType(name, "an integer", value)
        }
        return Int(number)
    }

    mutating func bool(_ name: String, aliases: [String] = []) throws(ToolError) -> Bool? {
        guard let value = try value(name, aliases: aliases) else { return nil }
        guard case .bool(let flag) = value else { throw Self.wrongType(name, "a boolean (true or false)", value) }
        return flag
    }

    mutating func array(_ name: String, aliases: [String] = []) throws(ToolError) -> [JSONValue]? {
        guard let value = try value(name, aliases: aliases) else { return nil }
        guard case .array(let items) = value else { throw Self.wrongType(name, "an array", value) }
        return items
    }

    /// Rejects any argument no read asked for, naming what the tool takes.
    func finish(_ tool: String) throws(ToolError) {
        let unknown = values.keys.filter { !used.contains($0) }.sorted()
        guard let first = unknown.first else { return }
        let accepted = used.sorted().map { "`\($0)`" }.joined(separator: ", ")
        throw .invalidArguments(argument: first, detail: "`\(tool)` has no such argument; it takes \(accepted).")
    }

    static func missing(_ name: String) -> ToolError { .invalidArguments(argument: name, detail: "is required.") }

    static func wrongType(_ name: String, _ expected: String, _ value: JSONValue) -> ToolError {
        .invalidArguments(argument: name, detail: "must be \(expected), got \(value.typeName).")
    }
}
