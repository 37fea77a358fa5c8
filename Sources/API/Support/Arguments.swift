import Sandbox

/// Reads the fields of a JSON object one by one, so every missing field, wrong type or
/// out-of-range number gets a message that names the field and says what was expected.
struct Arguments {
    private var fields: [String: JSON]
    private var used: Set<String> = []

    /// Whether the arguments name `name` at all (not marking it used).
    func has(_ name: String) -> Bool { fields[name] != nil && fields[name] != .null }

    /// Whether `name` is the boolean true (not marking it used).
    func isTrue(_ name: String) -> Bool { fields[name] == .bool(true) }

    init(_ fields: [String: JSON]) { self.fields = fields }

    /// Every field, for a caller that hands the object on whole.
    var all: [String: JSON] { fields }

    /// The object in `json`, or an error saying the body must be one.
    init(body json: JSON, what: String = "the request body") throws(APIError) {
        guard case .object(let fields) = json else {
            throw .invalidArgument(what, "must be a JSON object, got \(json.kindName)")
        }
        self.fields = fields
    }

    /// The first of `name` and `aliases` present (explicit null counts as absent).
    private mutating func value(_ name: String, _ aliases: [String]) -> (String, JSON)? {
        for key in [name] + aliases {
            used.insert(key)
            if let value = fields[key], value != .null { return (key, value) }
        }
        return nil
    }

    mutating func string(_ name: String, aliases: [String] = [], maxBytes: Int = 1 << 20) throws(APIError)
        -> String?
    {
        guard let (key, value) = value(name, aliases) else { return nil }
        guard case .string(let text) = value else {
            throw .invalidArgument(key, "must be a string, got \(value.kindName)")
        }
        guard text.utf8.count <= maxBytes else {
            throw .invalidArgument(key, "is \(text.utf8.count) bytes; the most accepted is \(maxBytes)")
        }
        guard !text.utf8.contains(0) else { throw .invalidArgument(key, "must not contain NUL bytes") }
        return text
    }

    mutating func requiredString(_ name: String, aliases: [String] = [], maxBytes: Int = 1 << 20) throws(APIError)
        -> String
    {
        guard let text = try string(name, aliases: aliases, maxBytes: maxBytes) else { throw .missingArgument(name) }
        return text
    }

    /// A number in `range`.
    mutating func number(_ name: String, aliases: [String] = [], in range: ClosedRange<Double>) throws(APIError)
        -> Double?
    {
        guard let (key, value) = value(name, aliases) else { return nil }
        guard case .number(let number) = value else {
            throw .invalidArgument(key, "must be a number, got \(value.kindName)")
        }
        guard range.contains(number) else {
            throw .invalidArgument(
                key,
                "must be between \(Self.format(range.lowerBound)) and \(Self.format(range.upperBound)), got \(Self.format(number))"
            )
        }
        return number
    }

    /// A whole number in `range`.
    mutating func int(_ name: String, aliases: [String] = [], in range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let (key, value) = value(name, aliases) else { return nil }
        guard case .number(let number) = value, number.rounded() == number, abs(number) < 1e15 else {
            throw .invalidArgument(
                key, "must be a whole number, got \(value.kindName == "a number" ? "a fraction" : value.kindName)")
        }
        guard range.contains(Int(number)) else {
            throw .invalidArgument(
                key, "must be between \(range.lowerBound) and \(range.upperBound), got \(Int(number))")
        }
        return Int(number)
    }

    mutating func bool(_ name: String, aliases: [String] = []) throws(APIError) -> Bool? {
        guard let (key, value) = value(name, aliases) else { return nil }
        guard case .bool(let flag) = value else {
            throw .invalidArgument(key, "must be true or false, got \(value.kindName)")
        }
        return flag
    }

    /// An object whose values are all strings (environment variables).
    mutating func stringMap(_ name: String) throws(APIError) -> [String: String]? {
        guard let (key, value) = value(name, []) else { return nil }
        guard case .object(let object) = value else {
            throw .invalidArgument(key, "must be an object of strings, got \(value.kindName)")
        }
        var out: [String: String] = [:]
        for (field, item) in object {
            guard case .string(let text) = item else {
                throw .invalidArgument("\(key).\(field)", "must be a string, got \(item.kindName)")
            }
            out[field] = text
        }
        return out
    }

    mutating func object(_ name: String) throws(APIError) -> Arguments? {
        guard let (key, value) = value(name, []) else { return nil }
        guard case .object(let object) = value else {
            throw .invalidArgument(key, "must be an object, got \(value.kindName)")
        }
        return Arguments(object)
    }

    mutating func array(_ name: String) throws(APIError) -> [JSON]? {
        guard let (key, value) = value(name, []) else { return nil }
        guard case .array(let items) = value else {
            throw .invalidArgument(key, "must be an array, got \(value.kindName)")
        }
        return items
    }

    mutating func stringArray(_ name: String) throws(APIError) -> [String]? {
        guard let items = try array(name) else { return nil }
        return try items.enumerated().map { (index, item) throws(APIError) -> String in
            guard case .string(let text) = item else {
                throw .invalidArgument("\(name)[\(index)]", "must be a string, got \(item.kindName)")
            }
            return text
        }
    }

    /// `signal`: what a cancel sends a job first, by name (`INT`, `SIGINT`, `int`); TERM when absent.
    mutating func signal() throws(APIError) -> JobSignal {
        guard let name = try string("signal", maxBytes: 16) else { return .term }
        guard let signal = JobSignal(name: name) else {
            throw .invalidArgument("signal", "must be one of \(JobSignal.names), got \"\(name)\"")
        }
        return signal
    }

    /// Refuses fields nobody asked for: a misspelt `timeout_s` must not silently mean "default".
    func finish(_ what: String) throws(APIError) {
        let unknown = Set(fields.keys).subtracting(used).sorted()
        guard unknown.isEmpty else {
            let known = used.sorted().map { "`\($0)`" }.joined(separator: ", ")
            throw .invalidArgument(
                unknown[0], "is not a field of \(what); the fields are \(known.isEmpty ? "none" : known)")
        }
    }

    private static func format(_ value: Double) -> String {
        value.rounded() == value && abs(value) < 1e15 ? String(Int64(value)) : String(value)
    }
}
