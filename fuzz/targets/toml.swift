// libFuzzer target: the policy files' TOML reader (TOMLParser), over arbitrary bytes.
// Admins write policies, but a reader that crashes or hangs on a typo takes the host with it
// at the next hot reload; a bad file must always come back as a typed TOMLError.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTOML(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    _ = try? TOMLParser.parse(text)
    return 0
}
