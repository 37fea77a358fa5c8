import API
import ArgumentParser
import Foundation
import Host

/// The `corral` command: the host, and the offline tools admins and tests use.
@main
struct Corral: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "corral",
        abstract: "A sandboxed container-per-project execution host for coding agents.",
        version: HostModule.version,
        subcommands: [Serve.self, Worker.self, APINode.self, Exec.self, PolicyCommand.self]
    )
}
