import ServiceLifecycle

/// Ends idle MCP sessions while the server runs, so what they own is freed even when no
/// request comes to find them expired, and ends every session when the server stops.
struct MCPSessionSweeper: Service {
    let store: MCPSessionStore

    /// A quarter of the idle timeout, between 100 ms and a minute: a session outlives its
    /// timeout by at most that much.
    var interval: Duration { min(.seconds(60), max(.milliseconds(100), store.idleTimeout / 4)) }

    func run() async throws {
        let interval = interval
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: interval)
                await store.sweep()
            }
        }
        await store.endAll(.shutdown)
    }
}
