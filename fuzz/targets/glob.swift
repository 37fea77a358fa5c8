// libFuzzer target: GlobPattern (the glob tool, grep's glob filter) and Gitignore, which
// take patterns from the model and from files in the workspace. The first line is the
// pattern, the second a path; the whole input is also read as a .gitignore.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzGlob(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let lines = text.split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
    let pattern = String(lines[0])
    let path = lines.count > 1 ? lines[1].split(separator: "/", omittingEmptySubsequences: false).map(String.init) : []
    _ = GlobPattern(pattern).matches(path)
    _ = GlobPattern(pattern, braces: false).matches(path)
    _ = Gitignore(text).isIgnored(path, isDirectory: false)
    _ = Gitignore(text).isIgnored(path, isDirectory: true)
    return 0
}
