/// The rule for project ids, `[A-Za-z0-9._-]{1,128}` except `.` and `..`: checked by the
/// API before anything else and by the cache before a path is built, so a bad id never
/// reaches a file path or a glob.
public enum ProjectID {
    /// Whether `id` may name a project.
    public static func isValid(_ id: String) -> Bool {
        guard (1...128).contains(id.utf8.count), id != ".", id != ".." else { return false }
        return id.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
    }
}
