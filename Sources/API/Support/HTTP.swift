import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension Request {
    /// The body, refused with 413 once it passes `limit` (before reading it when the
    /// client announced its length).
    func collect(limit: Int, what: String = "the request body") async throws -> [UInt8] {
        if let length = headers[.contentLength].flatMap(Int.init), length > limit {
            throw APIError.tooLarge(what, limit: limit)
        }
        var bytes: [UInt8] = []
        for try await buffer in body {
            guard bytes.count + buffer.readableBytes <= limit else { throw APIError.tooLarge(what, limit: limit) }
            bytes += buffer.readableBytesView
        }
        return bytes
    }

    /// The body as a JSON object's fields; an empty body is an empty object.
    func jsonObject(limit: Int, what: String = "the request body") async throws -> Arguments {
        let bytes = try await collect(limit: limit)
        if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09 }) { return Arguments([:]) }
        return try Arguments(body: try JSON.parse(bytes), what: what)
    }

    /// A query parameter as a number in `range`.
    func query(_ name: String, in range: ClosedRange<Double>) throws(APIError) -> Double? {
        guard let raw = uri.queryParameters.get(name) else { return nil }
        guard let value = Double(raw), value.isFinite else {
            throw .invalidArgument(name, "must be a number, got \"\(raw)\"")
        }
        guard range.contains(value) else {
            throw .invalidArgument(
                name,
                "must be between \(JobView.format(range.lowerBound)) and \(JobView.format(range.upperBound)), got \(raw)"
            )
        }
        return value
    }

    func queryInt(_ name: String, in range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let raw = uri.queryParameters.get(name) else { return nil }
        return try Self.wholeNumber(String(raw), name: name, in: range)
    }

    /// A header as a whole number in `range`. Every integer a request carries goes through
    /// a range check before any arithmetic: Swift traps on overflow, and a trap in a server
    /// ends every tenant's jobs.
    func headerInt(_ name: HTTPField.Name, in range: ClosedRange<Int>) throws(APIError) -> Int? {
        guard let raw = headers[name] else { return nil }
        return try Self.wholeNumber(raw, name: name.rawName, in: range)
    }

    static func wholeNumber(_ raw: String, name: String, in range: ClosedRange<Int>) throws(APIError) -> Int {
        guard let value = Int(raw) else {
            throw .invalidArgument(name, "must be a whole number, got \"\(raw.prefix(64))\"")
        }
        guard range.contains(value) else {
            throw .invalidArgument(name, "must be between \(range.lowerBound) and \(range.upperBound), got \(value)")
        }
        return value
    }

    func queryBool(_ name: String) throws(APIError) -> Bool? {
        guard let raw = uri.queryParameters.get(name) else { return nil }
        switch raw.lowercased() {
        case "true", "1", "yes": return true
        case "false", "0", "no", "": return false
        default: throw .invalidArgument(name, "must be true or false, got \"\(raw)\"")
        }
    }

    /// Whether the client asked for Server-Sent Events.
    var wantsEventStream: Bool { headers[.accept]?.contains("text/event-stream") ?? false }
}

extension Response {
    /// A JSON response.
    static func json(_ value: JSON, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        json(bytes: value.serialized(), status: status, headers: headers)
    }

    /// A JSON array of values already serialized (each one written once, not again here).
    static func json(array elements: [[UInt8]]) -> Response {
        var bytes: [UInt8] = [UInt8(ascii: "[")]
        bytes.reserveCapacity(elements.reduce(2) { $0 + $1.count + 1 })
        for (index, element) in elements.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes += element
        }
        bytes.append(UInt8(ascii: "]"))
        return json(bytes: bytes)
    }

    private static func json(bytes: [UInt8], status: HTTPResponse.Status = .ok, headers: HTTPFields = [:])
        -> Response
    {
        var headers = headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    /// A Server-Sent Events stream; `produce` writes events until it returns.
    static func eventStream(_ produce: @escaping @Sendable (inout EventWriter) async throws -> Void) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(
            status: .ok, headers: headers,
            body: ResponseBody { writer in
                var events = EventWriter(writer: writer)
                try await produce(&events)
                try await events.writer.finish(nil)
            })
    }
}

/// Writes Server-Sent Events: `event:`, `id:` and one `data:` line of compact JSON each.
struct EventWriter {
    var writer: any ResponseBodyWriter

    mutating func send(_ event: String, _ data: JSON, id: String? = nil) async throws {
        var text = "event: \(event)\n"
        if let id { text += "id: \(id)\n" }
        text += "data: " + String(decoding: data.serialized(), as: UTF8.self) + "\n\n"
        try await writer.write(ByteBuffer(string: text))
    }

    /// A comment line: keeps proxies from closing an idle stream.
    mutating func keepAlive() async throws { try await writer.write(ByteBuffer(string: ": keep-alive\n\n")) }
}
