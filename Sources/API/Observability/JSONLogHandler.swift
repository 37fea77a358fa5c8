import Foundation
import Logging
import Synchronization

/// A swift-log handler that prints one JSON object per line: `ts`, `level`, `logger`,
/// `msg`, then the metadata (request id, principal, …) as fields. Log shippers read it
/// without a parser of their own.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let sink: @Sendable (String) -> Void

    /// `sink` receives each line (with its newline); the default writes to stderr.
    public init(label: String, sink: @escaping @Sendable (String) -> Void = JSONLogHandler.standardError) {
        self.label = label
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: JSON] = [:]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { _, new in new }) {
            fields[key] = Self.json(value)
        }
        fields["ts"] = .string(Self.timestamp())
        fields["level"] = .string(event.level.rawValue)
        fields["logger"] = .string(label)
        fields["msg"] = .string(event.message.description)
        if event.level >= .warning { fields["source"] = .string("\(event.file):\(event.line)") }
        sink(String(decoding: JSON.object(fields).serialized(), as: UTF8.self) + "\n")
    }

    static func json(_ value: Logger.Metadata.Value) -> JSON {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let item): .string(item.description)
        case .array(let items): .array(items.map(json))
        case .dictionary(let dict): .object(dict.mapValues(json))
        }
    }

    static func timestamp() -> String {
        Date().formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true))
    }

    private static let lock = Mutex(())

    /// Writes whole lines under a lock, so lines from many threads never interleave.
    public static let standardError: @Sendable (String) -> Void = { line in
        lock.withLock { _ in FileHandle.standardError.write(Data(line.utf8)) }
    }
}
