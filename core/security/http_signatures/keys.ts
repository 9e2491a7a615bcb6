/**
 * Signature keys: the algorithms Plexus accepts and the WebCrypto operations
 * with them (key checks, signing and verifying a base).
 *
 * @module
 */

/** Signature algorithms from the RFC 9421 registry that Plexus accepts. */
export type SignatureAlgorithm = "ed25519" | "hmac-sha256";

/**
 * A key with the id it is known by. For signing: an Ed25519 private key or
 * an HMAC-SHA256 secret; for verifying: an Ed25519 public key or the secret.
 */
export interface SignatureKey {
  /** The `keyid` signatures with this key carry. */
  keyid: string;
  /** Fixed per key by configuration, never taken from the message. */
  alg: SignatureAlgorithm;
  /** The key itself (private to sign, public or secret to verify). */
  key: CryptoKey;
  /** The key owner (e.g. a `did:key`), reported in verification results. */
  agentDid?: string;
}

const MIN_HMAC_KEY_BITS = 256;
const SIGNATURE_BYTES: Record<SignatureAlgorithm, number> = {
  "ed25519": 64,
  "hmac-sha256": 32,
};
const encoder = new TextEncoder();

export function checkKey(
  key: SignatureKey,
  use: "sign" | "verify",
): string | null {
  const algorithm = key.key.algorithm as KeyAlgorithm & {
    hash?: { name: string };
    length?: number;
  };
  if (!key.key.usages.includes(use)) {
    return `key '${key.keyid}' may not be used to ${use}`;
  }
  if (key.alg === "ed25519") {
    const wanted = use === "sign" ? "private" : "public";
    if (algorithm.name !== "Ed25519" || key.key.type !== wanted) {
      return `key '${key.keyid}' is not an Ed25519 ${wanted} key`;
    }
    return null;
  }
  if (key.alg === "hmac-sha256") {
    if (
      algorithm.name !== "HMAC" || algorithm.hash?.name !== "SHA-256" ||
      key.key.type !== "secret"
    ) return `key '${key.keyid}' is not an HMAC-SHA256 secret`;
    if ((algorithm.length ?? 0) < MIN_HMAC_KEY_BITS) {
      return `key '${key.keyid}' is shorter than ${MIN_HMAC_KEY_BITS} bits`;
    }
    return null;
  }
  return `key '${key.keyid}' has unsupported alg '${key.alg}'`;
}

function webCryptoName(alg: SignatureAlgorithm): string {
  return alg === "ed25519" ? "Ed25519" : "HMAC";
}

export async function signBase(
  key: SignatureKey,
  base: string,
): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.sign(
      webCryptoName(key.alg),
      key.key,
      encoder.encode(base),
    ),
  );
}

export async function verifyBase(
  key: SignatureKey,
  base: string,
  signature: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  if (signature.length !== SIGNATURE_BYTES[key.alg]) return false;
  return await crypto.subtle.verify(
    webCryptoName(key.alg),
    key.key,
    signature,
    encoder.encode(base),
  );
}

let dummyKey: Promise<CryptoKey> | undefined;

/** Spends about one verification's time, so an unknown keyid is not faster. */
export async function dummyVerify(base: string): Promise<void> {
  dummyKey ??= crypto.subtle.generateKey({ name: "Ed25519" }, false, [
    "sign",
    "verify",
  ]).then((pair) => (pair as CryptoKeyPair).publicKey);
  await crypto.subtle.verify(
    "Ed25519",
    await dummyKey,
    new Uint8Array(64),
    encoder.encode(base),
  );
}
