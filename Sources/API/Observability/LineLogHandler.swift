import Foundation
import Logging
import Synchronization

/// A swift-log handler that prints one line per event, in one of two formats:
///
/// - ``Format/json``: one JSON object per line: `ts`, `level`, `logger`, `msg`, then the
///   metadata (request id, principal, …) as fields. Log shippers read it without a parser
///   of their own.
/// - ``Format/text``: for people reading a terminal, `TS LEVEL LOGGER: MESSAGE key=value …`.
///   Every control character in the message and the metadata is escaped (`\n`, `\u{1b}`).
///
/// Either way a file name or a header an agent chose can never start a line of its own and
/// forge an entry.
public struct LineLogHandler: LogHandler {
    /// How a line is written.
    public enum Format: Sendable {
        case json, text
    }

    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info
    let label: String
    let format: Format
    let sink: @Sendable (String) -> Void

    /// `sink` receives each line (with its newline); the default writes to stderr.
    public init(
        label: String, format: Format = .json,
        sink: @escaping @Sendable (String) -> Void = LineLogHandler.standardError
    ) {
        self.label = label
        self.format = format
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:], uniquingKeysWith: { _, new in new })
        switch format {
        case .json: sink(jsonLine(event, merged))
        case .text: sink(textLine(event, merged))
        }
    }

    private func jsonLine(_ event: LogEvent, _ metadata: Logger.Metadata) -> String {
        var fields: [String: JSON] = [:]
        for (key, value) in metadata { fields[key] = Self.json(value) }
        fields["ts"] = .string(Self.timestamp())
        fields["level"] = .string(event.level.rawValue)
        fields["logger"] = .string(label)
        fields["msg"] = .string(event.message.description)
        if event.level >= .warning { fields["source"] = .string("\(event.file):\(event.line)") }
        return String(decoding: JSON.object(fields).serialized(), as: UTF8.self) + "\n"
    }

    private func textLine(_ event: LogEvent, _ metadata: Logger.Metadata) -> String {
        var line = "\(Self.timestamp()) \(event.level.rawValue) \(Self.escape(label)): "
        line += Self.escape(event.message.description)
        for key in metadata.keys.sorted() {
            line += " \(Self.escape(key))=\(Self.escape(Self.text(metadata[key]!)))"
        }
        return line + "\n"
    }

    static func json(_ value: Logger.Metadata.Value) -> JSON {
        switch value {
        case .string(let text): .string(text)
        case .stringConvertible(let item): .string(item.description)
        case .array(let items): .array(items.map(json))
        case .dictionary(let dict): .object(dict.mapValues(json))
        }
    }

    static func text(_ value: Logger.Metadata.Value) -> String {
        switch value {
        case .string(let text): text
        case .stringConvertible(let item): item.description
        case .array(let items): "[" + items.map(text).joined(separator: ", ") + "]"
        case .dictionary(let dict):
            "[" + dict.keys.sorted().map { "\($0): \(text(dict[$0]!))" }.joined(separator: ", ") + "]"
        }
    }

    /// C0 controls, DEL and the C1 controls (U+0080–U+009F, which some terminals obey) as
    /// escapes; a backslash doubled, so an escape in the input cannot pass for ours.
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x0A: out += "\\n"
            case 0x0D: out += "\\r"
            case 0x09: out += "\\t"
            case 0x5C: out += "\\\\"
            case 0x00..<0x20, 0x7F..<0xA0, 0x2028, 0x2029:
                out += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
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
