import Foundation
import Host
import Testing

/// JSON text in and out of ``JSONValue`` without Codable: exact output, agreement with
/// Foundation's reader, and a precise error for every kind of malformed input.
@Suite struct JSONValueTextTests {
    func text(_ value: JSONValue) -> String { String(decoding: value.serialized(), as: UTF8.self) }

    @Test func serializesCompactlyWithSortedKeysAndMinimalEscapes() {
        let value: JSONValue = [
            "z": [1, 2.5, -0.0, 1e-7, 12_345_678_901_234, 1e300, true, false, nil],
            "a": "quote \" backslash \\ slash / tab \t newline \n bell \u{7} é ✓ 😀",
            "m": [:], "k": [],
        ]
        #expect(
            text(value)
                == #"{"a":"quote \" backslash \\ slash / tab \t newline \n bell \u0007 é ✓ 😀","k":[],"m":{},"#
                + #""z":[1,2.5,0,1e-07,12345678901234,1e+300,true,false,null]}"#)
        #expect(text(.number(.infinity)) == "null")
        #expect(text(.number(.nan)) == "null")
        #expect(text(.string("\u{0}\u{1f}\r\u{8}\u{c}")) == #""\u0000\u001f\r\b\f""#)
    }

    @Test func parsesWhatFoundationParsesToTheSameValue() throws {
        let corpus = [
            #"{"a": [1, -2.5e3, 0.125, 1E2, -0, true, false, null], "b": {"c": ""}}"#,
            #"  "x\u00e9\ud83d\ude00\/\"\\\b\f\n\r\t"  "#,
            #"[[], {}, [[[]]], {"": {"": []}}]"#,
            #"{"dup": 1, "dup": 2}"#,
            "12345678901234567",
            #""plain ascii with ünïcode""#,
        ]
        for json in corpus {
            let mine = try JSONValue.parse(json: Array(json.utf8))
            let foundation = try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8))
            #expect(mine == foundation, "\(json)")
            // What we write, we (and Foundation) read back as the same value.
            #expect(try JSONValue.parse(json: mine.serialized()) == mine)
            #expect(try JSONDecoder().decode(JSONValue.self, from: Data(mine.serialized())) == mine)
        }
        #expect(try JSONValue.parse(json: Array(#"{"dup": 1, "dup": 2}"#.utf8)) == ["dup": 1])
    }

    @Test func malformedInputIsRefusedWithWhatAndWhere() {
        let cases: [(String, String, Int)] = [
            ("", "Unexpected end of input", 0),
            ("{", "Unexpected end of input", 1),
            (#"{"a" 1}"#, "Expected ':' after a key", 5),
            (#"{a: 1}"#, "Expected a string key", 1),
            ("[1,]", "Unexpected character ']'", 3),
            ("[1 2]", "Expected ',' or ']' in an array", 3),
            (#"{"a": 1 "b": 2}"#, "Expected ',' or '}' in an object", 8),
            ("01", "Leading zeros are not allowed", 0),
            ("-", "Expected a digit", 1),
            ("1.", "Expected a digit after '.'", 2),
            ("1e", "Expected a digit in the exponent", 2),
            ("1e400", "Number 1e400 is out of range", 0),
            ("tru", "Unexpected end of input", 0),
            ("nul!", "Invalid literal, expected 'null'", 0),
            ("\"a\u{1}\"", "Unescaped control character in a string", 2),
            (#""\x""#, #"Invalid escape '\x'"#, 2),
            (#""\u12g4""#, #"Invalid hex digit in a \u escape"#, 5),
            (#""\ud800""#, #"Unpaired surrogate in a \u escape"#, 7),
            (#""\udc00""#, #"Unpaired surrogate in a \u escape"#, 7),
            (#""abc"#, "Unexpected end of input in a string", 4),
            ("[1] [2]", "Unexpected text after the JSON value", 4),
            ("@", "Unexpected character '@'", 0),
        ]
        for (json, message, offset) in cases {
            #expect(throws: JSONParseError(message: message, offset: offset), "\(json)") {
                try JSONValue.parse(json: Array(json.utf8))
            }
        }
        #expect(throws: JSONParseError(message: "Invalid UTF-8 in a string", offset: 1)) {
            try JSONValue.parse(json: [0x22, 0xC3, 0x28, 0x22])
        }
    }

    @Test func nestingIsBoundedInsteadOfRecursedWithoutLimit() throws {
        let deepest = String(repeating: "[", count: 512) + String(repeating: "]", count: 512)
        var value = try JSONValue.parse(json: Array(deepest.utf8))
        var depth = 0
        while case .array(let inner) = value, let first = inner.first {
            value = first
            depth += 1
        }
        #expect(depth == 511)
        let deeper = String(repeating: "[", count: 513) + String(repeating: "]", count: 513)
        #expect(throws: JSONParseError(message: "Too many nested arrays or objects", offset: 512)) {
            try JSONValue.parse(json: Array(deeper.utf8))
        }
        let hostile = Array(repeating: UInt8(ascii: "{"), count: 100_000)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(json: hostile) }
    }
}
