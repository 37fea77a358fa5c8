/// `[[mount]]` sections: extra host directories, always read-only.
enum MountDecoder {
    /// Sandbox paths Corral mounts itself; a bind mount over one would hide or replace it.
    static let reservedTargets = ["/proc", "/sys", "/dev", "/tmp", "/workspace"]
    /// Host paths whose contents are the host kernel's state, not files.
    static let forbiddenSources = ["/proc", "/sys", "/dev"]

    static func decode(_ readers: [TableReader], origin: Origin) -> Setting<[Policy.BindMount]>? {
        var mounts: [Policy.BindMount] = []
        var targets: [String: Int] = [:]
        var ok = true
        for reader in readers {
            guard let source = reader.string("source"), let target = reader.string("target") else {
                if reader.table["source"] == nil { reader.missing("source", hint: "name the host directory to mount") }
                if reader.table["target"] == nil {
                    reader.missing("target", hint: "name where it appears in the sandbox")
                }
                ok = false
                continue
            }
            guard check(source, target, reader: reader) else {
                ok = false
                continue
            }
            if let earlier = targets[target.value] {
                reader.diagnostics.report(
                    target.origin.error(
                        "\"\(target.value)\" is already a mount target",
                        hint: "see line \(earlier); use one mount per target"))
                ok = false
                continue
            }
            targets[target.value] = target.origin.line
            mounts.append(Policy.BindMount(source: source.value, target: target.value))
        }
        return ok ? Setting(value: mounts, origin: origin) : nil
    }

    private static func check(_ source: Setting<String>, _ target: Setting<String>, reader: TableReader) -> Bool {
        var ok = true
        for path in [source, target] where !isCanonicalAbsolute(path.value) {
            reader.diagnostics.report(
                path.origin.error(
                    "\"\(path.value)\" is not a canonical absolute path",
                    hint: "start with /, and use no '.', '..', '//' or trailing /"))
            ok = false
        }
        guard ok else { return false }
        if source.value == "/" || forbiddenSources.contains(where: { isWithin(source.value, $0) }) {
            reader.diagnostics.report(
                source.origin.error(
                    "mounting \"\(source.value)\" would expose the host", hint: "mount a specific directory of files"))
            ok = false
        }
        if target.value == "/" || reservedTargets.contains(where: { isWithin(target.value, $0) }) {
            reader.diagnostics.report(
                target.origin.error(
                    "\"\(target.value)\" is managed by the sandbox",
                    hint: "choose a target outside \(reservedTargets.joined(separator: ", "))"))
            ok = false
        }
        return ok
    }

    static func isCanonicalAbsolute(_ path: String) -> Bool {
        guard path.hasPrefix("/"), path.count <= 4096, !path.contains("\0"), !path.contains("\n") else { return false }
        if path == "/" { return true }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        return parts.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    static func isWithin(_ path: String, _ directory: String) -> Bool {
        path == directory || path.hasPrefix(directory + "/")
    }
}
