import Foundation

/// The offline policy commands (`corral policy check|show|import-seccomp`) as functions, so
/// tests call exactly what the command line runs.
public enum PolicyTool {
    /// What a command printed and how it exits.
    public struct Report: Sendable, Hashable {
        public var output = ""
        public var errors = ""
        public var exitCode: Int32 = 0
    }

    /// Validates each file (or every `*.toml` in each directory) and prints the effective,
    /// fully resolved policy. Exits 1 if any has an error.
    public static func check(paths: [String]) -> Report {
        var report = Report()
        for path in expand(paths, report: &report) {
            do throws(PolicyErrors) {
                let policy = try PolicyLoader.load(file: path)
                report.output += PolicyRenderer.document(policy) + "\n"
            } catch {
                report.errors += error.description + "\n"
                report.exitCode = 1
            }
        }
        return report
    }

    /// Prints the named policy as the host would resolve it from `directory`.
    public static func show(name: String, directory: String) -> Report {
        var report = Report()
        guard PolicyName.isValid(name) else {
            report.errors = "\"\(name)\" is not a policy name (\(PolicyName.hint))\n"
            report.exitCode = 1
            return report
        }
        do throws(PolicyErrors) {
            report.output = PolicyRenderer.document(try PolicyLoader(directory: directory).load(named: name))
        } catch {
            report.errors = error.description + "\n"
            report.exitCode = 1
        }
        return report
    }

    /// Converts a Docker/OCI seccomp JSON profile into a `[seccomp]` section on stdout,
    /// with what was skipped as comments (and on stderr).
    public static func importSeccomp(path: String) -> Report {
        var report = Report()
        guard let data = FileManager.default.contents(atPath: path) else {
            report.errors = "\(path): cannot read the file\n"
            report.exitCode = 1
            return report
        }
        do throws(SeccompImport.Failure) {
            let result = try SeccompImport.convert(json: data, source: path)
            report.output = result.toml
            report.errors = result.notes.map { "note: \($0)\n" }.joined()
        } catch {
            report.errors = error.description + "\n"
            report.exitCode = 1
        }
        return report
    }

    static func expand(_ paths: [String], report: inout Report) -> [String] {
        var files: [String] = []
        for path in paths {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                files.append(path)
                continue
            }
            do throws(PolicyErrors) {
                let listing = try PolicyLoader(directory: path).policyNames()
                files += listing.names.map { (path as NSString).appendingPathComponent($0 + ".toml") }
                report.errors += listing.errors.map { $0.description + "\n" }.joined()
                if !listing.errors.isEmpty { report.exitCode = 1 }
            } catch {
                report.errors += error.description + "\n"
                report.exitCode = 1
            }
        }
        return files
    }
}
