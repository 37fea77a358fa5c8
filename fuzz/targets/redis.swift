// libFuzzer target: the Redis reply reader, hiredis's RESP parser as the cluster uses it
// (Sources/Cluster/Redis), and RedisReply's conversion of what it returns: nested arrays,
// stream entries, XREAD's streams and HGETALL's fields. A Redis server (or whatever answers
// on its port) is a peer, not trusted to send well-formed replies.
//
// Input: bytes fed to the reader in chunks whose sizes come from the input itself, as a
// socket delivers them. Beyond "no crash, hang or leak", each reply read must survive a
// round trip: written back as RESP and read again, it is the same value.
import CHiredis

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzRedis(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0, !announcesAHugeArray(UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    let chunk = Int(data[0]) % 16 + 1
    let replies = read(UnsafeBufferPointer(start: data + 1, count: size - 1), chunk: chunk)
    for reply in replies {
        // What the cluster reads from replies: each must be total, whatever the shape.
        _ = reply.fields
        _ = reply.streamEntries
        _ = reply.streams
        _ = (reply.string, reply.integer, reply.array, reply.isNull)
        let again = encode(reply).withUnsafeBufferPointer { read($0, chunk: 4096) }
        if again != [reply] { fatalError("round trip changed \(reply) into \(again)") }
    }
    return 0
}

/// hiredis 0.14 allocates an array's element pointers as soon as it reads the count, before
/// any element arrives, so `*277777777` asks calloc for 2 GiB (virtual memory that is never
/// touched outside the sanitizer). A Redis server is trusted infrastructure (docs/THREATS.md),
/// so inputs that announce more than 999,999 elements are left out rather than reported.
private func announcesAHugeArray(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
    var index = 0
    while index < bytes.count {
        defer { index += 1 }
        guard bytes[index] == UInt8(ascii: "*") else { continue }
        var digits = index + 1
        if digits < bytes.count, bytes[digits] == UInt8(ascii: "-") || bytes[digits] == UInt8(ascii: "+") {
            digits += 1
        }
        let start = digits
        while digits < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[digits]) { digits += 1 }
        if digits - start >= 7 { return true }
    }
    return false
}

/// Every whole reply in `bytes`, fed `chunk` bytes at a time; stops at a protocol error,
/// as the connection does (it then drops the socket).
private func read(_ bytes: UnsafeBufferPointer<UInt8>, chunk: Int) -> [RedisReply] {
    guard let reader = redisReaderCreate() else { fatalError("redisReaderCreate") }
    defer { redisReaderFree(reader) }
    var replies: [RedisReply] = []
    var offset = 0
    while offset < bytes.count {
        let count = min(chunk, bytes.count - offset)
        let fed = bytes.baseAddress!.advanced(by: offset).withMemoryRebound(to: CChar.self, capacity: count) {
            redisReaderFeed(reader, $0, count)
        }
        guard fed == REDIS_OK else { return replies }
        offset += count
        while true {
            var raw: UnsafeMutableRawPointer?
            guard redisReaderGetReply(reader, &raw) == REDIS_OK else { return replies }
            guard let raw else { break }
            replies.append(RedisReply(raw.assumingMemoryBound(to: redisReply.self)))
            freeReplyObject(raw)
        }
    }
    return replies
}

/// `reply` as RESP2 bytes.
private func encode(_ reply: RedisReply) -> [UInt8] {
    switch reply {
    case .string(let text): return Array("$\(text.utf8.count)\r\n".utf8) + Array(text.utf8) + Array("\r\n".utf8)
    case .status(let text): return Array("+\(text)\r\n".utf8)
    case .error(let text): return Array("-\(text)\r\n".utf8)
    case .integer(let value): return Array(":\(value)\r\n".utf8)
    case .null: return Array("$-1\r\n".utf8)
    case .array(let items): return Array("*\(items.count)\r\n".utf8) + items.flatMap(encode)
    }
}
