import Foundation
import Host

/// A JSON value, for request bodies whose fields are checked one by one (so a wrong type
/// gets a message naming the field) and for responses built on the fly: the host's
/// ``JSONValue``, which the file tools take and give, with the HTTP layer's helpers.
public typealias JSON = JSONValue

extension JSONValue {
    /// Parses UTF-8 JSON; the error says where it broke.
    public static func parse(_ bytes: some Collection<UInt8>) throws(APIError) -> JSON {
        do {
            return try JSONValue.parse(json: bytes)
        } catch {
            throw .malformedJSON(error.description)
        }
    }

    /// A short name of the value's type for the API's argument errors, where every number
    /// is "a number" (``typeName`` tells integers apart, for the tools).
    var kindName: String {
        if case .number = self { return "a number" }
        return typeName
    }

    /// The field `key` of an object; nil for a missing field or a value that is not an object.
    public subscript(key: String) -> JSON? {
        if case .object(let fields) = self { return fields[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var numberValue: Double? {
        if case .number(let n) = self { return n }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// A wire shape (``Wire``) as JSON, for responses and for embedding in larger ones.
    public static func from(_ value: some Encodable) -> JSON {
        guard let bytes = try? Wire.encode(value), let json = try? JSONValue.parse(json: bytes) else { return .null }
        return json
    }
}
