/// Sizes as policy files write them: a whole number and a binary unit, e.g. `"256MiB"`.
///
/// Only binary units are accepted: `1G` or `1GB` could mean 10^9 or 2^30, and a memory
/// limit that is 7% off is exactly the kind of surprise a policy must not hold.
public enum ByteSize {
    static let units: [(suffix: String, factor: UInt64)] = [
        ("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1),
    ]

    /// The number of bytes, or nil if `text` is not `<digits><unit>` or overflows.
    public static func parse(_ text: String) -> UInt64? {
        for unit in units where text.hasSuffix(unit.suffix) {
            let digits = text.dropLast(unit.suffix.count)
            guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                digits == "0" || !digits.hasPrefix("0"), let count = UInt64(digits)
            else { return nil }
            let (bytes, overflow) = count.multipliedReportingOverflow(by: unit.factor)
            return overflow ? nil : bytes
        }
        return nil
    }

    /// The largest unit that divides `bytes` exactly: `1GiB`, `1536MiB`, `100B`.
    public static func format(_ bytes: UInt64) -> String {
        for unit in units where bytes >= unit.factor && bytes % unit.factor == 0 {
            return "\(bytes / unit.factor)\(unit.suffix)"
        }
        return "\(bytes)B"
    }
}
