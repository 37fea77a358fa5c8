// swift-tools-version:6.1
import PackageDescription

// Corral: a sandboxed container-per-project execution host for coding agents.
// Dependency direction: corral → API → Cluster → Host → Sandbox → C targets. Nothing points
// back up; Host and `corral serve` know nothing of Redis.

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "corral",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "corral", targets: ["corral"]),
        .executable(name: "corral-init", targets: ["CInit"]),
    ],
    dependencies: [
        // Exact versions, so a new release cannot change a build overnight. Package.resolved
        // stays uncommitted: the machines' package mirrors have commit ids of their own.
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", exact: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        // Already pulled in by Hummingbird; named so API can import their modules directly.
        .package(url: "https://github.com/apple/swift-http-types", exact: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", exact: "1.35.2"),
    ],
    targets: [
        // MARK: - C: system libraries (module maps only) and the post-fork shim
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "CCap", pkgConfig: "libcap", providers: [.apt(["libcap-dev"])]),
        .systemLibrary(name: "CSeccomp", pkgConfig: "libseccomp", providers: [.apt(["libseccomp-dev"])]),
        .systemLibrary(name: "CHiredis", pkgConfig: "hiredis", providers: [.apt(["libhiredis-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3", providers: [.apt(["libsqlite3-dev"])]),
        .target(name: "CShim"),
        // pid 1 of every sandbox: a small C program, so no copy of the host's memory lives
        // inside a sandbox.
        // Static: the builder execs it in a namespace without the host's files (no dynamic
        // loader, no libraries), and a sandbox's pid 1 should pin as little memory as it can.
        .executableTarget(
            name: "CInit", path: "Sources/CInit", linkerSettings: [.unsafeFlags(["-static-executable"])]),

        // MARK: - Swift modules
        .target(
            name: "Sandbox",
            dependencies: ["CShim", "CCap", "CSeccomp", .product(name: "Logging", package: "swift-log")],
            swiftSettings: strict
        ),
        .target(
            name: "Host",
            dependencies: [
                "Sandbox", "CShim", "CCurl", "CArchive", "COpenSSL", "CSQLite",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict
        ),
        // Several machines over Redis: the client, leases, the worker, the registry, and the
        // backends of an API node (forwarding to each project's owner) and of a worker host.
        .target(
            name: "Cluster",
            dependencies: [
                "Host", "Sandbox", "CHiredis", "COpenSSL", "CCurl", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "API",
            dependencies: [
                "Cluster", "Host", "Sandbox", .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "NIOCore", package: "swift-nio"),
                // The ports relay: an HTTP/1.1 client on a sandbox's socket, and upgrades.
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras"),
            ],
            resources: [.copy("Resources/openapi.json")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "corral",
            dependencies: [
                "API", "Cluster", "Host", "Sandbox",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // MARK: - Benchmarks (make bench)
        .executableTarget(
            name: "corral-bench-sandbox", dependencies: ["Sandbox"], path: "benchmarks/SandboxBench",
            swiftSettings: strict),

        .executableTarget(
            name: "corral-bench-jobs", dependencies: ["Host", "Sandbox"], path: "benchmarks/JobsBench",
            swiftSettings: strict),

        .executableTarget(
            name: "corral-bench-egress", dependencies: ["Host", "Sandbox"], path: "benchmarks/EgressBench",
            swiftSettings: strict),

        .executableTarget(
            name: "corral-bench-cluster", dependencies: ["Cluster", "Host", "Sandbox", "TestSupport"],
            path: "benchmarks/ClusterBench",
            swiftSettings: strict),

        .executableTarget(
            name: "corral-bench-api",
            dependencies: [
                "API", "Host", "Sandbox", .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "benchmarks/APIBench", swiftSettings: strict),

        // MARK: - Tests
        .target(
            name: "TestSupport", dependencies: ["Host", "Sandbox"], path: "Tests/TestSupport", swiftSettings: strict),
        // One worker host as its own process, for the multi-process cluster tests (kill -9)
        // and the cluster benchmark.
        .executableTarget(
            name: "corral-cluster-testnode", dependencies: ["Cluster", "Host", "Sandbox"],
            path: "Tests/ClusterTestNode",
            swiftSettings: strict),
        .testTarget(
            name: "BindingTests",
            dependencies: ["TestSupport", "CShim", "CCurl", "CArchive", "CCap", "CSeccomp", "CHiredis"],
            swiftSettings: strict
        ),
        .testTarget(name: "SandboxTests", dependencies: ["Sandbox", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "HostTests", dependencies: ["Host", "TestSupport"], swiftSettings: strict),
        .testTarget(name: "ClusterTests", dependencies: ["Cluster", "Host", "TestSupport"], swiftSettings: strict),
        .testTarget(
            name: "APITests",
            dependencies: [
                "API", "Host", "Sandbox", "TestSupport", .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ],
            swiftSettings: strict
        ),
    ]
)
