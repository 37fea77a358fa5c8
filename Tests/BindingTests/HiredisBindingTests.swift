import CHiredis
import Glibc
import Testing

/// hiredis links and builds the exact wire bytes of a command; the Redis issue talks to a
/// real server with it.
@Suite struct HiredisBindingTests {
    @Test func formatsACommandInRESP() throws {
        var out: UnsafeMutablePointer<CChar>?
        let argv: [String] = ["SET", "key", "value"]
        let cStrings = argv.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        var pointers: [UnsafePointer<CChar>?] = cStrings.map { UnsafePointer($0) }
        let lengths = argv.map { $0.utf8.count }
        let n = redisFormatCommandArgv(&out, Int32(argv.count), &pointers, lengths)
        defer { redisFreeCommand(out) }
        let text = String(cString: try #require(out))
        #expect(n == Int64(text.utf8.count))
        #expect(text == "*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n")
    }
}
