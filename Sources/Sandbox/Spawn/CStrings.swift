import Glibc

/// A NULL-terminated array of C strings in malloc'd memory, for a child to read after
/// clone. Freed when released; the parent releases it only after the clone returned.
public final class CStringArray {
    /// The array, `count` strings and a NULL.
    public let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    /// How many strings, without the NULL.
    public let count: Int

    /// Copies `strings` into malloc'd memory.
    public init(_ strings: [String]) {
        count = strings.count
        pointer = .allocate(capacity: strings.count + 1)
        for (i, s) in strings.enumerated() { pointer[i] = strdup(s) }
        pointer[strings.count] = nil
    }

    deinit {
        for i in 0..<count { free(pointer[i]) }
        pointer.deallocate()
    }
}
