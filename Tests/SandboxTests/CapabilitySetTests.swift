import Sandbox
import Testing

/// Capability names resolve through libcap exactly, and nothing else gets in.
@Suite struct CapabilitySetTests {
    @Test func noneIsEmpty() {
        #expect(CapabilitySet.none.mask == 0)
        #expect(CapabilitySet.none.names == [])
        #expect(CapabilitySet.none.description == "none")
    }

    @Test func namesInEitherCaseBecomeBits() throws {
        let set = try CapabilitySet(names: ["CAP_NET_BIND_SERVICE", "cap_chown", "Cap_Kill"])
        #expect(set.mask == 1 << 10 | 1 << 0 | 1 << 5)
        #expect(set.names == ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"])
        #expect(set.contains("cap_kill"))
        #expect(!set.contains("CAP_SYS_ADMIN"))
    }

    @Test func newestCapabilitiesAreKnown() throws {
        #expect(try CapabilitySet(names: ["CAP_BPF"]).mask == 1 << 39)
        #expect(try CapabilitySet(names: ["CAP_CHECKPOINT_RESTORE"]).mask == 1 << 40)
    }

    @Test func unknownOrSloppyNamesAreRejected() {
        for name in ["CAP_NO_SUCH", "net_admin", "21", "cap_sys_admin ", "", "all", "cap_41"] {
            #expect(throws: CapabilityError.unknownName(name)) { try CapabilitySet(names: [name]) }
        }
    }

    @Test func allNamesCoverEveryKnownBit() {
        let names = CapabilitySet.allNames
        #expect(names.first == "cap_chown")
        #expect(names.count >= 41)
        #expect(names.contains("cap_sys_admin"))
    }
}
