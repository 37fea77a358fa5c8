/// Typed, strict access to one TOML table of a policy file.
///
/// Creating a reader reports every key the table does not allow; each accessor reports a
/// wrong type or an out-of-range value at the value's line and returns nil, so decoding
/// continues and the admin sees every problem of a file in one pass.
struct TableReader {
    let table: TOMLTable
    /// Dotted path of the table (`limits`, `seccomp.rule[1]`), empty for the document root.
    let path: String
    let diagnostics: Diagnostics

    init(_ table: TOMLTable, path: String, allowed: [String], diagnostics: Diagnostics) {
        self.table = table
        self.path = path
        self.diagnostics = diagnostics
        for entry in table.entries where !allowed.contains(entry.key) {
            // A top-level key written after a [section] header lands in that section.
            let misplaced =
                !path.isEmpty && PolicyDecoder.topLevel.contains(entry.key)
                ? "\(entry.key) is a top-level key: write it above the first [section]" : nil
            let hint =
                misplaced ?? closest(to: entry.key, in: allowed).map { "did you mean \"\($0)\"?" }
                ?? "allowed here: \(allowed.joined(separator: ", "))"
            let where_ = path.isEmpty ? "at the top level" : "in [\(path)]"
            diagnostics.report(
                line: entry.line, key: key(entry.key), "unknown key \"\(entry.key)\" \(where_)", hint: hint)
        }
    }

    func key(_ name: String) -> String { path.isEmpty ? name : "\(path).\(name)" }

    func origin(_ entry: TOMLTable.Entry) -> Origin { diagnostics.origin(line: entry.line, key: key(entry.key)) }

    func typeError(_ entry: TOMLTable.Entry, expected: String, hint: String) {
        diagnostics.report(
            line: entry.value.line, key: key(entry.key),
            "expected \(expected), found \(article(entry.value.typeName))", hint: hint)
    }

    func rangeError(_ entry: TOMLTable.Entry, _ shown: String, range: String) {
        diagnostics.report(
            line: entry.value.line, key: key(entry.key), "\(shown) is out of range", hint: "use \(range)")
    }

    // MARK: - Scalars

    func string(_ name: String) -> Setting<String>? {
        guard let entry = table[name] else { return nil }
        guard case .string(let value) = entry.value.kind else {
            typeError(entry, expected: "a string", hint: "put the value in double quotes")
            return nil
        }
        return Setting(value: value, origin: origin(entry))
    }

    func bool(_ name: String) -> Setting<Bool>? {
        guard let entry = table[name] else { return nil }
        guard case .boolean(let value) = entry.value.kind else {
            typeError(entry, expected: "a boolean", hint: "write true or false without quotes")
            return nil
        }
        return Setting(value: value, origin: origin(entry))
    }

    func integer(_ name: String, in range: ClosedRange<Int64>) -> Setting<Int64>? {
        guard let entry = table[name] else { return nil }
        guard case .integer(let value) = entry.value.kind else {
            typeError(
                entry, expected: "an integer", hint: "write a whole number without quotes, e.g. \(range.lowerBound)")
            return nil
        }
        guard range.contains(value) else {
            rangeError(entry, "\(value)", range: "\(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return Setting(value: value, origin: origin(entry))
    }

    func number(_ name: String, in range: ClosedRange<Double>) -> Setting<Double>? {
        guard let entry = table[name] else { return nil }
        let value: Double
        switch entry.value.kind {
        case .integer(let whole): value = Double(whole)
        case .float(let fraction): value = fraction
        default:
            typeError(entry, expected: "a number", hint: "write a number without quotes, e.g. 1.5")
            return nil
        }
        guard range.contains(value) else {
            rangeError(entry, "\(value)", range: "\(range.lowerBound)...\(range.upperBound)")
            return nil
        }
        return Setting(value: value, origin: origin(entry))
    }

    func size(_ name: String, in range: ClosedRange<UInt64>) -> Setting<UInt64>? {
        guard let entry = table[name] else { return nil }
        let sizeHint = "use a whole number with B, KiB, MiB, GiB or TiB, e.g. \"2GiB\""
        guard case .string(let text) = entry.value.kind else {
            typeError(entry, expected: "a size string", hint: sizeHint)
            return nil
        }
        guard let bytes = ByteSize.parse(text) else {
            diagnostics.report(line: entry.value.line, key: key(name), "\"\(text)\" is not a size", hint: sizeHint)
            return nil
        }
        guard range.contains(bytes) else {
            let bounds = "\(ByteSize.format(range.lowerBound))...\(ByteSize.format(range.upperBound))"
            rangeError(entry, "\"\(text)\"", range: bounds)
            return nil
        }
        return Setting(value: bytes, origin: origin(entry))
    }

    /// An array of strings, each with its own origin (the array may span lines).
    func strings(_ name: String) -> Setting<[Setting<String>]>? {
        guard let entry = table[name] else { return nil }
        guard case .array(let items) = entry.value.kind else {
            typeError(entry, expected: "an array of strings", hint: "write a list such as [\"a\", \"b\"]")
            return nil
        }
        var values: [Setting<String>] = []
        for (index, item) in items.enumerated() {
            guard case .string(let text) = item.kind else {
                diagnostics.report(
                    line: item.line, key: key("\(name)[\(index)]"),
                    "expected a string, found \(article(item.typeName))", hint: "put each item in double quotes")
                continue
            }
            values.append(Setting(value: text, origin: diagnostics.origin(line: item.line, key: key(name))))
        }
        return Setting(value: values, origin: origin(entry))
    }

    // MARK: - Tables

    func table(_ name: String, allowed: [String]) -> TableReader? {
        guard let entry = table[name] else { return nil }
        guard case .table(let child) = entry.value.kind, !child.isArrayOfTables else {
            typeError(entry, expected: "a table", hint: "write it as a [\(key(name))] section")
            return nil
        }
        return TableReader(child, path: key(name), allowed: allowed, diagnostics: diagnostics)
    }

    /// The elements of `[[name]]` (or an array of inline tables), each as a reader.
    func tables(_ name: String, allowed: [String]) -> (readers: [TableReader], origin: Origin)? {
        guard let entry = table[name] else { return nil }
        var elements: [TOMLTable] = []
        switch entry.value.kind {
        case .table(let array) where array.isArrayOfTables: elements = array.elements
        case .array(let items):
            for item in items {
                guard case .table(let element) = item.kind else {
                    typeError(
                        entry, expected: "an array of tables", hint: "write each item as a [[\(key(name))]] section")
                    return nil
                }
                elements.append(element)
            }
        default:
            typeError(entry, expected: "an array of tables", hint: "write each item as a [[\(key(name))]] section")
            return nil
        }
        let readers = elements.enumerated().map { index, element in
            TableReader(element, path: key("\(name)[\(index + 1)]"), allowed: allowed, diagnostics: diagnostics)
        }
        return (readers, origin(entry))
    }

    func missing(_ name: String, hint: String) {
        diagnostics.report(line: table.line, key: key(name), "missing key \"\(name)\"", hint: hint)
    }
}

/// "an integer", "a string".
func article(_ noun: String) -> String {
    guard let first = noun.first else { return noun }
    return ("aeiou".contains(first) ? "an " : "a ") + noun
}
