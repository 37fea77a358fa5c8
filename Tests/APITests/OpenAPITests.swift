import API
import Foundation
import Hummingbird
import Testing

/// docs/openapi.json and the router describe the same API: every route is documented and
/// every documented operation is routed.
@Suite struct OpenAPITests {
    @Test func everyRouteIsDocumentedAndEveryDocumentedOperationIsRouted() throws {
        let backend = try FakeBackend()
        let router = buildRouter(
            try APIState(configuration: APIConfiguration(port: 0), backend: backend, jobs: backend.jobService))
        // The router's catch-all (`**`, the rest of a relayed path) is `{path}` in OpenAPI.
        let routed = Set(
            router.routes.map {
                "\($0.method.rawValue) \($0.path.description.replacingOccurrences(of: "/**", with: "/{path}"))"
            })
        let document = try JSON.parse(OpenAPIDocument.bytes)
        guard case .object(let paths)? = document["paths"] else {
            Issue.record("no paths")
            return
        }
        var documented: Set<String> = []
        for (path, item) in paths {
            guard case .object(let operations) = item else { continue }
            for method in operations.keys { documented.insert("\(method.uppercased()) \(path)") }
        }
        #expect(routed.subtracting(documented).sorted() == [], "routes missing from openapi.json")
        #expect(documented.subtracting(routed).sorted() == [], "documented but not routed")
        #expect(routed.count == 62)
    }

    @Test func theServedDocumentIsTheOneInDocs() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/openapi.json")
        #expect(Array(try Data(contentsOf: docs)) == OpenAPIDocument.bytes)
        #expect(try JSON.parse(OpenAPIDocument.bytes)["openapi"] == "3.1.0")
    }
}
