/**
 * The node's Ed25519 signing key, kept as a private JWK in
 * `DATA_DIR/node-key.jwk` (file mode 0600). It is created on first use and
 * reused afterwards; a key file that group or others may read is refused.
 * Its `kid` is the RFC 7638 JWK thumbprint (SHA-256) of the public key.
 *
 * @module
 */
import { join } from "node:path";
import { calculateJwkThumbprint } from "jose";

/** File name of the node key inside the data dir. */
export const NODE_KEY_FILE = "node-key.jwk";

/** The only JWS algorithm the node key signs and verifies with. */
export const NODE_KEY_ALG = "EdDSA";

/** Key files are a few hundred bytes; anything far larger is not one. */
const MAX_KEY_FILE_BYTES = 16 * 1024;
const B64URL_32_BYTES = /^[A-Za-z0-9_-]{43}$/;

/** The public half of the node key as a JWK, ready for a JWKS document. */
export interface NodePublicJwk {
  /** Key type: `"OKP"` (octet key pair). */
  kty: "OKP";
  /** Curve: `"Ed25519"`. */
  crv: "Ed25519";
  /** base64url public key. */
  x: string;
  /** RFC 7638 thumbprint of `{crv, kty, x}`. */
  kid: string;
  /** The algorithm the key is used with: {@linkcode NODE_KEY_ALG}. */
  alg: typeof NODE_KEY_ALG;
  /** Public key use: `"sig"` (signatures). */
  use: "sig";
}

/** A loaded node key. The private key is not extractable. */
export interface NodeKey {
  /** RFC 7638 JWK thumbprint (SHA-256, base64url) of the public key. */
  readonly kid: string;
  /** Pinned algorithm: tokens for this key are signed and checked with it only. */
  readonly alg: typeof NODE_KEY_ALG;
  /** The private key (Ed25519, not extractable). */
  readonly privateKey: CryptoKey;
  /** The public key. */
  readonly publicKey: CryptoKey;
  /** The public key as a JWK. */
  readonly publicJwk: Readonly<NodePublicJwk>;
  /** Where the key lives; `undefined` for an in-memory key. */
  readonly path?: string;
}

/** The key file is missing, unreadable, malformed or too open. */
export class NodeKeyError extends Error {
  override name = "NodeKeyError";
  /** The key file concerned. */
  readonly path: string;
  constructor(message: string, path: string, options?: ErrorOptions) {
    super(message, options);
    this.path = path;
  }
}

/** Options for {@linkcode loadOrCreateNodeKey}. */
export interface NodeKeyOptions {
  /** Key file name inside the data dir. @default {"node-key.jwk"} */
  fileName?: string;
}

/**
 * Loads the node key from `DATA_DIR/node-key.jwk`, creating the folder
 * (mode 0700 when new) and the key (mode 0600) when missing. Two processes
 * racing to create it end up with the same key: the file appears atomically
 * and only once. Throws {@linkcode NodeKeyError} when the file is not a
 * valid Ed25519 private JWK or group/others may access it.
 *
 * @example Usage
 * ```ts
 * import { loadOrCreateNodeKey } from "./node_key.ts";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const first = await loadOrCreateNodeKey(dir);
 * const again = await loadOrCreateNodeKey(dir);
 * assert.equal(again.kid, first.kid);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadOrCreateNodeKey(
  dataDir: string,
  options: NodeKeyOptions = {},
): Promise<NodeKey> {
  const path = join(dataDir, options.fileName ?? NODE_KEY_FILE);
  const existing = await readKeyFile(path);
  if (existing !== undefined) return nodeKeyFromJwk(existing, path);
  await createKeyFile(dataDir, path);
  const created = await readKeyFile(path);
  if (created === undefined) {
    throw new NodeKeyError(
      `Node key file '${path}' vanished right after it was created`,
      path,
    );
  }
  return nodeKeyFromJwk(created, path);
}

/**
 * Loads an existing node key file (never creates one). Throws
 * {@linkcode NodeKeyError} when it is missing, malformed or too open.
 *
 * @example Usage
 * ```ts
 * import { loadNodeKey, loadOrCreateNodeKey } from "./node_key.ts";
 * import assert from "node:assert/strict";
 * const dir = await Deno.makeTempDir();
 * const made = await loadOrCreateNodeKey(dir);
 * assert.equal((await loadNodeKey(made.path!)).kid, made.kid);
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadNodeKey(path: string): Promise<NodeKey> {
  const jwk = await readKeyFile(path);
  if (jwk === undefined) {
    throw new NodeKeyError(`Node key file '${path}' does not exist`, path);
  }
  return nodeKeyFromJwk(jwk, path);
}

/**
 * A fresh in-memory node key (nothing written): for tests and throwaway
 * nodes.
 *
 * @example Usage
 * ```ts
 * import { generateNodeKey } from "./node_key.ts";
 * import assert from "node:assert/strict";
 * const key = await generateNodeKey();
 * assert.equal(key.publicJwk.kid, key.kid);
 * assert.equal(key.path, undefined);
 * ```
 */
export async function generateNodeKey(): Promise<NodeKey> {
  return nodeKeyFromJwk(await newPrivateJwk(), undefined);
}

async function newPrivateJwk(): Promise<JsonWebKey> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const { kty, crv, d, x } = await crypto.subtle.exportKey(
    "jwk",
    pair.privateKey,
  );
  return { kty, crv, d, x };
}

/** The parsed key file, or `undefined` when there is none. */
async function readKeyFile(path: string): Promise<unknown> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new NodeKeyError(
      `Cannot open node key file '${path}': ${(err as Error).message}`,
      path,
      { cause: err },
    );
  }
  let text: string;
  try {
    // Check the opened file itself, so what is checked is what is read.
    const info = await file.stat();
    if (!info.isFile) {
      throw new NodeKeyError(
        `Node key file '${path}' is not a regular file`,
        path,
      );
    }
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
      throw new NodeKeyError(
        `Refusing node key file '${path}': mode ${mode} lets group or others access the private key; run 'chmod 600 ${path}' (or delete it to make a new key)`,
        path,
      );
    }
    if (info.size > MAX_KEY_FILE_BYTES) {
      throw new NodeKeyError(
        `Node key file '${path}' is ${info.size} bytes; a key file is under ${MAX_KEY_FILE_BYTES}`,
        path,
      );
    }
    text = await new Response(file.readable).text();
  } catch (err) {
    try {
      file.close();
    } catch {
      // file.readable already closed it.
    }
    if (err instanceof NodeKeyError) throw err;
    throw new NodeKeyError(
      `Cannot read node key file '${path}': ${(err as Error).message}`,
      path,
      { cause: err },
    );
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new NodeKeyError(
      `Node key file '${path}' is not valid JSON: ${(err as Error).message}`,
      path,
      { cause: err },
    );
  }
}

async function createKeyFile(dataDir: string, path: string): Promise<void> {
  const text = `${JSON.stringify(await newPrivateJwk())}\n`;
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  try {
    await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(tmp, text, { mode: 0o600, createNew: true });
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw new NodeKeyError(
      `Cannot create node key file '${path}': ${(err as Error).message}`,
      path,
      { cause: err },
    );
  }
  try {
    // A hard link appears whole and fails if the name exists, so a racing
    // process never sees half a file and never replaces another's key.
    await Deno.link(tmp, path);
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) {
      throw new NodeKeyError(
        `Cannot create node key file '${path}': ${(err as Error).message}`,
        path,
        { cause: err },
      );
    }
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

async function nodeKeyFromJwk(
  jwk: unknown,
  path: string | undefined,
): Promise<NodeKey> {
  const where = path === undefined ? "in-memory node key" : `'${path}'`;
  const bad = (what: string, cause?: unknown) =>
    new NodeKeyError(
      `Node key ${where} is not an Ed25519 private JWK: ${what}`,
      path ?? "",
      { cause },
    );
  if (jwk === null || typeof jwk !== "object" || Array.isArray(jwk)) {
    throw bad("expected a JSON object");
  }
  const { kty, crv, d, x } = jwk as Record<string, unknown>;
  if (kty !== "OKP") throw bad(`expected kty 'OKP', got '${String(kty)}'`);
  if (crv !== "Ed25519") {
    throw bad(`expected crv 'Ed25519', got '${String(crv)}'`);
  }
  if (typeof d !== "string" || !B64URL_32_BYTES.test(d)) {
    throw bad("'d' must be 32 bytes in base64url");
  }
  if (typeof x !== "string" || !B64URL_32_BYTES.test(x)) {
    throw bad("'x' must be 32 bytes in base64url");
  }
  let privateKey: CryptoKey;
  let publicKey: CryptoKey;
  try {
    privateKey = await crypto.subtle.importKey(
      "jwk",
      { kty, crv, d, x },
      { name: "Ed25519" },
      false,
      ["sign"],
    );
    publicKey = await crypto.subtle.importKey(
      "jwk",
      { kty, crv, x },
      { name: "Ed25519" },
      true,
      ["verify"],
    );
  } catch (err) {
    throw bad((err as Error).message, err);
  }
  // 'x' must be the public half of 'd', or every token would fail to verify.
  const probe = new TextEncoder().encode("plexus node key self-test");
  const sig = await crypto.subtle.sign("Ed25519", privateKey, probe);
  if (!await crypto.subtle.verify("Ed25519", publicKey, sig, probe)) {
    throw bad("'x' is not the public key of 'd'");
  }
  const kid = await calculateJwkThumbprint({ kty, crv, x }, "sha256");
  const publicJwk: NodePublicJwk = Object.freeze({
    kty,
    crv,
    x,
    kid,
    alg: NODE_KEY_ALG,
    use: "sig",
  });
  return Object.freeze({
    kid,
    alg: NODE_KEY_ALG,
    privateKey,
    publicKey,
    publicJwk,
    path,
  });
}
