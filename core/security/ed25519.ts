/**
 * Ed25519 public keys taken from outside (agent enrollment, config): parsed
 * from the usual text forms and checked before use.
 *
 * The check matters because verifiers, Deno's WebCrypto included, accept
 * keys of small order: with the identity point as public key, the signature
 * `01` followed by 63 zero bytes verifies for every message. So every key is
 * refused unless it is a canonical encoding of a point in the prime-order
 * subgroup.
 *
 * @example Usage
 * ```ts
 * import {
 *   importEd25519PublicKey,
 *   parseEd25519PublicKey,
 * } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * const bytes = parseEd25519PublicKey(
 *   "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw",
 * );
 * const key = await importEd25519PublicKey(bytes);
 * assert.deepEqual(key.algorithm, { name: "Ed25519" });
 * ```
 *
 * @module
 */
import { ed25519 } from "@noble/curves/ed25519.js";

/** Longest text accepted before decoding: every supported form of a key is shorter. */
const MAX_TEXT_CHARS = 200;
/** How much of a refused input an error message quotes. */
const MAX_ECHO_CHARS = 80;
const KEY_BYTES = 32;
const DID_KEY_PREFIX = "did:key:";
/** Multicodec `ed25519-pub` (0xed), as an unsigned varint. */
const ED25519_PUB_MULTICODEC = [0xed, 0x01] as const;
const BASE58_ALPHABET =
  "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const HEX_KEY = /^[0-9a-fA-F]{64}$/;
const BASE64URL_KEY = /^[A-Za-z0-9_-]{43}=?$/;
const BASE64_KEY = /^[A-Za-z0-9+/]{43}=?$/;

/**
 * A refused public key; message names what is wrong (never echo more than 80
 * chars of input).
 *
 * @example Usage
 * ```ts
 * import { KeyFormatError, parseEd25519PublicKey } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * assert.throws(() => parseEd25519PublicKey({ kty: "OKP", crv: "X25519" }), {
 *   name: "KeyFormatError",
 *   message: 'Ed25519 JWK must have crv "Ed25519", got "X25519"',
 * });
 * assert.ok(new KeyFormatError("bad key") instanceof Error);
 * ```
 */
export class KeyFormatError extends Error {
  override name = "KeyFormatError";
}

/**
 * Decodes an Ed25519 public key given as: 32 raw bytes (`Uint8Array`),
 * base64url or standard base64 text of 32 bytes (padding optional), 64 hex
 * chars, a did:key string (`did:key:z6Mk...`, multibase base58btc of
 * multicodec 0xed 0x01 + 32 bytes), or a JWK object
 * `{kty: "OKP", crv: "Ed25519", x}` (no `d` allowed). Returns a copy of the
 * 32 bytes after {@linkcode checkEd25519PublicKey}. Throws
 * {@linkcode KeyFormatError}.
 *
 * @example Usage
 * ```ts
 * import { KeyFormatError, parseEd25519PublicKey } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * const hex = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
 * const fromJwk = parseEd25519PublicKey({
 *   kty: "OKP",
 *   crv: "Ed25519",
 *   x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo",
 * });
 * assert.deepEqual(fromJwk, parseEd25519PublicKey(hex));
 * assert.throws(() => parseEd25519PublicKey("01" + "00".repeat(31)), KeyFormatError);
 * ```
 */
export function parseEd25519PublicKey(input: unknown): Uint8Array<ArrayBuffer> {
  let bytes: Uint8Array<ArrayBuffer>;
  if (input instanceof Uint8Array) {
    bytes = new Uint8Array(input);
  } else if (typeof input === "string") {
    bytes = decodeKeyText(input);
  } else if (typeof input === "object" && input !== null) {
    bytes = decodeJwk(input as Record<string, unknown>);
  } else {
    throw new KeyFormatError(
      `Cannot parse Ed25519 public key: expected a string, Uint8Array or JWK object, got ${
        input === null ? "null" : typeof input
      }`,
    );
  }
  checkEd25519PublicKey(bytes);
  return bytes;
}

/**
 * Throws {@linkcode KeyFormatError} unless `bytes` is 32 bytes, a canonical
 * encoding (y < p), decodes to a curve point, is not of small order (the
 * 8-torsion points, incl. non-canonical encodings) and is torsion-free
 * (prime-order subgroup).
 *
 * @example Usage
 * ```ts
 * import { checkEd25519PublicKey, KeyFormatError } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * checkEd25519PublicKey(Uint8Array.fromHex(
 *   "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
 * ));
 * const identity = new Uint8Array(32);
 * identity[0] = 1;
 * assert.throws(() => checkEd25519PublicKey(identity), KeyFormatError);
 * ```
 */
export function checkEd25519PublicKey(bytes: Uint8Array): void {
  checkKeyLength(bytes);
  const hex = bytes.toHex();
  let point: ReturnType<typeof ed25519.Point.fromBytes>;
  try {
    // zip215 false: RFC 8032 decoding, which refuses y >= p and x = 0 with the sign bit set.
    point = ed25519.Point.fromBytes(bytes, false);
  } catch (err) {
    throw new KeyFormatError(
      `Ed25519 public key ${hex} is not a canonical curve point: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
  if (point.isSmallOrder()) {
    throw new KeyFormatError(
      `Ed25519 public key ${hex} is a small-order point; it would verify forged signatures`,
    );
  }
  if (!point.isTorsionFree()) {
    throw new KeyFormatError(
      `Ed25519 public key ${hex} has a small-order component (not in the prime-order subgroup)`,
    );
  }
}

/**
 * did:key for a 32-byte Ed25519 public key.
 *
 * @example Usage
 * ```ts
 * import { ed25519DidKey } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * const key = Uint8Array.fromHex(
 *   "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
 * );
 * assert.equal(
 *   ed25519DidKey(key),
 *   "did:key:z6MktwupdmLXVVqTzCw4i46r4uGyosGXRnR3XjN4Zq7oMMsw",
 * );
 * ```
 */
export function ed25519DidKey(publicKey: Uint8Array): string {
  checkKeyLength(publicKey);
  const body = new Uint8Array(ED25519_PUB_MULTICODEC.length + KEY_BYTES);
  body.set(ED25519_PUB_MULTICODEC);
  body.set(publicKey, ED25519_PUB_MULTICODEC.length);
  return `${DID_KEY_PREFIX}z${base58Encode(body)}`;
}

/**
 * Imports 32 checked bytes as a WebCrypto Ed25519 verify key (extractable
 * true). Checks them again with {@linkcode checkEd25519PublicKey} first and
 * rejects with {@linkcode KeyFormatError}, since WebCrypto itself accepts
 * small-order keys.
 *
 * @example Usage
 * ```ts
 * import { importEd25519PublicKey } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * const key = await importEd25519PublicKey(Uint8Array.fromHex(
 *   "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
 * ));
 * assert.deepEqual(key.usages, ["verify"]);
 * assert.equal(key.extractable, true);
 * ```
 */
export async function importEd25519PublicKey(
  bytes: Uint8Array,
): Promise<CryptoKey> {
  checkEd25519PublicKey(bytes);
  return await crypto.subtle.importKey(
    "raw",
    new Uint8Array(bytes),
    { name: "Ed25519" },
    true,
    ["verify"],
  );
}

/**
 * base58btc encoding (Bitcoin alphabet); each leading zero byte becomes a
 * leading `1`.
 *
 * @example Usage
 * ```ts
 * import { base58Encode } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * assert.equal(base58Encode(new TextEncoder().encode("Hello World!")), "2NEpo7TZRRrLZSi2U");
 * assert.equal(base58Encode(Uint8Array.fromHex("0000287fb4cd")), "11233QC4");
 * ```
 */
export function base58Encode(bytes: Uint8Array): string {
  let zeros = 0;
  while (zeros < bytes.length && bytes[zeros] === 0) zeros++;
  // Base-58 digits, least significant first.
  const digits: number[] = [];
  for (let i = zeros; i < bytes.length; i++) {
    let carry = bytes[i];
    for (let j = 0; j < digits.length; j++) {
      carry += digits[j] << 8;
      digits[j] = carry % 58;
      carry = (carry / 58) | 0;
    }
    while (carry > 0) {
      digits.push(carry % 58);
      carry = (carry / 58) | 0;
    }
  }
  let text = "1".repeat(zeros);
  for (let i = digits.length - 1; i >= 0; i--) {
    text += BASE58_ALPHABET[digits[i]];
  }
  return text;
}

/**
 * base58btc decoding (Bitcoin alphabet); each leading `1` becomes a leading
 * zero byte. Throws {@linkcode KeyFormatError} on a character outside the
 * alphabet. Time grows with the square of the length: bound the input first.
 *
 * @example Usage
 * ```ts
 * import { base58Decode, KeyFormatError } from "./ed25519.ts";
 * import assert from "node:assert/strict";
 * assert.deepEqual(base58Decode("11233QC4"), Uint8Array.fromHex("0000287fb4cd"));
 * assert.throws(() => base58Decode("0OIl"), KeyFormatError);
 * ```
 */
export function base58Decode(text: string): Uint8Array<ArrayBuffer> {
  let zeros = 0;
  while (zeros < text.length && text[zeros] === "1") zeros++;
  // Bytes, least significant first.
  const bytes: number[] = [];
  for (let i = zeros; i < text.length; i++) {
    let carry = BASE58_ALPHABET.indexOf(text[i]);
    if (carry < 0) {
      throw new KeyFormatError(
        `Invalid base58 character ${JSON.stringify(text[i])} at position ${i}`,
      );
    }
    for (let j = 0; j < bytes.length; j++) {
      carry += bytes[j] * 58;
      bytes[j] = carry & 0xff;
      carry >>= 8;
    }
    while (carry > 0) {
      bytes.push(carry & 0xff);
      carry >>= 8;
    }
  }
  const out = new Uint8Array(zeros + bytes.length);
  for (let i = 0; i < bytes.length; i++) out[out.length - 1 - i] = bytes[i];
  return out;
}

function checkKeyLength(bytes: Uint8Array): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== KEY_BYTES) {
    const seen = bytes instanceof Uint8Array
      ? `${bytes.length} bytes`
      : echo(bytes);
    throw new KeyFormatError(
      `Ed25519 public key must be ${KEY_BYTES} bytes, got ${seen}`,
    );
  }
}

function decodeKeyText(text: string): Uint8Array<ArrayBuffer> {
  if (text.length > MAX_TEXT_CHARS) {
    throw new KeyFormatError(
      `Ed25519 public key text is ${text.length} chars; at most ${MAX_TEXT_CHARS} are accepted`,
    );
  }
  if (text.startsWith(DID_KEY_PREFIX)) return decodeDidKey(text);
  if (HEX_KEY.test(text)) return Uint8Array.fromHex(text);
  if (BASE64URL_KEY.test(text)) return decodeBase64(text, "base64url");
  if (BASE64_KEY.test(text)) return decodeBase64(text, "base64");
  throw new KeyFormatError(
    `Cannot parse Ed25519 public key ${
      echo(text)
    }: expected 64 hex chars, base64/base64url of 32 bytes, a did:key or a JWK`,
  );
}

function decodeBase64(
  text: string,
  alphabet: "base64" | "base64url",
): Uint8Array<ArrayBuffer> {
  try {
    // "strict" refuses non-zero leftover bits, so each key has one spelling.
    return Uint8Array.fromBase64(text.endsWith("=") ? text : `${text}=`, {
      alphabet,
      lastChunkHandling: "strict",
    });
  } catch (err) {
    throw new KeyFormatError(
      `Cannot parse Ed25519 public key ${echo(text)} as ${alphabet}: ${
        (err as Error).message
      }`,
      { cause: err },
    );
  }
}

function decodeDidKey(did: string): Uint8Array<ArrayBuffer> {
  const multibase = did.slice(DID_KEY_PREFIX.length);
  if (!multibase.startsWith("z")) {
    throw new KeyFormatError(
      `Cannot parse did:key ${
        echo(did)
      }: expected multibase base58btc (starting with 'z')`,
    );
  }
  let body: Uint8Array<ArrayBuffer>;
  try {
    body = base58Decode(multibase.slice(1));
  } catch (err) {
    throw new KeyFormatError(
      `Cannot parse did:key ${echo(did)}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  const [codec0, codec1] = ED25519_PUB_MULTICODEC;
  if (body[0] !== codec0 || body[1] !== codec1) {
    throw new KeyFormatError(
      `did:key ${echo(did)} is not an Ed25519 key: multicodec prefix is ${
        body.subarray(0, 2).toHex()
      }, expected ed01`,
    );
  }
  if (body.length !== ED25519_PUB_MULTICODEC.length + KEY_BYTES) {
    throw new KeyFormatError(
      `did:key ${echo(did)} holds ${
        body.length - ED25519_PUB_MULTICODEC.length
      } key bytes, expected ${KEY_BYTES}`,
    );
  }
  return body.slice(ED25519_PUB_MULTICODEC.length);
}

function decodeJwk(jwk: Record<string, unknown>): Uint8Array<ArrayBuffer> {
  if (Array.isArray(jwk)) {
    throw new KeyFormatError(
      "Cannot parse Ed25519 public key: expected a JWK object, got an array",
    );
  }
  if ("d" in jwk) {
    throw new KeyFormatError(
      "Refusing Ed25519 JWK: it holds a private key ('d'); send only the public key",
    );
  }
  if (jwk.kty !== "OKP") {
    throw new KeyFormatError(
      `Ed25519 JWK must have kty "OKP", got ${echo(jwk.kty)}`,
    );
  }
  if (jwk.crv !== "Ed25519") {
    throw new KeyFormatError(
      `Ed25519 JWK must have crv "Ed25519", got ${echo(jwk.crv)}`,
    );
  }
  // RFC 8037: x is base64url without padding.
  if (typeof jwk.x !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(jwk.x)) {
    throw new KeyFormatError(
      `Ed25519 JWK "x" must be 43 base64url chars (32 bytes), got ${
        echo(jwk.x)
      }`,
    );
  }
  return decodeBase64(jwk.x, "base64url");
}

/** A refused value for an error message: quoted, at most {@linkcode MAX_ECHO_CHARS} chars of it. */
function echo(value: unknown): string {
  if (typeof value !== "string") {
    return value === null ? "null" : typeof value;
  }
  return value.length > MAX_ECHO_CHARS
    ? `${JSON.stringify(value.slice(0, MAX_ECHO_CHARS))}…`
    : JSON.stringify(value);
}
