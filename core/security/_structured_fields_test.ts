import assert from "node:assert/strict";
import {
  type BareItem,
  type Item,
  parseDictionary,
  parseInnerList,
  parseItem,
  parseList,
  serializeBareItem,
  serializeDictionary,
  serializeItem,
  serializeList,
} from "./_structured_fields.ts";

Deno.test("structured fields: the RFC 9421 example dictionary re-serializes canonically", () => {
  const dict = parseDictionary("a=1,    b=2;x=1;y=2,   c=(a   b   c), d");
  assert.deepEqual([...dict.keys()], ["a", "b", "c", "d"]);
  assert.equal(serializeDictionary(dict), "a=1, b=2;x=1;y=2, c=(a b c), d");
});

Deno.test("structured fields: every supported bare item type round-trips", () => {
  const cases: [string, BareItem][] = [
    ["42", { type: "integer", value: 42 }],
    ["-999999999999999", { type: "integer", value: -999_999_999_999_999 }],
    ["1.5", { type: "decimal", value: 1.5 }],
    ["-0.125", { type: "decimal", value: -0.125 }],
    ['"a \\"q\\" \\\\ b"', { type: "string", value: 'a "q" \\ b' }],
    ["*tok:en/x", { type: "token", value: "*tok:en/x" }],
    [":aGVsbG8=:", {
      type: "bytes",
      value: new TextEncoder().encode("hello"),
    }],
    ["?1", { type: "boolean", value: true }],
    ["?0", { type: "boolean", value: false }],
  ];
  for (const [text, value] of cases) {
    const parsed = parseItem(text);
    assert.deepEqual(parsed.value, value, text);
    assert.equal(serializeItem(parsed), text);
  }
});

Deno.test("structured fields: parameters and inner lists keep their order", () => {
  const text =
    '("@method" "@path";req);created=1618884473;keyid="k";alg="ed25519"';
  const inner = parseInnerList(text);
  assert.deepEqual([...inner.params.keys()], ["created", "keyid", "alg"]);
  assert.deepEqual([...inner.items[1].params.keys()], ["req"]);
  assert.equal(
    serializeList([inner, parseItem("tok;a;b=?0")]),
    `${text}, tok;a;b=?0`,
  );
  assert.equal(parseList("").length, 0);
  assert.equal(parseList("a,\tb ,c").length, 3);
});

Deno.test("structured fields: decimals serialize rounded half to even, 3 digits at most", () => {
  const decimal = (value: number) =>
    serializeBareItem({ type: "decimal", value });
  assert.equal(decimal(0.0625), "0.062");
  assert.equal(decimal(0.1875), "0.188");
  assert.equal(decimal(2), "2.0");
  assert.equal(decimal(-1.25), "-1.25");
  assert.throws(() => decimal(1e12), TypeError);
});

Deno.test("structured fields: malformed input is refused", () => {
  const bad: [string, (s: string) => unknown][] = [
    ["a=1,", parseDictionary],
    ["a=1,,b=2", parseDictionary],
    ["A=1", parseDictionary],
    ["a=1 b=2", parseDictionary],
    ['"unterminated', parseItem],
    ['"bad \\n escape"', parseItem],
    ['"tab\tinside"', parseItem],
    ["1234567890123456", parseItem],
    ["1234567890123.5", parseItem],
    ["1.2345", parseItem],
    ["1.", parseItem],
    ["-", parseItem],
    ["?2", parseItem],
    [":not base64!:", parseItem],
    [":QR==:", parseItem], // stray trailing bits: not canonical
    [":aGVsbG8=", parseItem],
    ["@1659578233", parseItem], // RFC 9651 Date: not supported
    ['%"display"', parseItem], // RFC 9651 Display String: not supported
    ["(a b", parseList],
    ["(a,b)", parseList],
    ["a;B=1", parseItem],
    ["a b", parseItem],
    ['"café"', parseItem],
    ["", parseItem],
  ];
  for (const [text, parse] of bad) {
    assert.throws(() => parse(text), SyntaxError, JSON.stringify(text));
  }
});

Deno.test("structured fields: unpadded base64 is accepted, leading/trailing spaces are skipped", () => {
  const parsed = parseItem("  :aGVsbG8:  ");
  assert.deepEqual(parsed.value, {
    type: "bytes",
    value: new TextEncoder().encode("hello"),
  });
  assert.equal(serializeItem(parsed), ":aGVsbG8=:");
});

Deno.test("structured fields: duplicate keys overwrite by default and throw when rejected", () => {
  const dict = parseDictionary("a=1, b=2, a=3;x;x=?0");
  assert.equal(serializeDictionary(dict), "a=3;x=?0, b=2");
  assert.throws(
    () => parseDictionary("a=1, b=2, a=3", { rejectDuplicates: true }),
    /duplicated dictionary key 'a'/,
  );
  assert.throws(
    () => parseItem("a;x=1;x=2", { rejectDuplicates: true }),
    /duplicated parameter 'x'/,
  );
});

Deno.test("structured fields: values that cannot be serialized throw", () => {
  const item = (value: BareItem): Item => ({
    kind: "item",
    value,
    params: new Map(),
  });
  assert.throws(
    () => serializeItem(item({ type: "string", value: "line\nbreak" })),
    TypeError,
  );
  assert.throws(
    () => serializeItem(item({ type: "token", value: "1abc" })),
    TypeError,
  );
  assert.throws(
    () => serializeItem(item({ type: "integer", value: 1e15 })),
    TypeError,
  );
  assert.throws(
    () => serializeItem(item({ type: "integer", value: 1.5 })),
    TypeError,
  );
  assert.throws(
    () =>
      serializeItem({
        ...item({ type: "integer", value: 1 }),
        params: new Map([["Bad", { type: "boolean", value: true }]]),
      }),
    TypeError,
  );
});
