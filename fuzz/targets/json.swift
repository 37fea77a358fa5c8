// libFuzzer target: JSONValue.parse, the reader of every API request body and tool call.
// Beyond "no crash, no hang, no leak": what it reads, it writes back in a form that reads
// back to the same text (the serialization is a fixed point after one round).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzJSON(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard let value = try? JSONValue.parse(json: UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    let once = value.serialized()
    guard let again = try? JSONValue.parse(json: once) else {
        fatalError("serialized output does not parse: \(String(decoding: once, as: UTF8.self))")
    }
    let twice = again.serialized()
    if once != twice {
        fatalError(
            "not a fixed point: \(String(decoding: once, as: UTF8.self)) vs \(String(decoding: twice, as: UTF8.self))")
    }
    return 0
}
