/**
 * Keys for sealed payloads (docs/security.md, "Sealed payloads"):
 *
 * - the node's **X25519 key**, separate from its Ed25519 signing key, kept
 *   as a private JWK in `DATA_DIR/node-x25519.jwk` (mode 0600), created on
 *   first use. A separate key rather than the Ed25519 key converted to
 *   Montgomery form: the signing key is not extractable (the node only holds
 *   a `CryptoKey`), and one key used for both signing and key agreement
 *   would tie a break of one use to the other.
 * - the **sealing directory** in Deno KV under `["sealing", "keys", id]`:
 *   for each recipient id (`node:ID`), its X25519 public key (what senders
 *   encrypt to) and its Ed25519 public key (what receivers check its
 *   signatures with). Each node publishes its own entry at start. As for the
 *   keyring, the trust root is the shared KV itself.
 * - **agents' entries** (`agent:ID`): an agent's X25519 key, published by
 *   the node it is connected to, with the agent's Ed25519 signature over the
 *   statement {@linkcode SEALING_KEY_STATEMENT} (its directory id and X25519
 *   key). The entry's Ed25519 key must be the agent's **enrolled** key
 *   (`["gateway", "agents", ID]`) and the signature must verify with it, or
 *   the lookup is refused with {@linkcode SealingKeyError}: a writer of the
 *   directory alone cannot bind another X25519 key to an enrolled agent.
 *
 * @module
 */
import { join } from "node:path";
import type { Clock } from "../clock.ts";
import { systemClock } from "../clock.ts";
import { gatewayAgentKey, sealingKeyKey } from "../state/keys.ts";
import { generateKeyPair, type HpkeKeyPair, importPrivateKey } from "./hpke.ts";
import { importEd25519PublicKey } from "./ed25519.ts";
import type { NodeKey } from "./node_key.ts";
import type { SealingKeys } from "./sealed_transport.ts";
import { deleteOldest } from "../oldest.ts";

/** File name of the node's X25519 key inside the data dir. */
export const SEALING_KEY_FILE = "node-x25519.jwk";

const B64URL_32_BYTES = /^[A-Za-z0-9_-]{43}$/;
const MAX_KEY_FILE_BYTES = 16 * 1024;

/**
 * The context string of an agent's sealing key statement: what the agent's
 * Ed25519 key signs to bind its X25519 key to its id.
 */
export const SEALING_KEY_STATEMENT = "plexus-sealing-key/v1";

const statementEncoder = new TextEncoder();
const B64U = { alphabet: "base64url", omitPadding: true } as const;

/**
 * The bytes an agent signs to publish its X25519 key: the context
 * {@linkcode SEALING_KEY_STATEMENT}, a zero byte, and the JSON array of its
 * directory id (`agent:ID`) and its X25519 public key (base64url).
 *
 * @example Usage
 * ```ts
 * import { sealingKeyStatement } from "./sealing_keys.ts";
 * const bytes = sealingKeyStatement("agent-1", new Uint8Array(32));
 * new TextDecoder().decode(bytes).startsWith("plexus-sealing-key/v1\0"); // true
 * ```
 */
export function sealingKeyStatement(
  agentId: string,
  x25519: Uint8Array,
): Uint8Array<ArrayBuffer> {
  return statementEncoder.encode(
    `${SEALING_KEY_STATEMENT}\0${
      JSON.stringify([`agent:${agentId}`, x25519.toBase64(B64U)])
    }`,
  );
}

/**
 * Signs an agent's sealing key statement with its Ed25519 key (a
 * `CryptoKey` with usage `sign`).
 *
 * @example Usage
 * ```ts
 * import { signSealingKeyStatement, verifySealingKeyStatement } from "./sealing_keys.ts";
 * const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]) as CryptoKeyPair;
 * const x = new Uint8Array(32).fill(7);
 * const sig = await signSealingKeyStatement(ed.privateKey, "agent-1", x);
 * await verifySealingKeyStatement(ed.publicKey, "agent-1", x, sig); // true
 * await verifySealingKeyStatement(ed.publicKey, "agent-2", x, sig); // false
 * ```
 */
export async function signSealingKeyStatement(
  signingKey: CryptoKey,
  agentId: string,
  x25519: Uint8Array,
): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.sign(
      "Ed25519",
      signingKey,
      sealingKeyStatement(agentId, x25519),
    ),
  );
}

/**
 * Whether `sig` is `ed25519`'s signature over the agent's sealing key
 * statement for `x25519`.
 *
 * @example Usage
 * ```ts ignore
 * if (!await verifySealingKeyStatement(enrolled, "agent-1", x, sig)) throw …;
 * ```
 */
export async function verifySealingKeyStatement(
  ed25519: CryptoKey,
  agentId: string,
  x25519: Uint8Array,
  sig: Uint8Array,
): Promise<boolean> {
  if (sig.length !== 64 || x25519.length !== 32) return false;
  return await crypto.subtle.verify(
    "Ed25519",
    ed25519,
    sig.slice(),
    sealingKeyStatement(agentId, x25519),
  );
}

/** The key file is malformed, unreadable or readable by group/others. */
export class SealingKeyError extends Error {
  /** Always `"SealingKeyError"`. */
  override name = "SealingKeyError";
}

/**
 * Loads the node's X25519 key from `DATA_DIR/node-x25519.jwk`, creating it
 * (mode 0600) when missing. Throws {@linkcode SealingKeyError} when the file
 * is not an X25519 private JWK or group/others may access it.
 *
 * @example Usage
 * ```ts
 * import { loadOrCreateSealingKey } from "./sealing_keys.ts";
 * const dir = await Deno.makeTempDir();
 * const a = await loadOrCreateSealingKey(dir);
 * const b = await loadOrCreateSealingKey(dir);
 * a.publicKey.toHex() === b.publicKey.toHex(); // true
 * await Deno.remove(dir, { recursive: true });
 * ```
 */
export async function loadOrCreateSealingKey(
  dataDir: string,
): Promise<HpkeKeyPair> {
  const path = join(dataDir, SEALING_KEY_FILE);
  let text = await readKeyFile(path);
  if (text === undefined) {
    await createKeyFile(dataDir, path);
    text = await readKeyFile(path);
    if (text === undefined) {
      throw new SealingKeyError(`Sealing key file '${path}' vanished`);
    }
  }
  let jwk: Record<string, unknown>;
  try {
    jwk = JSON.parse(text);
  } catch (err) {
    throw new SealingKeyError(
      `Sealing key file '${path}' is not valid JSON: ${(err as Error).message}`,
    );
  }
  if (
    jwk?.kty !== "OKP" || jwk.crv !== "X25519" ||
    typeof jwk.d !== "string" || !B64URL_32_BYTES.test(jwk.d) ||
    typeof jwk.x !== "string"
  ) {
    throw new SealingKeyError(
      `Sealing key file '${path}' is not an X25519 private JWK (kty OKP, crv X25519, 32-byte d and x)`,
    );
  }
  const pair = await importPrivateKey(
    Uint8Array.fromBase64(jwk.d, { alphabet: "base64url" }),
  );
  if (
    pair.publicKey.toBase64({ alphabet: "base64url", omitPadding: true }) !==
      jwk.x
  ) {
    throw new SealingKeyError(
      `Sealing key file '${path}': 'x' is not the public key of 'd'`,
    );
  }
  return pair;
}

async function readKeyFile(path: string): Promise<string | undefined> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return undefined;
    throw new SealingKeyError(
      `Cannot read sealing key file '${path}': ${(err as Error).message}`,
    );
  }
  if (!info.isFile || info.size > MAX_KEY_FILE_BYTES) {
    throw new SealingKeyError(`Sealing key file '${path}' is not a key file`);
  }
  if (info.mode !== null && (info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    throw new SealingKeyError(
      `Refusing sealing key file '${path}': mode ${mode} lets group or others read the private key; run 'chmod 600 ${path}'`,
    );
  }
  return await Deno.readTextFile(path);
}

async function createKeyFile(dataDir: string, path: string): Promise<void> {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, [
    "deriveBits",
  ]) as CryptoKeyPair;
  const { kty, crv, d, x } = await crypto.subtle.exportKey(
    "jwk",
    pair.privateKey,
  );
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.mkdir(dataDir, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(tmp, `${JSON.stringify({ kty, crv, d, x })}\n`, {
    mode: 0o600,
    createNew: true,
  });
  try {
    // A hard link appears whole and never replaces a racing process's key.
    await Deno.link(tmp, path);
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
  } finally {
    await Deno.remove(tmp).catch(() => {});
  }
}

/** A recipient's (or sender's) public keys, as the directory returns them. */
export interface SealingPeer {
  /** Directory id, e.g. `node:n1`. */
  id: string;
  /** X25519 public key (32 bytes): what senders encrypt to. */
  x25519: Uint8Array;
  /** Ed25519 public key: what this peer's signatures are checked with. */
  ed25519: CryptoKey;
}

/** Where sealing looks up peers' public keys. */
export interface SealingDirectory {
  /** The peer's keys, or undefined when it published none. */
  lookup(id: string): Promise<SealingPeer | undefined>;
}

/** The KV-backed {@linkcode SealingDirectory}, which can also publish. */
export interface KvSealingDirectory extends SealingDirectory {
  /** Publishes (or replaces) `id`'s public keys (raw 32-byte keys). */
  publish(id: string, x25519: Uint8Array, ed25519: Uint8Array): Promise<void>;
  /**
   * Publishes (or replaces) agent `agentId`'s X25519 key, with its signature
   * over {@linkcode sealingKeyStatement}; the entry's Ed25519 key is the
   * agent's enrolled key. Throws {@linkcode SealingKeyError} when the agent
   * is not enrolled or the signature does not verify with its enrolled key.
   */
  publishAgent(
    agentId: string,
    x25519: Uint8Array,
    sig: Uint8Array,
  ): Promise<void>;
}

interface StoredPeer {
  id: string;
  x25519: string;
  ed25519: string;
  /** Agents' entries: the agent's signature over its key statement. */
  sig?: string;
  updatedAt: number;
}

/** The agent's enrolled Ed25519 public key (raw), or undefined. */
async function enrolledAgentKey(
  kv: Deno.Kv,
  agentId: string,
): Promise<Uint8Array<ArrayBuffer> | undefined> {
  const entry = await kv.get<{ publicKey?: unknown }>(gatewayAgentKey(agentId));
  const key = entry.value?.publicKey;
  if (typeof key !== "string") return undefined;
  try {
    const raw = Uint8Array.fromBase64(key, { alphabet: "base64url" });
    return raw.length === 32 ? raw : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The sealing directory in `kv`; lookups are reused for `cacheMs`
 * (default 5 s), so a replaced key is picked up elsewhere within that time.
 *
 * @example Usage
 * ```ts
 * import { kvSealingDirectory } from "./sealing_keys.ts";
 * import { generateKeyPair } from "./hpke.ts";
 * const kv = await Deno.openKv(":memory:");
 * const dir = kvSealingDirectory(kv);
 * const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]) as CryptoKeyPair;
 * const edRaw = new Uint8Array(await crypto.subtle.exportKey("raw", ed.publicKey));
 * await dir.publish("node:n1", (await generateKeyPair()).publicKey, edRaw);
 * (await dir.lookup("node:n1"))?.x25519.length; // 32
 * kv.close();
 * ```
 */
export function kvSealingDirectory(
  kv: Deno.Kv,
  options: { cacheMs?: number; clock?: Clock } = {},
): KvSealingDirectory {
  const cacheMs = options.cacheMs ?? 5000;
  const clock = options.clock ?? systemClock;
  const cache = new Map<
    string,
    { at: number; peer: Promise<SealingPeer | undefined> }
  >();
  const MAX_CACHED = 10_000;

  async function load(id: string): Promise<SealingPeer | undefined> {
    const entry = await kv.get<StoredPeer>(sealingKeyKey(id));
    const v = entry.value;
    if (
      !v || !B64URL_32_BYTES.test(v.x25519) || !B64URL_32_BYTES.test(v.ed25519)
    ) {
      return undefined;
    }
    const b64 = { alphabet: "base64url" } as const;
    const x25519 = Uint8Array.fromBase64(v.x25519, b64);
    const ed25519 = await importEd25519PublicKey(
      Uint8Array.fromBase64(v.ed25519, b64),
    );
    if (id.startsWith("agent:")) {
      await checkAgentEntry(id.slice(6), v, x25519, ed25519);
    }
    return { id, x25519, ed25519 };
  }

  // An agent's entry holds only if its Ed25519 key is the enrolled one and
  // signs the statement binding the X25519 key to the agent's id.
  async function checkAgentEntry(
    agentId: string,
    v: StoredPeer,
    x25519: Uint8Array,
    ed25519: CryptoKey,
  ): Promise<void> {
    const enrolled = await enrolledAgentKey(kv, agentId);
    if (!enrolled) {
      throw new SealingKeyError(
        `Refusing the sealing key of 'agent:${agentId}': the agent is not enrolled`,
      );
    }
    if (enrolled.toBase64(B64U) !== v.ed25519) {
      throw new SealingKeyError(
        `Refusing the sealing key of 'agent:${agentId}': its Ed25519 key is not the agent's enrolled key`,
      );
    }
    let sig: Uint8Array;
    try {
      sig = Uint8Array.fromBase64(v.sig ?? "", { alphabet: "base64url" });
    } catch {
      sig = new Uint8Array();
    }
    if (!await verifySealingKeyStatement(ed25519, agentId, x25519, sig)) {
      throw new SealingKeyError(
        `Refusing the sealing key of 'agent:${agentId}': its key statement is not signed by the agent's enrolled key`,
      );
    }
  }

  return {
    lookup(id) {
      const now = clock.mono();
      const hit = cache.get(id);
      if (hit && now - hit.at < cacheMs) return hit.peer;
      const peer = load(id);
      if (cache.size >= MAX_CACHED) deleteOldest(cache);
      cache.set(id, { at: now, peer });
      peer.catch(() => cache.delete(id));
      return peer;
    },
    async publish(id, x25519, ed25519) {
      const b64 = { alphabet: "base64url", omitPadding: true } as const;
      const record: StoredPeer = {
        id,
        x25519: x25519.toBase64(b64),
        ed25519: ed25519.toBase64(b64),
        updatedAt: clock.now(),
      };
      await kv.set(sealingKeyKey(id), record);
      cache.delete(id);
    },
    async publishAgent(agentId, x25519, sig) {
      const enrolled = await enrolledAgentKey(kv, agentId);
      if (!enrolled) {
        throw new SealingKeyError(
          `Cannot publish a sealing key for 'agent:${agentId}': the agent is not enrolled`,
        );
      }
      if (
        x25519.length !== 32 ||
        !await verifySealingKeyStatement(
          await importEd25519PublicKey(enrolled),
          agentId,
          x25519,
          sig,
        )
      ) {
        throw new SealingKeyError(
          `Cannot publish a sealing key for 'agent:${agentId}': the statement is not signed by the agent's enrolled key (or the key is not 32 bytes)`,
        );
      }
      const id = `agent:${agentId}`;
      const record: StoredPeer = {
        id,
        x25519: x25519.toBase64(B64U),
        ed25519: enrolled.toBase64(B64U),
        sig: sig.toBase64(B64U),
        updatedAt: clock.now(),
      };
      await kv.set(sealingKeyKey(id), record);
      cache.delete(id);
    },
  };
}

/**
 * This node's sealing identity (`node:ID`): loads or creates its X25519 key
 * in `dataDir`, publishes its X25519 and Ed25519 public keys in the KV
 * directory, and returns what `sealedTransport` needs.
 *
 * @example Usage
 * ```ts
 * import { nodeSealingKeys } from "./sealing_keys.ts";
 * import { generateNodeKey } from "./node_key.ts";
 * const kv = await Deno.openKv(":memory:");
 * const dataDir = await Deno.makeTempDir();
 * const keys = await nodeSealingKeys({ kv, nodeKey: await generateNodeKey(), nodeId: "n1", dataDir });
 * keys.id; // "node:n1"
 * (await keys.directory.lookup("node:n1"))?.x25519.length; // 32
 * kv.close();
 * await Deno.remove(dataDir, { recursive: true });
 * ```
 */
export async function nodeSealingKeys(options: {
  kv: Deno.Kv;
  nodeKey: NodeKey;
  nodeId: string;
  dataDir: string;
}): Promise<SealingKeys> {
  const x25519 = await loadOrCreateSealingKey(options.dataDir);
  const directory = kvSealingDirectory(options.kv);
  const id = `node:${options.nodeId}`;
  await directory.publish(
    id,
    x25519.publicKey,
    Uint8Array.fromBase64(options.nodeKey.publicJwk.x, {
      alphabet: "base64url",
    }),
  );
  return { id, signingKey: options.nodeKey.privateKey, x25519, directory };
}

/**
 * Fresh sealing keys for `id`, held in memory only (a new Ed25519 signing
 * key and X25519 key pair), with both public keys published in `directory`:
 * for tests, benches and short-lived senders. A node uses
 * {@linkcode nodeSealingKeys}, whose keys outlive a restart.
 *
 * @example Usage
 * ```ts
 * import { freshSealingKeys, kvSealingDirectory } from "./sealing_keys.ts";
 * const kv = await Deno.openKv(":memory:");
 * const keys = await freshSealingKeys("node:a", kvSealingDirectory(kv));
 * (await keys.directory.lookup("node:a"))?.x25519.length; // 32
 * kv.close();
 * ```
 */
export async function freshSealingKeys(
  id: string,
  directory: KvSealingDirectory,
): Promise<SealingKeys> {
  const ed = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const x25519 = await generateKeyPair();
  await directory.publish(
    id,
    x25519.publicKey,
    new Uint8Array(await crypto.subtle.exportKey("raw", ed.publicKey)),
  );
  return { id, signingKey: ed.privateKey, x25519, directory };
}
