/// The environment a job starts with: a clean default, then the request's variables.
///
/// Nothing of the host's environment is passed on.
enum Environment {
    static let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

    static func build(_ job: JobSpec) -> [String] {
        let (home, user) =
            switch job.uid {
            case 0: ("/root", "root")
            case 1000: ("/home/agent", "agent")
            default: ("/tmp", "user\(job.uid)")
            }
        var env: [String: String] = [
            "PATH": path, "HOME": home, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8",
            "TERM": "dumb", "TMPDIR": "/tmp", "PWD": job.cwd,
        ]
        env.merge(job.environment) { _, requested in requested }
        return env.map { "\($0.key)=\($0.value)" }.sorted()
    }
}
