import Sandbox
import Testing

@Suite struct ShimTests {
    @Test func shimLinks() { #expect(SandboxModule.shimVersion == 1) }
}
