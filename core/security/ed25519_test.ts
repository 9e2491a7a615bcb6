import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import {
  base58Decode,
  base58Encode,
  checkEd25519PublicKey,
  ed25519DidKey,
  importEd25519PublicKey,
  KeyFormatError,
  parseEd25519PublicKey,
} from "./ed25519.ts";

/** RFC 8032 §7.1 TEST 1. */
const RFC_HEX =
  "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
const RFC_KEY = Uint8Array.fromHex(RFC_HEX);
const RFC_SIG_EMPTY_MESSAGE = Uint8Array.fromHex(
  "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
);
const RFC_DID = "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw";
const RFC_B64URL = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
const RFC_B64 = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo";

const ORDER_8 =
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05";
/** Canonical encodings of the 8 points of order dividing 8. */
const SMALL_ORDER = [
  "01" + "00".repeat(31), // identity
  "ec" + "ff".repeat(30) + "7f", // order 2: y = p - 1
  "00".repeat(32), // order 4
  "00".repeat(31) + "80", // order 4, other sign
  ORDER_8,
  "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
  "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
];
/** Non-canonical spellings of small-order points: y >= p, or x = 0 with the sign bit set. */
const NON_CANONICAL = [
  "ed" + "ff".repeat(30) + "7f", // y = p, i.e. y = 0
  "ee" + "ff".repeat(30) + "7f", // y = p + 1, i.e. the identity
  "ed" + "ff".repeat(31), // y = p with the sign bit
  "ee" + "ff".repeat(31), // y = p + 1 with the sign bit
  "01" + "00".repeat(30) + "80", // identity with the sign bit (x = 0)
  "ec" + "ff".repeat(31), // order 2 with the sign bit (x = 0)
];

function refuses(input: unknown, message?: RegExp): KeyFormatError {
  let caught: unknown;
  try {
    parseEd25519PublicKey(input);
  } catch (err) {
    caught = err;
  }
  assert.ok(
    caught instanceof KeyFormatError,
    `expected KeyFormatError for ${String(input)}, got ${caught}`,
  );
  assert.equal(caught.name, "KeyFormatError");
  if (message) assert.match(caught.message, message);
  return caught;
}

/** base58btc by BigInt division: a second, independent encoder to check the module's. */
function bigintBase58(bytes: Uint8Array): string {
  const alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  let n = bytes.length === 0 ? 0n : BigInt("0x" + bytes.toHex());
  let text = "";
  while (n > 0n) {
    text = alphabet[Number(n % 58n)] + text;
    n /= 58n;
  }
  const zeros = bytes.findIndex((b) => b !== 0);
  return "1".repeat(zeros === -1 ? bytes.length : zeros) + text;
}

Deno.test("ed25519: the RFC 8032 test 1 key is accepted in every supported form", () => {
  const forms: [string, unknown][] = [
    ["raw bytes", RFC_KEY],
    ["hex", RFC_HEX],
    ["upper-case hex", RFC_HEX.toUpperCase()],
    ["base64url", RFC_B64URL],
    ["padded base64url", RFC_B64URL + "="],
    ["base64", RFC_B64],
    ["padded base64", RFC_B64 + "="],
    ["did:key", RFC_DID],
    ["JWK", { kty: "OKP", crv: "Ed25519", x: RFC_B64URL }],
    ["JWK with kid and use", {
      kty: "OKP",
      crv: "Ed25519",
      x: RFC_B64URL,
      kid: "agent-1",
      use: "sig",
    }],
  ];
  for (const [form, input] of forms) {
    assert.deepEqual(parseEd25519PublicKey(input), RFC_KEY, form);
  }
});

Deno.test("ed25519: parsing raw bytes returns a copy, not the caller's buffer", () => {
  const input = new Uint8Array(RFC_KEY);
  const parsed = parseEd25519PublicKey(input);
  input[0] ^= 1;
  assert.deepEqual(parsed, RFC_KEY);
});

Deno.test("ed25519: the did:key of the RFC key is the known value, derived independently too, and round-trips", () => {
  assert.equal(ed25519DidKey(RFC_KEY), RFC_DID);
  const independent = "did:key:z" +
    bigintBase58(Uint8Array.from([0xed, 0x01, ...RFC_KEY]));
  assert.equal(independent, RFC_DID);
  assert.deepEqual(parseEd25519PublicKey(ed25519DidKey(RFC_KEY)), RFC_KEY);
  const other = ed25519.getPublicKey(new Uint8Array(32).fill(7));
  assert.deepEqual(parseEd25519PublicKey(ed25519DidKey(other)), other);
  assert.ok(ed25519DidKey(other).startsWith("did:key:z6Mk"));
});

Deno.test("ed25519: base58 matches the draft-msporny-base58 vectors and the BigInt encoder", () => {
  const text = new TextEncoder();
  const vectors: [Uint8Array, string][] = [
    [text.encode("Hello World!"), "2NEpo7TZRRrLZSi2U"],
    [
      text.encode("The quick brown fox jumps over the lazy dog."),
      "USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z",
    ],
    [Uint8Array.fromHex("0000287fb4cd"), "11233QC4"],
    [new Uint8Array(0), ""],
    [new Uint8Array(3), "111"],
  ];
  for (const [bytes, encoded] of vectors) {
    assert.equal(base58Encode(bytes), encoded);
    assert.equal(bigintBase58(bytes), encoded);
    assert.deepEqual(base58Decode(encoded), bytes);
  }
  for (let length = 0; length < 40; length++) {
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    bytes.fill(0, 0, length % 4);
    assert.equal(base58Encode(bytes), bigintBase58(bytes));
    assert.deepEqual(base58Decode(base58Encode(bytes)), bytes);
  }
});

Deno.test("ed25519: base58Decode refuses characters outside the Bitcoin alphabet", () => {
  for (const bad of ["0", "O", "I", "l", "2NEpo7TZRRrLZSi2U0", " ", "+"]) {
    assert.throws(() => base58Decode(bad), KeyFormatError, bad);
  }
});

Deno.test("ed25519: all 8 small-order points are refused in their canonical encodings", () => {
  const distinct = new Set<string>();
  for (const hex of SMALL_ORDER) {
    const point = ed25519.Point.fromHex(hex, false);
    assert.ok(point.isSmallOrder(), `test data: ${hex} is of small order`);
    distinct.add(point.toHex());
    refuses(Uint8Array.fromHex(hex), /small-order point/);
    refuses(hex, /small-order point/);
  }
  assert.equal(distinct.size, 8, "test data: the 8 torsion points");
});

Deno.test("ed25519: non-canonical encodings (y >= p, x = 0 with sign bit) are refused", () => {
  for (const hex of NON_CANONICAL) {
    // zip215 decoding accepts them, which is what makes them dangerous.
    assert.ok(ed25519.Point.fromHex(hex, true).isSmallOrder(), hex);
    refuses(Uint8Array.fromHex(hex), /not a canonical curve point/);
  }
});

Deno.test("ed25519: a mixed-order point (valid key + order-8 point) is refused", () => {
  const mixed = ed25519.Point.fromBytes(RFC_KEY)
    .add(ed25519.Point.fromHex(ORDER_8))
    .toBytes();
  const point = ed25519.Point.fromBytes(mixed, false);
  assert.ok(!point.isSmallOrder(), "test data: not small order itself");
  refuses(mixed, /prime-order subgroup/);
  refuses(ed25519DidKey(mixed), /prime-order subgroup/);
});

Deno.test("ed25519: a y with no curve point is refused", () => {
  // y = 2 has no x on edwards25519.
  refuses("02" + "00".repeat(31), /not a canonical curve point/);
});

Deno.test("ed25519: wrong lengths are refused", () => {
  refuses(new Uint8Array(31).fill(1), /32 bytes, got 31 bytes/);
  refuses(new Uint8Array(33).fill(1), /32 bytes, got 33 bytes/);
  refuses(new Uint8Array(0), /got 0 bytes/);
  refuses(RFC_HEX.slice(2));
  refuses(RFC_HEX + "00");
  refuses(RFC_KEY.subarray(1).toBase64());
  refuses(Uint8Array.from([...RFC_KEY, 0]).toBase64());
  assert.throws(
    () => checkEd25519PublicKey(RFC_KEY.subarray(1)),
    KeyFormatError,
  );
  assert.throws(() => ed25519DidKey(new Uint8Array(33)), KeyFormatError);
});

Deno.test("ed25519: bad base64 is refused", () => {
  refuses(RFC_B64URL.slice(0, -1) + "p", /base64url/); // non-zero leftover bits
  refuses(RFC_B64.slice(0, -1) + "p", /base64/);
  refuses(RFC_B64URL.replace("1", "+")); // mixes both alphabets
  refuses(RFC_B64URL.slice(0, -1) + "*");
  refuses(RFC_B64URL + "==");
  refuses(` ${RFC_B64URL}`);
});

Deno.test("ed25519: bad did:key strings are refused", () => {
  refuses(RFC_DID.replace("6", "0"), /Invalid base58 character "0"/);
  const x25519 = "did:key:z" +
    base58Encode(Uint8Array.from([0xec, 0x01, ...RFC_KEY]));
  refuses(x25519, /not an Ed25519 key: multicodec prefix is ec01/);
  refuses(
    "did:key:z" + base58Encode(Uint8Array.from([0xed, 0x01, ...RFC_KEY, 0])),
    /holds 33 key bytes/,
  );
  refuses("did:key:" + "u" + RFC_B64URL, /base58btc/);
  refuses(RFC_DID + "#" + RFC_DID.slice(8), /Invalid base58 character "#"/);
  refuses("did:key:z");
});

Deno.test("ed25519: JWKs with a private key, another curve or type, or a bad x are refused", () => {
  const jwk = { kty: "OKP", crv: "Ed25519", x: RFC_B64URL };
  refuses({ ...jwk, d: "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU" }, /'d'/);
  refuses({ ...jwk, crv: "X25519" }, /crv "Ed25519", got "X25519"/);
  refuses({ ...jwk, kty: "EC" }, /kty "OKP"/);
  refuses({ kty: "OKP", crv: "Ed25519" }, /"x"/);
  refuses({ ...jwk, x: RFC_B64URL + "=" }, /"x"/);
  refuses({ ...jwk, x: RFC_B64 }, /"x"/);
  refuses({ ...jwk, x: RFC_KEY }, /"x"/);
  refuses({ ...jwk, x: "AQ" + "A".repeat(41) }, /small-order point/);
  refuses([RFC_B64URL], /array/);
});

Deno.test("ed25519: long text is refused before decoding and messages quote at most 80 chars", () => {
  const long = "did:key:z" + "2".repeat(10_000);
  const err = refuses(long, /10009 chars; at most 200/);
  assert.ok(!err.message.includes("2".repeat(81)));
  const garbage = "x".repeat(150);
  const err2 = refuses(garbage);
  assert.ok(err2.message.includes("x".repeat(80)));
  assert.ok(!err2.message.includes("x".repeat(81)));
  const err3 = refuses({ kty: "OKP", crv: "y".repeat(150), x: RFC_B64URL });
  assert.ok(!err3.message.includes("y".repeat(81)));
});

Deno.test("ed25519: inputs of other types are refused", () => {
  for (const input of [undefined, null, 42, true, 1n]) {
    refuses(input, /expected a string, Uint8Array or JWK object/);
  }
  assert.throws(
    () => checkEd25519PublicKey("x".repeat(32) as unknown as Uint8Array),
    KeyFormatError,
  );
});

Deno.test("ed25519: importEd25519PublicKey gives a verify key that checks the RFC 8032 signature", async () => {
  const key = await importEd25519PublicKey(RFC_KEY);
  assert.equal(key.type, "public");
  assert.equal(key.extractable, true);
  assert.deepEqual(key.usages, ["verify"]);
  assert.ok(
    await crypto.subtle.verify(
      "Ed25519",
      key,
      RFC_SIG_EMPTY_MESSAGE,
      new Uint8Array(0),
    ),
  );
  assert.deepEqual(
    new Uint8Array(await crypto.subtle.exportKey("raw", key)),
    RFC_KEY,
  );
  await assert.rejects(
    importEd25519PublicKey(Uint8Array.fromHex(SMALL_ORDER[0])),
    KeyFormatError,
  );
});

Deno.test("ed25519: why keys are checked: WebCrypto accepts a forged signature under the identity key", async () => {
  const identity = Uint8Array.fromHex(SMALL_ORDER[0]);
  const forged = new Uint8Array(64);
  forged[0] = 1; // R = identity, S = 0
  const key = await crypto.subtle.importKey(
    "raw",
    identity,
    "Ed25519",
    false,
    ["verify"],
  );
  const message = new TextEncoder().encode("transfer everything to mallory");
  assert.equal(
    await crypto.subtle.verify("Ed25519", key, forged, message),
    true,
    "Deno WebCrypto no longer accepts the identity-key forgery: the check is " +
      "still right, but update this test and the module doc",
  );
  assert.throws(
    () => checkEd25519PublicKey(identity),
    KeyFormatError,
  );
});
