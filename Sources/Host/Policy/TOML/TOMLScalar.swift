/// Numbers and booleans, exactly as TOML spells them: no leading zeros, underscores only
/// between digits, `0x`/`0o`/`0b` integers without a sign.
enum TOMLScalar {
    static func parse(_ token: String) -> TOMLValue.Kind? {
        switch token {
        case "true": return .boolean(true)
        case "false": return .boolean(false)
        default: break
        }
        if let value = integer(token) { return .integer(value) }
        if let value = float(token) { return .float(value) }
        return nil
    }

    static func integer(_ token: String) -> Int64? {
        for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] where token.hasPrefix(prefix) {
            guard let digits = digits(token.dropFirst(2), radix: radix) else { return nil }
            return Int64(digits, radix: radix)
        }
        var body = Substring(token)
        var sign = ""
        if let first = body.first, first == "+" || first == "-" {
            sign = first == "-" ? "-" : ""
            body = body.dropFirst()
        }
        guard let digits = digits(body, radix: 10), digits == "0" || !digits.hasPrefix("0") else { return nil }
        return Int64(sign + digits)
    }

    static func float(_ token: String) -> Double? {
        var body = Substring(token)
        if let first = body.first, first == "+" || first == "-" { body = body.dropFirst() }
        let exponentSplit = body.split(separator: "e", maxSplits: 1, omittingEmptySubsequences: false)
            .flatMap { $0.split(separator: "E", maxSplits: 1, omittingEmptySubsequences: false) }
        guard (1...2).contains(exponentSplit.count) else { return nil }
        let mantissa = exponentSplit[0].split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = digits(mantissa[0], radix: 10), whole == "0" || !whole.hasPrefix("0") else { return nil }
        if mantissa.count == 2 && digits(mantissa[1], radix: 10) == nil { return nil }
        if exponentSplit.count == 2 {
            var exponent = exponentSplit[1]
            if let first = exponent.first, first == "+" || first == "-" { exponent = exponent.dropFirst() }
            if digits(exponent, radix: 10) == nil { return nil }
        }
        guard mantissa.count == 2 || exponentSplit.count == 2 else { return nil }
        return Double(String(token.filter { $0 != "_" }))
    }

    /// The digits without underscores, or nil if empty, a digit is out of radix, or an
    /// underscore is not between two digits.
    static func digits(_ text: Substring, radix: Int) -> String? {
        guard !text.isEmpty, text.first != "_", text.last != "_", !text.contains("__") else { return nil }
        let stripped = text.filter { $0 != "_" }
        guard !stripped.isEmpty, stripped.allSatisfy({ $0.isASCII && $0.hexDigitValue.map { $0 < radix } == true })
        else { return nil }
        return String(stripped)
    }
}
