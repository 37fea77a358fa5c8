import Foundation

/// Reads policy files: parse, decode, follow `extends`, resolve, validate.
///
/// Pure with respect to the host: it reads files and nothing else, so `corral policy check`
/// runs offline and gives the same verdict the running host would.
public struct PolicyLoader: Sendable {
    /// The directory holding `<name>.toml` files.
    public let directory: String

    /// Longer chains are almost certainly a mistake, and the bound keeps a resolution cheap.
    static let maxDepth = 16
    /// Policies are a few KiB; anything this large is not one.
    static let maxFileSize = 1 << 20

    public init(directory: String) { self.directory = directory }

    /// Loads `<directory>/<name>.toml` and everything it extends.
    public func load(named name: String) throws(PolicyErrors) -> Policy {
        let file = path(of: name)
        guard FileManager.default.fileExists(atPath: file) else {
            throw PolicyErrors([
                PolicyError(
                    file: file, line: 0, key: "-", message: "no policy named \"\(name)\"",
                    hint: "policies are the *.toml files in \(directory)")
            ])
        }
        return try Self.load(file: file, name: name)
    }

    /// Loads the file at `path`; the names it `extends` are looked up beside it.
    public static func load(file path: String) throws(PolicyErrors) -> Policy {
        let base = (path as NSString).lastPathComponent
        let name = base.hasSuffix(".toml") ? String(base.dropLast(5)) : base
        return try load(file: path, name: name)
    }

    /// The names of the policies in the directory (`*.toml`, hidden files skipped), and an
    /// error for each `.toml` file whose name cannot be a policy name.
    public func policyNames() throws(PolicyErrors) -> (names: [String], errors: [PolicyError]) {
        let entries: [String]
        do {
            entries = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            throw PolicyErrors([
                PolicyError(
                    file: directory, line: 0, key: "-", message: "cannot list the policies directory",
                    hint: "check that it exists and is readable")
            ])
        }
        var names: [String] = []
        var errors: [PolicyError] = []
        for entry in entries.sorted() where entry.hasSuffix(".toml") && !entry.hasPrefix(".") {
            let name = String(entry.dropLast(5))
            if PolicyName.isValid(name) {
                names.append(name)
            } else {
                errors.append(
                    PolicyError(
                        file: directory + "/" + entry, line: 0, key: "-",
                        message: "\"\(name)\" is not a valid policy name; the file is ignored", hint: PolicyName.hint))
            }
        }
        return (names, errors)
    }

    func path(of name: String) -> String { (directory as NSString).appendingPathComponent(name + ".toml") }

    // MARK: - Chains

    static func load(file path: String, name: String) throws(PolicyErrors) -> Policy {
        try PolicyResolver.resolve(try chain(from: path, name: name))
    }

    /// The named layer and every layer it extends, the root first.
    static func chain(from path: String, name: String) throws(PolicyErrors) -> [PolicyLayer] {
        var layer = try readLayer(path: path, name: name)
        var layers = [layer]
        var names = [name]
        while let parent = layer.extends {
            let origin = parent.origin
            if names.contains(parent.value) {
                let cycle = (names + [parent.value]).joined(separator: " -> ")
                throw PolicyErrors([
                    origin.error(
                        "extends cycle: \(cycle)", hint: "a policy cannot extend itself, directly or through others")
                ])
            }
            guard names.count < maxDepth else {
                throw PolicyErrors([origin.error("extends chain is deeper than \(maxDepth)", hint: "flatten the chain")]
                )
            }
            let parentPath = ((layer.file as NSString).deletingLastPathComponent as NSString)
                .appendingPathComponent(parent.value + ".toml")
            guard FileManager.default.fileExists(atPath: parentPath) else {
                throw PolicyErrors([origin.error("no policy named \"\(parent.value)\"", hint: "expected \(parentPath)")]
                )
            }
            do {
                layer = try readLayer(path: parentPath, name: parent.value)
            } catch {
                let summary = origin.error(
                    "extends \"\(parent.value)\", which has errors", hint: "fix \(parentPath) first")
                throw PolicyErrors([summary] + error.errors)
            }
            layers.append(layer)
            names.append(parent.value)
        }
        return layers.reversed()
    }

    /// One file, parsed and decoded, or every problem in it.
    static func readLayer(path: String, name: String) throws(PolicyErrors) -> PolicyLayer {
        let text = try read(path)
        let table: TOMLTable
        do {
            table = try TOMLParser.parse(text)
        } catch {
            throw PolicyErrors([
                PolicyError(file: path, line: error.line, key: error.key, message: error.message, hint: error.hint)
            ])
        }
        let diagnostics = Diagnostics(file: path)
        let layer = PolicyDecoder.decode(table, name: name, diagnostics: diagnostics)
        guard diagnostics.errors.isEmpty else { throw PolicyErrors(diagnostics.errors) }
        return layer
    }

    static func read(_ path: String) throws(PolicyErrors) -> String {
        func fail(_ message: String, _ hint: String) -> PolicyErrors {
            PolicyErrors([PolicyError(file: path, line: 0, key: "-", message: message, hint: hint)])
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw fail("cannot read the file", "check that it exists and is readable")
        }
        guard data.count <= maxFileSize else { throw fail("the file is larger than 1MiB", "a policy is a few KiB") }
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }  // editors on some systems add a BOM
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw fail("the file is not valid UTF-8", "save it as UTF-8")
        }
        return text
    }
}
