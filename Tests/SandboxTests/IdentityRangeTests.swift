import Testing

@testable import Sandbox

/// Identity ranges: distinct per sandbox, shared only within a fork family (docs/CACHE.md,
/// "Forks"), and a family's range is never handed to an unrelated sandbox.
struct IdentityRangeTests {
    @Test func aFamilyRangeIsSharedByItsSandboxesAndNeverGivenToAnother() throws {
        let ranges = IdentityRanges()
        let family = try ranges.reserveFamily()
        #expect(family == IdentityRanges.base)
        // An unrelated sandbox gets the next free range, not the family's.
        let other = try ranges.allocate()
        #expect(other == IdentityRanges.base + IdentityRanges.size)
        // Sandboxes over the family's layers share its range.
        #expect(try ranges.allocate(sharing: family) == family)
        #expect(try ranges.allocate(sharing: family) == family)
        // A range that is not a family's is never shared: the caller gets a fresh one.
        let fresh = try ranges.allocate(sharing: other)
        #expect(fresh != other && fresh != family)
        ranges.release(family)
        ranges.release(family)
        ranges.release(fresh)
        // Released, the family's range is still reserved while its layers exist.
        #expect(try ranges.allocate() == IdentityRanges.base + 2 * IdentityRanges.size)
        ranges.release(family: family)
        #expect(try ranges.allocate() == family)
    }

    @Test func aRangeHeldByASandboxOfItsOwnIsNotSharedEvenOnceItIsAFamilys() throws {
        let ranges = IdentityRanges()
        let own = try ranges.allocate()
        #expect(ranges.reserve(family: own))
        let other = try ranges.allocate(sharing: own)
        #expect(other != own)
        ranges.release(own)
        #expect(try ranges.allocate(sharing: own) == own)
        #expect(IdentityRanges.range(of: own + 1000) == own)
        #expect(IdentityRanges.range(of: 1000) == nil)
        #expect(!ranges.reserve(family: 12))
    }
}
