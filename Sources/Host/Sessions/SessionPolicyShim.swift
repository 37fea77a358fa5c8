// Temporary until the [sessions] policy section lands.
extension Policy {
    struct SessionsShim {
        let idleTimeoutSeconds = 1800
        let maxIdleTimeoutSeconds = 86400
        let maxSessions = 8
    }
    var sessions: SessionsShim { SessionsShim() }
}
