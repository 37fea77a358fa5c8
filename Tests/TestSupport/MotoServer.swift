import Foundation

/// An S3 API server (PyPI's moto) on 127.0.0.1 with a free port, signature checking on.
///
/// moto only verifies SigV4 signatures once its first N "free" calls are used up; those
/// create an IAM user, its access key, an allow-all S3 policy and the bucket `projects`.
/// Every request the code under test makes is then checked against the real key.
public final class MotoServer: @unchecked Sendable {
    public let port: Int
    public let accessKeyID: String
    public let secretAccessKey: String
    private let process: PythonProcess

    /// Whether moto and boto3 are installed (`pip install moto boto3`).
    public static let isAvailable = PythonProcess.hasModule("moto.server") && PythonProcess.hasModule("boto3")

    public init() throws {
        process = try PythonProcess(script: Self.script, environment: ["INITIAL_NO_AUTH_ACTION_COUNT": "3"])
        let parts = process.firstLine.split(separator: " ").map(String.init)
        guard parts.count == 3, let port = Int(parts[0]) else {
            throw TestSupportError("moto did not start: \(process.firstLine)")
        }
        self.port = port
        accessKeyID = parts[1]
        secretAccessKey = parts[2]
    }

    public var endpoint: String { "http://127.0.0.1:\(port)" }

    public func stop() { process.stop() }

    static let script = #"""
        import json, logging, time
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        from moto.server import ThreadedMotoServer
        import boto3
        s = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        s.start()
        port = s.get_host_and_port()[1]
        ep = "http://127.0.0.1:%d" % port
        iam = boto3.client("iam", endpoint_url=ep, region_name="us-east-1",
                           aws_access_key_id="boot", aws_secret_access_key="boot")
        iam.create_user(UserName="corral")
        k = iam.create_access_key(UserName="corral")["AccessKey"]
        iam.put_user_policy(UserName="corral", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        boto3.client("s3", endpoint_url=ep, region_name="us-east-1", aws_access_key_id=k["AccessKeyId"],
                     aws_secret_access_key=k["SecretAccessKey"]).create_bucket(Bucket="projects")
        print(port, k["AccessKeyId"], k["SecretAccessKey"], flush=True)
        while True: time.sleep(3600)
        """#
}
