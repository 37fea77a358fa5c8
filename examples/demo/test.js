const assert = require("node:assert");
assert.strictEqual(1 + 1, 2);
console.log("demo tests passed: 1 of 1");
