import Host
import Testing

@Suite struct VersionTests {
    @Test func versionIsSemantic() { #expect(HostModule.version.split(separator: ".").count == 3) }
}
