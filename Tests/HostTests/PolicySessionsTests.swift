import Foundation
import Testing

@testable import Host

/// `[sessions]`: how many persistent sessions a project may hold and how long an idle one
/// lives. Defaults, `extends`, bounds, the default-above-maximum check and the digest.
@Suite struct PolicySessionsTests {
    static let defaults = Policy.Sessions(idleTimeoutSeconds: 1800, maxIdleTimeoutSeconds: 86_400, maxSessions: 8)

    // MARK: - Values

    @Test func absentOrEmptySectionGetsTheDefaults() throws {
        #expect(try loadPolicy("").sessions == Self.defaults)
        #expect(try loadPolicy("[sessions]\n").sessions == Self.defaults)
    }

    @Test func theShippedDefaultSpellsOutTheDefaults() throws {
        let policy = try PolicyLoader(directory: PolicyLoaderTests.packageRoot + "/policies").load(named: "default")
        #expect(policy.sessions == Self.defaults)
    }

    @Test func valuesAreRead() throws {
        let policy = try loadPolicy("[sessions]\nidle_timeout_s = 600\nmax_idle_timeout_s = 7200\nmax_sessions = 3\n")
        #expect(
            policy.sessions == Policy.Sessions(idleTimeoutSeconds: 600, maxIdleTimeoutSeconds: 7200, maxSessions: 3))
    }

    @Test func theBoundsThemselvesAreAccepted() throws {
        let low = try loadPolicy("[sessions]\nidle_timeout_s = 1\nmax_idle_timeout_s = 1\nmax_sessions = 0\n")
        #expect(low.sessions == Policy.Sessions(idleTimeoutSeconds: 1, maxIdleTimeoutSeconds: 1, maxSessions: 0))
        let high = try loadPolicy(
            "[sessions]\nidle_timeout_s = 604800\nmax_idle_timeout_s = 604800\nmax_sessions = 256\n")
        #expect(
            high.sessions
                == Policy.Sessions(idleTimeoutSeconds: 604_800, maxIdleTimeoutSeconds: 604_800, maxSessions: 256))
    }

    @Test func aChildInheritsWhatItDoesNotSay() throws {
        let base = ["base": "[sessions]\nidle_timeout_s = 300\nmax_idle_timeout_s = 3600\nmax_sessions = 2\n"]
        #expect(
            try loadPolicy("extends = \"base\"\n", others: base).sessions
                == Policy.Sessions(idleTimeoutSeconds: 300, maxIdleTimeoutSeconds: 3600, maxSessions: 2))
        #expect(
            try loadPolicy("extends = \"base\"\n[sessions]\nmax_sessions = 0\n", others: base).sessions
                == Policy.Sessions(idleTimeoutSeconds: 300, maxIdleTimeoutSeconds: 3600, maxSessions: 0))
        // Two levels: the middle file sets one key, the child another; the rest comes from base.
        let chain = base.merging(["middle": "extends = \"base\"\n[sessions]\nidle_timeout_s = 900\n"]) { $1 }
        #expect(
            try loadPolicy("extends = \"middle\"\n[sessions]\nmax_idle_timeout_s = 1200\n", others: chain).sessions
                == Policy.Sessions(idleTimeoutSeconds: 900, maxIdleTimeoutSeconds: 1200, maxSessions: 2))
    }

    // MARK: - Refused

    @Test func eachBoundIsRefusedAtItsLine() throws {
        let text = """
            # below and above every bound
            [sessions]
            idle_timeout_s = 0
            max_idle_timeout_s = 604801
            max_sessions = 257
            """
        #expect(
            try policyErrors(text) == [
                "p.toml:3: sessions.idle_timeout_s: 0 is out of range (hint: use 1...604800)",
                "p.toml:4: sessions.max_idle_timeout_s: 604801 is out of range (hint: use 1...604800)",
                "p.toml:5: sessions.max_sessions: 257 is out of range (hint: use 0...256)",
            ])
        #expect(
            try policyErrors("[sessions]\nidle_timeout_s = 604801\nmax_idle_timeout_s = 0\nmax_sessions = -1\n") == [
                "p.toml:2: sessions.idle_timeout_s: 604801 is out of range (hint: use 1...604800)",
                "p.toml:3: sessions.max_idle_timeout_s: 0 is out of range (hint: use 1...604800)",
                "p.toml:4: sessions.max_sessions: -1 is out of range (hint: use 0...256)",
            ])
    }

    @Test func wrongTypes() throws {
        #expect(
            try policyErrors("[sessions]\nidle_timeout_s = \"30m\"\nmax_sessions = 2.5\n") == [
                "p.toml:2: sessions.idle_timeout_s: expected an integer, found a string (hint: write a whole number without quotes, e.g. 1)",
                "p.toml:3: sessions.max_sessions: expected an integer, found a float (hint: write a whole number without quotes, e.g. 0)",
            ])
        #expect(
            try policyErrors("sessions = 8\n") == [
                "p.toml:1: sessions: expected a table, found an integer (hint: write it as a [sessions] section)"
            ])
    }

    @Test func unknownKeysAreRefused() throws {
        #expect(
            try policyErrors("[sessions]\nidle_timeout = 60\n") == [
                "p.toml:2: sessions.idle_timeout: unknown key \"idle_timeout\" in [sessions] (hint: did you mean \"idle_timeout_s\"?)"
            ])
        #expect(
            try policyErrors("[sessions]\nshell = \"/bin/bash\"\n") == [
                "p.toml:2: sessions.shell: unknown key \"shell\" in [sessions] (hint: allowed here: idle_timeout_s, max_idle_timeout_s, max_sessions)"
            ])
        #expect(
            try policyErrors("[sessions]\nmax_sessions = 2\nrootfs = \"devtools\"\n") == [
                "p.toml:3: sessions.rootfs: unknown key \"rootfs\" in [sessions] (hint: rootfs is a top-level key: write it above the first [section])"
            ])
        #expect(
            try policyErrors("[session]\nmax_sessions = 2\n") == [
                "p.toml:1: session: unknown key \"session\" at the top level (hint: did you mean \"sessions\"?)"
            ])
    }

    @Test func anIdleTimeoutAboveTheMaximumIsRefusedWhereThisFileSetsIt() throws {
        let hint = "(hint: raise max_idle_timeout_s or lower idle_timeout_s)"
        // Both in one file: at the idle timeout.
        #expect(
            try policyErrors("[sessions]\nidle_timeout_s = 7200\nmax_idle_timeout_s = 3600\n") == [
                "p.toml:2: sessions.idle_timeout_s: idle_timeout_s (7200) is above max_idle_timeout_s (3600) \(hint)"
            ])
        // Against a built-in default: at the key the file wrote.
        #expect(
            try policyErrors("[sessions]\nidle_timeout_s = 90000\n") == [
                "p.toml:2: sessions.idle_timeout_s: idle_timeout_s (90000) is above max_idle_timeout_s (86400) \(hint)"
            ])
        #expect(
            try policyErrors("[sessions]\nmax_idle_timeout_s = 600\n") == [
                "p.toml:2: sessions.max_idle_timeout_s: idle_timeout_s (1800) is above max_idle_timeout_s (600) \(hint)"
            ])
        // Against an inherited value: at the child's line, whichever of the two it set.
        let base = ["base": "[sessions]\nidle_timeout_s = 600\nmax_idle_timeout_s = 3600\n"]
        #expect(
            try policyErrors("extends = \"base\"\n[sessions]\nidle_timeout_s = 7200\n", others: base) == [
                "p.toml:3: sessions.idle_timeout_s: idle_timeout_s (7200) is above max_idle_timeout_s (3600) \(hint)"
            ])
        #expect(
            try policyErrors("extends = \"base\"\n\n[sessions]\nmax_idle_timeout_s = 300\n", others: base) == [
                "p.toml:4: sessions.max_idle_timeout_s: idle_timeout_s (600) is above max_idle_timeout_s (300) \(hint)"
            ])
    }

    // MARK: - Rendering and digest

    @Test func theSectionIsRenderedAndLoadsBack() throws {
        let policy = try loadPolicy("[sessions]\nidle_timeout_s = 600\nmax_idle_timeout_s = 7200\nmax_sessions = 0\n")
        let rendered = PolicyRenderer.body(policy)
        #expect(
            rendered.contains("\n[sessions]\nidle_timeout_s = 600\nmax_idle_timeout_s = 7200\nmax_sessions = 0\n\n"),
            "\(rendered)")
        #expect(
            PolicyRenderer.body(try loadPolicy("")).contains(
                "\n[sessions]\nidle_timeout_s = 1800\nmax_idle_timeout_s = 86400\nmax_sessions = 8\n\n"))
        let again = try loadPolicy(PolicyRenderer.document(policy))
        #expect(again.sessions == policy.sessions)
        #expect(again.digest == policy.digest)
    }

    @Test func eachValueIsPartOfTheDigest() throws {
        let plain = try loadPolicy("")
        let spelledOut = try loadPolicy(
            "[sessions]\nidle_timeout_s = 1800\nmax_idle_timeout_s = 86400\nmax_sessions = 8 # as built in\n")
        #expect(spelledOut.digest == plain.digest)
        let changed = try [
            "idle_timeout_s = 1799", "max_idle_timeout_s = 86401", "max_sessions = 7",
        ].map { try loadPolicy("[sessions]\n\($0)\n").digest }
        for digest in changed { #expect(digest != plain.digest) }
        #expect(Set(changed).count == changed.count)
    }
}
