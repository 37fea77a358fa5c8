import Foundation
import Host
import Sandbox
import Testing

/// The shapes that cross HTTP and the API node ↔ worker hop: each encodes to exactly the
/// JSON the API has always answered, and decodes back to the same value, so both ends of
/// a hop agree by construction.
@Suite struct WireTests {
    func text(_ value: some Encodable) throws -> String {
        String(decoding: try JSONValue.parse(json: Wire.encode(value)).serialized(), as: UTF8.self)
    }

    func roundTrip<T: Codable & Equatable>(_ value: T) throws -> T {
        try Wire.decode(T.self, from: Wire.encode(value))
    }

    @Test func projectLimitsAreTypedInSwiftAndStringsOnTheWire() throws {
        let limits = ProjectLimits(
            enforcement: ["pids": "not enforced: no pids controller"], requireLimits: true, cpus: 1.5,
            memoryBytes: 1 << 30, pidsMax: 256, workspaceBytes: 33_554_432, timeoutSeconds: 60, maxTimeoutSeconds: 600)
        #expect(
            try text(limits)
                == #"{"cpus":"1.5","max_timeout_s":"600","memory_bytes":"1073741824","pids":"not enforced: no pids controller","pids_max":"256","require_limits":"true","timeout_s":"60","workspace_bytes":"33554432"}"#
        )
        #expect(try roundTrip(limits) == limits)
        #expect(try text(ProjectLimits()) == "{}")
    }

    @Test func projectInfoCarriesISO8601Dates() throws {
        let info = ProjectInfo(
            id: "p", source: "file:///src", state: "cold", sourceVersion: nil, dirty: nil, diskBytes: 0,
            runningJobs: 1, queuedJobs: 2, expiresAt: Date(timeIntervalSince1970: 2_000_000_000), policy: "default",
            sandbox: true, limits: ProjectLimits(timeoutSeconds: 120),
            ports: [PortInfo(project: "p", listening: ListeningPort(port: 8080, addresses: ["0.0.0.0"]))])
        #expect(
            try text(info)
                == #"{"disk_bytes":0,"expires_at":"2033-05-18T03:33:20Z","id":"p","limits":{"timeout_s":"120"},"policy":"default","ports":[{"addresses":["0.0.0.0"],"port":8080,"url":"/v1/projects/p/ports/8080/"}],"queued_jobs":2,"running_jobs":1,"sandbox":true,"setup":{"commands":[],"status":"none"},"snapshot_bytes":0,"source":"file:///src","state":"cold"}"#
        )
        #expect(try roundTrip(info) == info)
        #expect(Wire.date(info.expiresAt) == "2033-05-18T03:33:20Z")
    }

    @Test func setupIsSnakeCaseAndItsStagesRoundTrip() throws {
        let setup = SetupInfo(
            status: .failed, commands: ["npm ci"], key: "sha256:k",
            startedAt: Date(timeIntervalSince1970: 2_000_000_000),
            durationMs: 1500, exitCode: 1, failedCommand: 1, outputTail: "$ npm ci\nnope\n")
        #expect(
            try text(setup)
                == #"{"commands":["npm ci"],"duration_ms":1500,"exit_code":1,"failed_command":1,"key":"sha256:k","output_tail":"$ npm ci\nnope\n","started_at":"2033-05-18T03:33:20Z","status":"failed"}"#
        )
        #expect(try roundTrip(setup) == setup)
        // A worker of an older version sends no `setup`: the project has none.
        let old =
            #"{"disk_bytes":0,"expires_at":"2033-05-18T03:33:20Z","id":"p","limits":{},"policy":"default","queued_jobs":0,"running_jobs":0,"sandbox":false,"source":"s","state":"cold"}"#
        #expect(try Wire.decode(ProjectInfo.self, from: Array(old.utf8)).setup == SetupInfo(status: .none))
        let stages: [(CacheProgress, String)] = [
            (.setup(.started(commands: 2)), #"{"commands":2,"stage":"setup_started"}"#),
            (.setup(.command(index: 1, command: "npm ci")), #"{"command":"npm ci","index":1,"stage":"setup_command"}"#),
            (.setup(.output("added 3 packages\n")), #"{"stage":"setup_output","text":"added 3 packages\n"}"#),
            (
                .setup(.finished(status: "succeeded", exitCode: 0, durationMs: 12)),
                #"{"duration_ms":12,"exit_code":0,"stage":"setup_finished","status":"succeeded"}"#
            ),
        ]
        for (stage, json) in stages {
            #expect(try text(stage) == json)
            #expect(try roundTrip(stage) == stage)
        }
    }

    @Test func namedSnapshotsAreSnakeCaseAndNamesFollowTheRule() throws {
        let snapshot = NamedSnapshot(
            name: "v1", project: "p", createdAt: Date(timeIntervalSince1970: 2_000_000_000), bytes: 42, files: 3,
            sha256: "ab")
        #expect(
            try text(snapshot)
                == #"{"bytes":42,"created_at":"2033-05-18T03:33:20Z","files":3,"name":"v1","project":"p","sha256":"ab"}"#
        )
        #expect(try roundTrip(snapshot) == snapshot)
        #expect(snapshot.key == "named/p/v1.tar.zst")
        for good in ["a", "v1.2_rc-3", "A9", String(repeating: "x", count: 64)] { #expect(NamedSnapshot.isValid(good)) }
        for bad in ["", ".a", "-a", "a/b", "a b", "..", String(repeating: "x", count: 65), "ü"] {
            #expect(!NamedSnapshot.isValid(bad))
        }
    }

    @Test func snapshotRepliesSayNullWhenNothingWasWritten() throws {
        let none = SnapshotReply(project: "p", snapshot: nil)
        #expect(
            try text(none)
                == #"{"message":"nothing to write back: the workspace is not materialized","project":"p","snapshot":null}"#
        )
        let written = SnapshotReply(
            project: "p", snapshot: SnapshotResult(key: "snapshots/p", version: "v1", bytes: 10, files: 2, skipped: 1))
        #expect(
            try text(written)
                == #"{"project":"p","snapshot":{"bytes":10,"files":2,"key":"snapshots/p","skipped":1,"version":"v1"}}"#)
        #expect(try roundTrip(none) == none)
        #expect(try roundTrip(written) == written)
    }

    @Test func warmProgressEventsRoundTripAndRefuseUnknownStages() throws {
        let downloading = CacheProgress.downloading(TransferProgress(bytes: 10, total: nil, bytesPerSecond: 99.6))
        #expect(try text(downloading) == #"{"bytes":10,"bytes_per_second":100,"stage":"downloading","total":null}"#)
        #expect(
            try roundTrip(downloading)
                == .downloading(TransferProgress(bytes: 10, total: nil, bytesPerSecond: 100)))
        #expect(try text(CacheProgress.extracting) == #"{"stage":"extracting"}"#)
        #expect(try roundTrip(CacheProgress.ready) == .ready)
        #expect(throws: DecodingError.self) { try Wire.decode(CacheProgress.self, from: Array(#"{"stage":"x"}"#.utf8)) }
        // A count no Int64 holds is refused, never trapped on.
        #expect(throws: DecodingError.self) {
            try Wire.decode(
                CacheProgress.self, from: Array(#"{"stage":"downloading","bytes":1e300,"bytes_per_second":1}"#.utf8))
        }
    }

    @Test func requestedLimitsUseTheAPIsNames() throws {
        let limits = RequestedLimits(cpus: 0.5, memoryBytes: 1 << 20, timeoutSeconds: 30)
        #expect(try text(limits) == #"{"cpus":0.5,"memory_bytes":1048576,"timeout_s":30}"#)
        #expect(try roundTrip(limits) == limits)
        #expect(
            try text(RegisterRequest(source: "s3://b/k", sha256: nil, policy: nil, limits: RequestedLimits()))
                == #"{"source":"s3://b/k"}"#)
    }

    @Test func fileToolRepliesKeepErrorCodeNullOnSuccess() throws {
        let ok = ToolResult(text: "hi", structured: ["path": "a"], isError: false)
        #expect(try text(ok) == #"{"error_code":null,"is_error":false,"structured":{"path":"a"},"text":"hi"}"#)
        let failed = ToolResult(ToolError.noOpEdit(path: "a", edit: nil))
        #expect(try roundTrip(failed) == failed)
        #expect(try roundTrip(ok) == ok)
    }

    @Test func errorRepliesAndTheProjectIDRule() throws {
        #expect(try text(ErrorReply(code: "busy", message: "m")) == #"{"error":{"code":"busy","message":"m"}}"#)
        #expect(ProjectID.isValid("a-b_c.1"))
        #expect(!ProjectID.isValid(".."))
        #expect(!ProjectID.isValid(""))
        #expect(!ProjectID.isValid(String(repeating: "a", count: 129)))
        #expect(!ProjectID.isValid("a/b"))
    }
}
