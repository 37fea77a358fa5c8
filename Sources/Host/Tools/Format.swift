/// Text formatting shared by the tools' model-facing output.
enum Format {
    /// `1234567` → `1,234,567`.
    static func count(_ value: some BinaryInteger) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(digit)
        }
        return value < 0 ? "-" + out : out
    }

    /// `1 file`, `2 files`.
    static func plural(_ value: Int, _ noun: String) -> String { "\(count(value)) \(noun)\(value == 1 ? "" : "s")" }

    /// `10485760` → `10 MiB`; `1536` → `1.5 KiB`.
    static func bytes(_ value: Int64) -> String {
        let units = ["bytes", "KiB", "MiB", "GiB", "TiB"]
        var amount = Double(value)
        var unit = 0
        while amount >= 1024, unit < units.count - 1 {
            amount /= 1024
            unit += 1
        }
        if unit == 0 { return "\(value) bytes" }
        let rounded = (amount * 10).rounded() / 10
        let text = rounded == rounded.rounded() ? String(Int(rounded)) : String(rounded)
        return "\(text) \(units[unit])"
    }

    /// One line in `cat -n` style: the number right-aligned in six columns, a tab, the text.
    static func numbered(_ number: Int, _ text: some StringProtocol) -> String {
        var out = ""
        appendNumbered(number, text, to: &out)
        return out
    }

    /// ``numbered(_:_:)`` appended in place: a page of a file is built as one string.
    static func appendNumbered(_ number: Int, _ text: some StringProtocol, to out: inout String) {
        let digits = String(number)
        for _ in digits.utf8.count..<max(6, digits.utf8.count) { out.append(" ") }
        out.append(digits)
        out.append("\t")
        out.append(contentsOf: text)
    }

    /// A path or name as the model should see it: control characters escaped, so a file
    /// named `a\nb` cannot forge extra lines in a listing.
    static func display(_ name: String) -> String {
        guard name.unicodeScalars.contains(where: isControl) else { return name }
        var out = ""
        for scalar in name.unicodeScalars {
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where isControl(scalar): out += "\\u{\(String(scalar.value, radix: 16))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || scalar.value == 0x7F || (0x80..<0xA0).contains(scalar.value)
    }

    /// Cuts `line` to `limit` characters, with a marker giving the whole line's length in
    /// bytes (`totalBytes`, which may exceed what was kept of a huge line).
    static func cut(_ line: String, limit: Int, totalBytes: Int) -> (text: String, cut: Bool) {
        // The UTF-8 count bounds the character count, so most lines skip the slow count.
        if totalBytes <= limit || (totalBytes == line.utf8.count && line.count <= limit) { return (line, false) }
        return (
            String(line.prefix(limit))
                + "… [line cut at \(count(limit)) characters; \(count(totalBytes)) bytes in all]", true
        )
    }
}
