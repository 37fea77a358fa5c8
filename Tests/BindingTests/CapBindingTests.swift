import CCap
import Foundation
import Testing

/// libcap reads this process's capability sets, and they agree with the kernel's own
/// report in /proc/self/status.
@Suite struct CapBindingTests {
    /// The effective set as the kernel prints it (`CapEff:` in hex).
    func kernelEffectiveMask() throws -> UInt64 {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("CapEff:") })
        let hex = line.split(separator: "\t").last.map(String.init) ?? ""
        return try #require(UInt64(hex.trimmingCharacters(in: .whitespaces), radix: 16))
    }

    @Test func effectiveSetMatchesTheKernel() throws {
        let caps = try #require(cap_get_proc())
        defer { cap_free(UnsafeMutableRawPointer(caps)) }
        var mask: UInt64 = 0
        for bit in 0...Int32(CAP_LAST_CAP) {
            var value = CAP_CLEAR
            #expect(cap_get_flag(caps, cap_value_t(bit), CAP_EFFECTIVE, &value) == 0)
            if value == CAP_SET { mask |= 1 << UInt64(bit) }
        }
        #expect(mask == (try kernelEffectiveMask()))
    }

    @Test func namesRoundTrip() throws {
        var value: cap_value_t = 0
        #expect(cap_from_name("cap_sys_admin", &value) == 0)
        #expect(value == CAP_SYS_ADMIN)
        let name = try #require(cap_to_name(value))
        defer { cap_free(name) }
        #expect(String(cString: name) == "cap_sys_admin")
        #expect(cap_from_name("cap_no_such_thing", &value) != 0)
    }
}
