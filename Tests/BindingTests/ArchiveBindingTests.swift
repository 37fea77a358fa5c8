import CArchive
import Foundation
import Testing

/// libarchive writes and reads back tar.gz and zip archives with exact contents.
@Suite struct ArchiveBindingTests {
    static let files: [(String, String)] = [
        ("hello.py", "print('hello')\n"),
        ("src/lib/util.js", "module.exports = 42;\n"),
        ("empty.txt", ""),
    ]

    enum Format: CaseIterable { case tarGz, zip }

    func write(_ format: Format) throws -> [UInt8] {
        let a = try #require(archive_write_new())
        defer { archive_write_free(a) }
        switch format {
        case .tarGz:
            #expect(archive_write_set_format_pax_restricted(a) == ARCHIVE_OK)
            #expect(archive_write_add_filter_gzip(a) == ARCHIVE_OK)
        case .zip:
            #expect(archive_write_set_format_zip(a) == ARCHIVE_OK)
        }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var used = 0
        let opened = buffer.withUnsafeMutableBytes { raw in
            archive_write_open_memory(a, raw.baseAddress, raw.count, &used)
        }
        #expect(opened == ARCHIVE_OK)
        for (path, text) in Self.files {
            let entry = try #require(archive_entry_new())
            defer { archive_entry_free(entry) }
            archive_entry_set_pathname(entry, path)
            archive_entry_set_filetype(entry, cor_ae_ifreg)
            archive_entry_set_perm(entry, 0o644)
            archive_entry_set_size(entry, la_int64_t(text.utf8.count))
            #expect(archive_write_header(a, entry) == ARCHIVE_OK)
            let bytes = Array(text.utf8)
            if !bytes.isEmpty {
                #expect(archive_write_data(a, bytes, bytes.count) == bytes.count)
            }
        }
        #expect(archive_write_close(a) == ARCHIVE_OK)
        return Array(buffer[0..<used])
    }

    func read(_ bytes: [UInt8]) throws -> [String: String] {
        let a = try #require(archive_read_new())
        defer { archive_read_free(a) }
        archive_read_support_filter_all(a)
        archive_read_support_format_all(a)
        #expect(bytes.withUnsafeBytes { archive_read_open_memory(a, $0.baseAddress, $0.count) } == ARCHIVE_OK)
        var out: [String: String] = [:]
        var entry: OpaquePointer?
        while archive_read_next_header(a, &entry) == ARCHIVE_OK {
            let name = String(cString: archive_entry_pathname(entry))
            var data = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = archive_read_data(a, &chunk, chunk.count)
                if n <= 0 { break }
                data += chunk[0..<n]
            }
            out[name] = String(decoding: data, as: UTF8.self)
        }
        return out
    }

    @Test(arguments: Format.allCases)
    func roundTrips(_ format: Format) throws {
        let bytes = try write(format)
        switch format {
        case .tarGz: #expect(bytes.prefix(2) == [0x1f, 0x8b])
        case .zip: #expect(bytes.prefix(4) == [0x50, 0x4b, 0x03, 0x04])
        }
        let back = try read(bytes)
        #expect(back == Dictionary(uniqueKeysWithValues: Self.files))
    }

    @Test func rejectsGarbage() throws {
        let a = try #require(archive_read_new())
        defer { archive_read_free(a) }
        archive_read_support_filter_all(a)
        archive_read_support_format_all(a)
        let garbage = [UInt8](repeating: 0x5a, count: 4096)
        let opened = garbage.withUnsafeBytes { archive_read_open_memory(a, $0.baseAddress, $0.count) }
        var entry: OpaquePointer?
        let next = opened == ARCHIVE_OK ? archive_read_next_header(a, &entry) : opened
        #expect(next == ARCHIVE_FATAL)
    }
}
