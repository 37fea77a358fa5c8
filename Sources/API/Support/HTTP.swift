import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension Request {
    /// The most of a refused body read and thrown away so that its 413 reaches the client.
    static let refusedBodyDrain = 64 << 20

    /// The body, refused with 413 once it passes `limit` (before reading it when the
    /// client announced its length).
    func collect(limit: Int, what: String = "the request body") async throws -> [UInt8] {
        var iterator = body.makeAsyncIterator()
        if let length = headers[.contentLength].flatMap(Int.init), length > limit {
            throw await refuse(what, limit: limit, rest: &iterator, read: 0, announced: length)
        }
        var bytes: [UInt8] = []
        while let buffer = try await iterator.next() {
            guard bytes.count + buffer.readableBytes <= limit else {
                throw await refuse(
                    what, limit: limit, rest: &iterator, read: bytes.count + buffer.readableBytes, announced: nil)
            }
            bytes += buffer.readableBytesView
        }
        return bytes
    }

    /// The 413 for a body over `limit`, on a connection that then closes. A client that
    /// sends its whole body before reading (Python's urllib, without `Expect:
    /// 100-continue`) would otherwise block on a full socket and never see the answer, so
    /// up to ``refusedBodyDrain`` bytes of the body are read and dropped first; a client
    /// that waits for `100 Continue` is answered at once, unread.
    private func refuse(
        _ what: String, limit: Int, rest: inout RequestBody.AsyncIterator, read: Int, announced: Int?
    ) async -> APIError {
        var error = APIError.tooLarge(what, limit: limit)
        error.headers[.connection] = "close"
        let waitsForContinue = headers[.expect]?.lowercased() == "100-continue"
        guard !waitsForContinue, (announced ?? 0) <= Self.refusedBodyDrain else { return error }
        var drained = read
        while drained <= Self.refusedBodyDrain, let buffer = try? await rest.next() {
            drained += buffer.readableBytes
        }
        return error
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
