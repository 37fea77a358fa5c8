import Foundation
import Host

/// Who a request acts for: a token from the tokens file, or `anonymous` on a loopback host
/// run without tokens (`make run`).
public struct Principal: Sendable, Equatable {
    public var name: String
    /// Project id globs (`*` any run of characters, `?` one) this principal may touch.
    public var projects: [String]
    public var admin: Bool
    /// Its request budget; nil: the server's default.
    public var rate: RateLimit?
    /// The most jobs it may have queued or running at once; nil: the server's default
    /// (``APILimits/defaultMaxJobs``).
    public var maxJobs: Int?
    /// Policy name globs a project it registers or uploads may be under; nil: only the
    /// host's default policy. An admin may use every policy whatever this says.
    public var policies: [String]?
    /// A cluster's worker token, which API nodes present to workers: only its calls may
    /// name the agent they are forwarded for (``ForwardedCaller``).
    public var forwarder: Bool

    public init(
        name: String, projects: [String], admin: Bool, rate: RateLimit? = nil, maxJobs: Int? = nil,
        policies: [String]? = nil, forwarder: Bool = false
    ) {
        self.name = name
        self.projects = projects
        self.admin = admin
        self.rate = rate
        self.maxJobs = maxJobs
        self.policies = policies
        self.forwarder = forwarder
    }

    /// The principal of an open (tokenless, loopback-only) server.
    public static let anonymous = Principal(name: "anonymous", projects: ["*"], admin: true)

    public func may(project id: String) -> Bool { projects.contains { Glob.matches($0, id) } }

    /// Whether a project it registers or uploads may be under policy `name`. An admin (an
    /// open server's `anonymous`, a cluster's worker token) may use every policy: a worker
    /// takes what an API node forwards, which the node checked for the agent who asked.
    public func may(policy name: String, defaultPolicy: String) -> Bool {
        admin || usablePolicies(defaultPolicy: defaultPolicy).contains { Glob.matches($0, name) }
    }

    /// The policy globs it may use, as its refusals name them.
    func usablePolicies(defaultPolicy: String) -> [String] { policies ?? [defaultPolicy] }

    /// The most jobs it may have queued or running at once.
    func jobCap(_ limits: APILimits) -> Int { maxJobs ?? limits.defaultMaxJobs }
}

/// A token bucket's size: `perSecond` requests sustained, `burst` at once. `perSecond` 0
/// means unlimited.
public struct RateLimit: Sendable, Equatable {
    public var perSecond: Double
    public var burst: Int

    public init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }

    public static let unlimited = RateLimit(perSecond: 0, burst: 0)
}

/// The bearer tokens a server accepts, loaded from a JSON file:
///
/// ```json
/// {"tokens": [
///   {"name": "agent-a", "secret": "…32+ random characters…", "projects": ["team-a-*"]},
///   {"name": "python", "secret": "…", "projects": ["py-*"], "policies": ["default", "python-*"]},
///   {"name": "ops", "secret": "…", "projects": ["*"], "admin": true,
///    "rate": {"per_second": 50, "burst": 100}, "max_jobs": 200}
/// ]}
/// ```
///
/// `policies` lists globs over the policy names a token's projects may be registered or
/// uploaded under; without it, only the host's default policy (`--default-policy`, the one
/// a project naming no policy gets). `[]` allows none, so the token registers nothing. An
/// admin token may use every policy, and may not list any.
///
/// Secrets are compared as SHA-256 digests in constant time, over every token, so neither
/// timing nor the position of a token in the file tells an attacker anything.
public struct TokenStore: Sendable {
    struct Entry: Sendable {
        var principal: Principal
        var digest: [UInt8]
    }

    private(set) var entries: [Entry]

    public init(_ tokens: [(principal: Principal, secret: String)]) {
        entries = tokens.map { Entry(principal: $0.principal, digest: SHA256.hash(Array($0.secret.utf8))) }
    }

    /// This store with one more token (a cluster's worker token, say).
    public func adding(_ principal: Principal, secret: String) -> TokenStore {
        var copy = self
        copy.entries.append(Entry(principal: principal, digest: SHA256.hash(Array(secret.utf8))))
        return copy
    }

    /// The tokens other than a cluster's worker token. A worker should have none: each
    /// could call the worker directly, around the API nodes' routing, rate and job caps.
    public var agentTokenNames: [String] { entries.filter { !$0.principal.forwarder }.map(\.principal.name) }

    /// No tokens: only a loopback server may run like this.
    public var isEmpty: Bool { entries.isEmpty }
    public var count: Int { entries.count }

    /// The principal whose secret is `presented`, or nil.
    public func authenticate(_ presented: String) -> Principal? {
        let digest = SHA256.hash(Array(presented.utf8))
        var found: Principal?
        for entry in entries {
            var difference: UInt8 = 0
            for index in 0..<SHA256.byteCount { difference |= entry.digest[index] ^ digest[index] }
            // No early exit: every token is compared whatever matched.
            if difference == 0 { found = entry.principal }
        }
        return found
    }

    /// Loads and checks a tokens file; every problem names the token and the field.
    public static func load(path: String) throws -> TokenStore {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenFileError("cannot read \(path)")
        }
        do throws(APIError) {
            return try parse(Array(data))
        } catch {
            throw TokenFileError("\(path): \(error.message)")
        }
    }

    static func parse(_ bytes: [UInt8]) throws(APIError) -> TokenStore {
        var root = try Arguments(body: try JSON.parse(bytes), what: "the tokens file")
        guard let items = try root.array("tokens") else { throw .missingArgument("tokens") }
        try root.finish("the tokens file")
        var tokens: [(Principal, String)] = []
        for (index, item) in items.enumerated() {
            let what = "tokens[\(index)]"
            var fields = try Arguments(body: item, what: what)
            let name = try fields.requiredString("name", maxBytes: 128)
            let secret = try fields.requiredString("secret", maxBytes: 4096)
            guard secret.utf8.count >= 16 else {
                throw .invalidArgument("\(what).secret", "must be at least 16 characters")
            }
            let projects = try fields.stringArray("projects") ?? []
            guard !projects.isEmpty else { throw .invalidArgument("\(what).projects", "must list at least one glob") }
            let admin = try fields.bool("admin") ?? false
            var rate: RateLimit?
            if var limits = try fields.object("rate") {
                let perSecond = try limits.number("per_second", in: 0...1_000_000) ?? 0
                let burst = try limits.int("burst", in: 0...1_000_000) ?? Int(max(1, min(perSecond * 2, 1_000_000)))
                try limits.finish("\(what).rate")
                rate = RateLimit(perSecond: perSecond, burst: burst)
            }
            let maxJobs = try fields.int("max_jobs", in: 1...100_000)
            let policies = try policyGlobs(&fields, what: what)
            if admin, policies != nil {
                throw .invalidArgument(
                    "\(what).policies", "has no effect on an admin token, which may use every policy; remove it")
            }
            try fields.finish(what)
            guard !tokens.contains(where: { $0.0.name == name }) else {
                throw .invalidArgument("\(what).name", "\"\(name)\" is used by two tokens")
            }
            tokens.append(
                (
                    Principal(
                        name: name, projects: projects, admin: admin, rate: rate, maxJobs: maxJobs,
                        policies: policies), secret
                ))
        }
        return TokenStore(tokens.map { (principal: $0.0, secret: $0.1) })
    }

    /// A token's `policies`: globs over policy names, which are lowercase (an upper-case
    /// glob could never match, so it is refused rather than silently useless).
    static func policyGlobs(_ fields: inout Arguments, what: String) throws(APIError) -> [String]? {
        let key = "\(what).policies"
        let expected = "must be a list of policy names or globs, like [\"default\", \"python-*\"]"
        let items: [JSON]?
        do {
            items = try fields.array("policies")
        } catch {
            throw .invalidArgument(key, "\(expected), got \(fields.all["policies"]?.kindName ?? "nothing")")
        }
        guard let items else { return nil }
        return try items.enumerated().map { (index, item) throws(APIError) -> String in
            guard case .string(let glob) = item else {
                throw .invalidArgument("\(key)[\(index)]", "must be a string, got \(item.kindName)")
            }
            guard (1...128).contains(glob.utf8.count), glob.utf8.allSatisfy(isPolicyGlobByte) else {
                throw .invalidArgument(
                    "\(key)[\(index)]",
                    "must be a policy name or glob of lowercase letters, digits, '.', '_', '-', '*' and '?', got \"\(glob)\""
                )
            }
            return glob
        }
    }

    private static func isPolicyGlobByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
            || Array(".-_*?".utf8).contains(byte)
    }
}

/// A tokens file that cannot be used; the server refuses to start.
public struct TokenFileError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Shell-style globs over project ids: `*` matches any run of characters, `?` one.
enum Glob {
    static func matches(_ pattern: String, _ text: String) -> Bool {
        let p = Array(pattern.unicodeScalars)
        let t = Array(text.unicodeScalars)
        var (pi, ti) = (0, 0)
        var star: (p: Int, t: Int)?
        // Greedy with one backtrack point: linear in practice, no exponential blow-up.
        while ti < t.count {
            if pi < p.count, p[pi] == "?" || p[pi] == t[ti] {
                pi += 1
                ti += 1
            } else if pi < p.count, p[pi] == "*" {
                star = (pi, ti)
                pi += 1
            } else if let s = star {
                pi = s.p + 1
                ti = s.t + 1
                star = (s.p, s.t + 1)
            } else {
                return false
            }
        }
        while pi < p.count, p[pi] == "*" { pi += 1 }
        return pi == p.count
    }
}
