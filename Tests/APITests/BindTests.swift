import API
import Testing

@Suite struct BindTests {
    @Test func defaultBindIsLoopback() { #expect(APIModule.defaultBind.hasPrefix("127.0.0.1:")) }
}
