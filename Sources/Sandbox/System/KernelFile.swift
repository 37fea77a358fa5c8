import Glibc

/// Reading procfs and sysfs files whole.
///
/// These files report a size of 0 and produce their content as they are read; readers
/// that trust the size, or stop after one page (Foundation's `String(contentsOfFile:)`
/// returns only the first 4 KiB of `/proc/self/mountinfo`), silently miss the rest.
public enum KernelFile {
    /// The file's whole content, read until end of file. Throws ``SystemError``.
    public static func read(_ path: String) throws -> String {
        let fd = try syscall("open(\(path))") { open(path, O_RDONLY | O_CLOEXEC) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = try syscall("read(\(path))") {
                chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            }
            if count == 0 { break }
            bytes.append(contentsOf: chunk[0..<count])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
