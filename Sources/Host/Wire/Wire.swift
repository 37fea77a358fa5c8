import Foundation

/// The one JSON convention of everything that crosses HTTP or the API node ↔ worker hop:
/// snake_case keys (spelled out in each type's `CodingKeys`) and ISO 8601 dates in UTC
/// without fractions (`2026-12-07T08:38:02Z`). Both ends encode and decode the shapes in
/// this folder with these coders, so a field added to a shape is one edit the compiler
/// checks on both sides.
public enum Wire {
    /// Encodes a wire shape.
    public static func encode(_ value: some Encodable) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        return Array(try encoder.encode(value))
    }

    /// Decodes a wire shape.
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws -> T {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: Data(bytes))
    }

    /// A date as the wire writes it, for shapes assembled field by field (job views).
    public static func date(_ date: Date) -> String { date.formatted(.iso8601) }
}

/// Every refusal on the wire: `{"error": {"code", "message"}}`. The API answers it, an API
/// node reads a worker's refusal from it, and a warm stream's `error` event carries it.
public struct ErrorReply: Sendable, Codable, Equatable {
    public struct Body: Sendable, Codable, Equatable {
        public var code: String
        public var message: String
    }

    public var error: Body

    public init(code: String, message: String) { error = Body(code: code, message: message) }
}
