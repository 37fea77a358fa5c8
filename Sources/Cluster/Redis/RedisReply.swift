import CHiredis

/// One reply from Redis (RESP2), decoded from hiredis into plain values.
public enum RedisReply: Sendable, Equatable {
    /// A bulk string.
    case string(String)
    /// A simple status such as `OK`.
    case status(String)
    case integer(Int)
    case array([RedisReply])
    /// A nil bulk string or nil array (a missing key, a blocking read that timed out).
    case null
    /// An error reply, e.g. `NOSCRIPT ...`; ``RedisClient/command(_:)`` throws these.
    case error(String)

    /// The text of a bulk string or status reply; an integer as text.
    public var string: String? {
        switch self {
        case .string(let s), .status(let s): s
        case .integer(let i): String(i)
        default: nil
        }
    }

    public var integer: Int? {
        switch self {
        case .integer(let i): i
        case .string(let s): Int(s)
        default: nil
        }
    }

    public var array: [RedisReply]? {
        if case .array(let items) = self { return items }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// A flat `[field, value, field, value, ...]` array (HGETALL, a stream entry) as a
    /// dictionary.
    public var fields: [String: String] {
        guard let items = array else { return [:] }
        var out: [String: String] = [:]
        var index = 0
        while index + 1 < items.count {
            if let key = items[index].string, let value = items[index + 1].string { out[key] = value }
            index += 2
        }
        return out
    }
}

/// One entry of a stream: its ID and fields.
public struct StreamEntry: Sendable, Equatable {
    public var id: String
    public var fields: [String: String]
}

extension RedisReply {
    /// The entries of an `[[id, [f, v, ...]], ...]` reply (XRANGE, one stream of XREAD).
    /// Entries deleted from the stream but still pending come back with nil fields; they
    /// are kept with empty fields so the caller can still acknowledge them.
    var streamEntries: [StreamEntry] {
        (array ?? []).compactMap { item in
            guard let pair = item.array, pair.count == 2, let id = pair[0].string else { return nil }
            return StreamEntry(id: id, fields: pair[1].fields)
        }
    }

    /// The `[[key, entries], ...]` reply of XREAD / XREADGROUP, keyed by stream; empty
    /// when the read timed out.
    var streams: [String: [StreamEntry]] {
        var out: [String: [StreamEntry]] = [:]
        for item in array ?? [] {
            guard let pair = item.array, pair.count == 2, let key = pair[0].string else { continue }
            out[key, default: []] += pair[1].streamEntries
        }
        return out
    }
}

/// A stream entry ID (`<ms>-<seq>`), ordered as Redis orders them.
struct StreamID: Comparable, Sendable, CustomStringConvertible {
    var milliseconds: UInt64
    var sequence: UInt64

    static let zero = StreamID(milliseconds: 0, sequence: 0)

    init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    init?(_ text: String) {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, let ms = UInt64(parts[0]), let seq = UInt64(parts[1]) else { return nil }
        self.init(milliseconds: ms, sequence: seq)
    }

    var description: String { "\(milliseconds)-\(sequence)" }

    static func < (a: StreamID, b: StreamID) -> Bool {
        (a.milliseconds, a.sequence) < (b.milliseconds, b.sequence)
    }
}

extension RedisReply {
    /// Copies a hiredis reply tree into Swift values.
    init(_ reply: UnsafeMutablePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING: self = .string(Self.text(r.str, r.len))
        case REDIS_REPLY_STATUS: self = .status(Self.text(r.str, r.len))
        case REDIS_REPLY_ERROR: self = .error(Self.text(r.str, r.len))
        case REDIS_REPLY_INTEGER: self = .integer(Int(r.integer))
        case REDIS_REPLY_ARRAY:
            self = .array((0..<Int(r.elements)).compactMap { r.element[$0].map(RedisReply.init) })
        default: self = .null
        }
    }

    private static func text(_ pointer: UnsafeMutablePointer<CChar>?, _ length: Int) -> String {
        guard let pointer else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
    }
}
