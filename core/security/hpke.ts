/**
 * HPKE (RFC 9180) for one suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
 * ChaCha20-Poly1305 (kem 0x0020, kdf 0x0001, aead 0x0003), base mode.
 * Checked against the RFC's Appendix A.2.1 vectors (`hpke_test.ts`,
 * `testdata/rfc9180_a2_1.json`).
 *
 * X25519 runs on WebCrypto (about 5× faster than `@noble/curves` here);
 * HMAC-SHA256 and ChaCha20-Poly1305 on `node:crypto`, which is synchronous
 * and the fastest path measured (`bench/crypto_paths.ts`). Auth and PSK
 * modes are left out: the sealing layer authenticates senders with Ed25519
 * signatures instead (docs/security.md).
 *
 * @module
 */
import { createCipheriv, createDecipheriv, createHmac } from "node:crypto";

/** Length of an X25519 key, a DHKEM shared secret and the AEAD key. */
const N = 32;
/** ChaCha20-Poly1305 nonce and tag lengths. */
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const MODE_BASE = 0;

const encoder = new TextEncoder();
const HPKE_V1 = encoder.encode("HPKE-v1");
const KEM_SUITE = concat(encoder.encode("KEM"), i2osp(0x0020, 2));
const HPKE_SUITE = concat(
  encoder.encode("HPKE"),
  i2osp(0x0020, 2),
  i2osp(0x0001, 2),
  i2osp(0x0003, 2),
);
// PKCS#8 wrapping of a raw X25519 private key (RFC 8410), for WebCrypto import.
const PKCS8_X25519_PREFIX = Uint8Array.fromHex(
  "302e020100300506032b656e04220420",
);
const EMPTY = new Uint8Array(0);

/** An HPKE operation failed: bad key, bad input, or a ciphertext that does not open. */
export class HpkeError extends Error {
  /** Always `"HpkeError"`. */
  override name = "HpkeError";
}

/** An X25519 key pair as HPKE uses it. */
export interface HpkeKeyPair {
  /** The private key (WebCrypto, usable for `deriveBits` only). */
  readonly privateKey: CryptoKey;
  /** The 32-byte public key (what `enc` and `pkR` carry). */
  readonly publicKey: Uint8Array;
}

/**
 * A fresh random X25519 key pair. `extractable` lets the private key be
 * exported (to store it); it is not by default.
 *
 * @example Usage
 * ```ts
 * import { generateKeyPair } from "./hpke.ts";
 * const pair = await generateKeyPair();
 * pair.publicKey.length; // 32
 * ```
 */
export async function generateKeyPair(
  options: { extractable?: boolean } = {},
): Promise<HpkeKeyPair> {
  const pair = await crypto.subtle.generateKey(
    { name: "X25519" },
    options.extractable ?? false,
    ["deriveBits"],
  ) as CryptoKeyPair;
  const publicKey = new Uint8Array(
    await crypto.subtle.exportKey("raw", pair.publicKey),
  );
  return { privateKey: pair.privateKey, publicKey };
}

/**
 * The key pair of a raw 32-byte X25519 private key.
 *
 * @example Usage
 * ```ts
 * import { importPrivateKey } from "./hpke.ts";
 * const pair = await importPrivateKey(new Uint8Array(32).fill(7));
 * pair.publicKey.length; // 32
 * ```
 */
export async function importPrivateKey(
  secretKey: Uint8Array,
  options: { extractable?: boolean } = {},
): Promise<HpkeKeyPair> {
  if (secretKey.length !== N) {
    throw new HpkeError(
      `an X25519 private key is ${N} bytes, got ${secretKey.length}`,
    );
  }
  const privateKey = await crypto.subtle.importKey(
    "pkcs8",
    concat(PKCS8_X25519_PREFIX, secretKey),
    { name: "X25519" },
    true,
    ["deriveBits"],
  );
  const jwk = await crypto.subtle.exportKey("jwk", privateKey);
  const publicKey = Uint8Array.fromBase64(jwk.x!, { alphabet: "base64url" });
  if (options.extractable) return { privateKey, publicKey };
  return {
    privateKey: await crypto.subtle.importKey(
      "pkcs8",
      concat(PKCS8_X25519_PREFIX, secretKey),
      { name: "X25519" },
      false,
      ["deriveBits"],
    ),
    publicKey,
  };
}

/**
 * RFC 9180 §7.1.3 DeriveKeyPair for X25519: the key pair determined by `ikm`
 * (at least 32 bytes of secret input). Returns the raw private key too.
 *
 * @example Usage
 * ```ts
 * import { deriveKeyPair } from "./hpke.ts";
 * const a = await deriveKeyPair(new Uint8Array(32));
 * const b = await deriveKeyPair(new Uint8Array(32));
 * a.secretKey.toHex() === b.secretKey.toHex(); // true
 * ```
 */
export async function deriveKeyPair(
  ikm: Uint8Array,
): Promise<HpkeKeyPair & { secretKey: Uint8Array }> {
  if (ikm.length < N) {
    throw new HpkeError(`DeriveKeyPair needs at least ${N} bytes of input`);
  }
  const dkpPrk = labeledExtract(KEM_SUITE, EMPTY, "dkp_prk", ikm);
  const secretKey = labeledExpand(KEM_SUITE, dkpPrk, "sk", EMPTY, N);
  return { ...await importPrivateKey(secretKey), secretKey };
}

/**
 * An HPKE encryption context (RFC 9180 §5.2): seals or opens messages in
 * sequence (the nonce is `base_nonce XOR seq`) and exports secrets.
 */
export class HpkeContext {
  #key: Uint8Array;
  #baseNonce: Uint8Array;
  #exporterSecret: Uint8Array;
  #seq = 0;

  /** Built by {@linkcode setupBaseS} and {@linkcode setupBaseR}. */
  constructor(key: Uint8Array, baseNonce: Uint8Array, exporter: Uint8Array) {
    this.#key = key;
    this.#baseNonce = baseNonce;
    this.#exporterSecret = exporter;
  }

  /**
   * Encrypts `plaintext` with the next sequence number.
   *
   * @example Usage
   * ```ts
   * import { generateKeyPair, setupBaseR, setupBaseS } from "./hpke.ts";
   * const r = await generateKeyPair();
   * const info = new TextEncoder().encode("demo");
   * const { enc, context } = await setupBaseS(r.publicKey, info);
   * const ct = context.seal(new Uint8Array([1, 2]), new Uint8Array());
   * (await setupBaseR(enc, r, info)).open(ct, new Uint8Array())[1]; // 2
   * ```
   */
  seal(plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
    const out = aeadSeal(this.#key, this.#nextNonce(), aad, plaintext);
    this.#seq++;
    return out;
  }

  /**
   * Decrypts `ciphertext` with the next sequence number; throws
   * {@linkcode HpkeError} when it does not authenticate (the sequence number
   * then stays where it was).
   *
   * @example Usage
   * ```ts ignore
   * const plaintext = context.open(ciphertext, aad);
   * ```
   */
  open(ciphertext: Uint8Array, aad: Uint8Array): Uint8Array {
    const out = aeadOpen(this.#key, this.#nextNonce(), aad, ciphertext);
    this.#seq++;
    return out;
  }

  /**
   * RFC 9180 §5.3 secret export: `length` bytes bound to `exporterContext`.
   *
   * @example Usage
   * ```ts ignore
   * const secret = context.export(new TextEncoder().encode("label"), 32);
   * ```
   */
  export(exporterContext: Uint8Array, length: number): Uint8Array {
    return labeledExpand(
      HPKE_SUITE,
      this.#exporterSecret,
      "sec",
      exporterContext,
      length,
    );
  }

  #nextNonce(): Uint8Array {
    if (this.#seq >= Number.MAX_SAFE_INTEGER) {
      throw new HpkeError("message limit of this HPKE context reached");
    }
    const nonce = this.#baseNonce.slice();
    let seq = this.#seq;
    for (let i = NONCE_BYTES - 1; i >= 0 && seq > 0; i--) {
      nonce[i] ^= seq % 256;
      seq = Math.floor(seq / 256);
    }
    return nonce;
  }
}

/** Options of {@linkcode setupBaseS} and {@linkcode seal}. */
export interface SenderOptions {
  /** The ephemeral key pair; only test vectors should set it. @default {a fresh random pair} */
  ephemeral?: HpkeKeyPair;
}

/**
 * RFC 9180 §5.1.1 SetupBaseS: encapsulates to `recipientPublicKey` and
 * returns `enc` (to send) and the sender's context.
 *
 * @example Usage
 * ```ts
 * import { generateKeyPair, setupBaseS } from "./hpke.ts";
 * const r = await generateKeyPair();
 * const { enc } = await setupBaseS(r.publicKey, new Uint8Array());
 * enc.length; // 32
 * ```
 */
export async function setupBaseS(
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  options: SenderOptions = {},
): Promise<{ enc: Uint8Array; context: HpkeContext }> {
  const pkR = await importPublicKey(recipientPublicKey);
  const eph = options.ephemeral ?? await generateKeyPair();
  const dh = await x25519(eph.privateKey, pkR);
  const enc = eph.publicKey;
  const shared = extractAndExpand(dh, concat(enc, recipientPublicKey));
  return { enc, context: keySchedule(shared, info) };
}

/**
 * RFC 9180 §5.1.1 SetupBaseR: the recipient's context for `enc`.
 *
 * @example Usage
 * ```ts ignore
 * const context = await setupBaseR(enc, recipientKeyPair, info);
 * ```
 */
export async function setupBaseR(
  enc: Uint8Array,
  recipient: HpkeKeyPair,
  info: Uint8Array,
): Promise<HpkeContext> {
  const pkE = await importPublicKey(enc);
  const dh = await x25519(recipient.privateKey, pkE);
  const shared = extractAndExpand(dh, concat(enc, recipient.publicKey));
  return keySchedule(shared, info);
}

/**
 * Single-shot base-mode encryption (RFC 9180 §6.1): `enc` and the
 * ciphertext of `plaintext` to `recipientPublicKey`.
 *
 * @example Usage
 * ```ts
 * import { generateKeyPair, open, seal } from "./hpke.ts";
 * const r = await generateKeyPair();
 * const info = new TextEncoder().encode("app v1");
 * const aad = new TextEncoder().encode("header");
 * const { enc, ct } = await seal(r.publicKey, info, aad, new TextEncoder().encode("hi"));
 * new TextDecoder().decode(await open(r, enc, info, aad, ct)); // "hi"
 * ```
 */
export async function seal(
  recipientPublicKey: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  options: SenderOptions = {},
): Promise<{ enc: Uint8Array; ct: Uint8Array }> {
  const { enc, context } = await setupBaseS(recipientPublicKey, info, options);
  return { enc, ct: context.seal(plaintext, aad) };
}

/**
 * Single-shot base-mode decryption (RFC 9180 §6.1); throws
 * {@linkcode HpkeError} when `ct` was not sealed to `recipient` with this
 * `enc`, `info` and `aad`.
 *
 * @example Usage
 * ```ts ignore
 * const plaintext = await open(recipientKeyPair, enc, info, aad, ct);
 * ```
 */
export async function open(
  recipient: HpkeKeyPair,
  enc: Uint8Array,
  info: Uint8Array,
  aad: Uint8Array,
  ct: Uint8Array,
): Promise<Uint8Array> {
  return (await setupBaseR(enc, recipient, info)).open(ct, aad);
}

/**
 * ChaCha20-Poly1305 (RFC 8439) encryption: ciphertext with the 16-byte tag
 * appended. `key` is 32 bytes, `nonce` 12; a nonce must never repeat under
 * one key.
 *
 * @example Usage
 * ```ts
 * import { aeadOpen, aeadSeal } from "./hpke.ts";
 * const key = crypto.getRandomValues(new Uint8Array(32));
 * const nonce = new Uint8Array(12);
 * const ct = aeadSeal(key, nonce, new Uint8Array(), new Uint8Array([5]));
 * aeadOpen(key, nonce, new Uint8Array(), ct)[0]; // 5
 * ```
 */
export function aeadSeal(
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
): Uint8Array {
  const cipher = createCipheriv("chacha20-poly1305", key, nonce, {
    authTagLength: TAG_BYTES,
  });
  cipher.setAAD(aad, { plaintextLength: plaintext.length });
  const a = cipher.update(plaintext);
  const b = cipher.final();
  return concat(a, b, cipher.getAuthTag());
}

/**
 * ChaCha20-Poly1305 decryption of what {@linkcode aeadSeal} made; throws
 * {@linkcode HpkeError} when the tag does not verify.
 *
 * @example Usage
 * ```ts ignore
 * const plaintext = aeadOpen(key, nonce, aad, ciphertextWithTag);
 * ```
 */
export function aeadOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  ciphertext: Uint8Array,
): Uint8Array {
  if (ciphertext.length < TAG_BYTES) {
    throw new HpkeError(
      `ciphertext is ${ciphertext.length} bytes, shorter than its tag`,
    );
  }
  const tagAt = ciphertext.length - TAG_BYTES;
  const decipher = createDecipheriv("chacha20-poly1305", key, nonce, {
    authTagLength: TAG_BYTES,
  });
  decipher.setAAD(aad, { plaintextLength: tagAt });
  decipher.setAuthTag(ciphertext.subarray(tagAt));
  try {
    return concat(
      decipher.update(ciphertext.subarray(0, tagAt)),
      decipher.final(),
    );
  } catch {
    throw new HpkeError("ciphertext does not authenticate");
  }
}

function keySchedule(shared: Uint8Array, info: Uint8Array): HpkeContext {
  const pskIdHash = labeledExtract(HPKE_SUITE, EMPTY, "psk_id_hash", EMPTY);
  const infoHash = labeledExtract(HPKE_SUITE, EMPTY, "info_hash", info);
  const context = concat(new Uint8Array([MODE_BASE]), pskIdHash, infoHash);
  const secret = labeledExtract(HPKE_SUITE, shared, "secret", EMPTY);
  return new HpkeContext(
    labeledExpand(HPKE_SUITE, secret, "key", context, N),
    labeledExpand(HPKE_SUITE, secret, "base_nonce", context, NONCE_BYTES),
    labeledExpand(HPKE_SUITE, secret, "exp", context, 32),
  );
}

function extractAndExpand(dh: Uint8Array, kemContext: Uint8Array): Uint8Array {
  const prk = labeledExtract(KEM_SUITE, EMPTY, "eae_prk", dh);
  return labeledExpand(KEM_SUITE, prk, "shared_secret", kemContext, N);
}

async function importPublicKey(raw: Uint8Array): Promise<CryptoKey> {
  if (raw.length !== N) {
    throw new HpkeError(
      `an X25519 public key is ${N} bytes, got ${raw.length}`,
    );
  }
  return await crypto.subtle.importKey(
    "raw",
    raw as Uint8Array<ArrayBuffer>,
    { name: "X25519" },
    true,
    [],
  );
}

async function x25519(
  privateKey: CryptoKey,
  publicKey: CryptoKey,
): Promise<Uint8Array> {
  let dh: Uint8Array;
  try {
    dh = new Uint8Array(
      await crypto.subtle.deriveBits(
        { name: "X25519", public: publicKey },
        privateKey,
        256,
      ),
    );
  } catch (err) {
    // WebCrypto refuses small-order points (an all-zero result).
    throw new HpkeError(`X25519 failed: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (dh.every((b) => b === 0)) {
    throw new HpkeError("X25519 gave the all-zero value (small-order key)");
  }
  return dh;
}

function labeledExtract(
  suite: Uint8Array,
  salt: Uint8Array,
  label: string,
  ikm: Uint8Array,
): Uint8Array {
  return hmac(
    salt.length ? salt : new Uint8Array(N),
    concat(HPKE_V1, suite, encoder.encode(label), ikm),
  );
}

function labeledExpand(
  suite: Uint8Array,
  prk: Uint8Array,
  label: string,
  info: Uint8Array,
  length: number,
): Uint8Array {
  if (length > 255 * N) throw new HpkeError(`cannot expand to ${length} bytes`);
  const labeled = concat(
    i2osp(length, 2),
    HPKE_V1,
    suite,
    encoder.encode(label),
    info,
  );
  const out = new Uint8Array(length);
  let t: Uint8Array = EMPTY;
  for (let i = 1, at = 0; at < length; i++) {
    t = hmac(prk, concat(t, labeled, new Uint8Array([i])));
    out.set(t.subarray(0, Math.min(N, length - at)), at);
    at += N;
  }
  return out;
}

/**
 * ChaCha20 (RFC 8439 §2.4) without Poly1305: `data` XORed with the key
 * stream of `key` and the 12-byte `nonce` from 64-byte block `counter` on.
 * Encrypts and decrypts alike. It authenticates nothing: sealed payloads use
 * it only under a signature over the ciphertext, checked first.
 *
 * @example Usage
 * ```ts
 * import { chacha20 } from "./hpke.ts";
 * const key = new Uint8Array(32);
 * const nonce = new Uint8Array(12);
 * const ct = chacha20(key, nonce, 1, new Uint8Array([1, 2, 3]));
 * chacha20(key, nonce, 1, ct); // Uint8Array [1, 2, 3]
 * ```
 */
export function chacha20(
  key: Uint8Array,
  nonce: Uint8Array,
  counter: number,
  data: Uint8Array,
): Uint8Array {
  if (nonce.length !== 12) {
    throw new HpkeError(`a ChaCha20 nonce is 12 bytes, not ${nonce.length}`);
  }
  // OpenSSL's IV: the 32-bit block counter (little-endian), then the nonce.
  const iv = new Uint8Array(16);
  iv[0] = counter & 0xff;
  iv[1] = (counter >>> 8) & 0xff;
  iv[2] = (counter >>> 16) & 0xff;
  iv[3] = counter >>> 24;
  iv.set(nonce, 4);
  const out = createCipheriv("chacha20", key, iv).update(data);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(data).digest());
}

function i2osp(n: number, width: number): Uint8Array {
  const out = new Uint8Array(width);
  for (let i = width - 1; i >= 0; i--, n = Math.floor(n / 256)) {
    out[i] = n % 256;
  }
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
