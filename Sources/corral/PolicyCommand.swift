import ArgumentParser
import Foundation
import Host

/// `corral policy`: offline tools for the policy files admins edit.
struct PolicyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Check, show and import sandbox policies.",
        subcommands: [Check.self, Show.self, ImportSeccomp.self]
    )

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate policy files offline and print each effective, fully resolved policy."
        )

        @Argument(help: "Policy files, or directories of them.")
        var paths: [String]

        func run() throws { try finish(PolicyTool.check(paths: paths)) }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a policy as the host resolves it from the policies directory."
        )

        @Argument(help: "The policy's name (its file name without .toml).")
        var name: String

        @Option(help: "Directory of policy files.")
        var policiesDir: String = "policies"

        func run() throws { try finish(PolicyTool.show(name: name, directory: policiesDir)) }
    }

    struct ImportSeccomp: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import-seccomp",
            abstract: "Convert a Docker/OCI seccomp JSON profile into a [seccomp] policy section."
        )

        @Argument(help: "The JSON profile.")
        var file: String

        func run() throws { try finish(PolicyTool.importSeccomp(path: file)) }
    }
}

/// Prints a report and exits with its code.
private func finish(_ report: PolicyTool.Report) throws {
    if !report.output.isEmpty { print(report.output, terminator: "") }
    if !report.errors.isEmpty { FileHandle.standardError.write(Data(report.errors.utf8)) }
    if report.exitCode != 0 { throw ExitCode(report.exitCode) }
}
