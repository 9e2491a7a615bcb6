/**
 * The cluster's trusted keys, kept in Deno KV under `["keys", keyid]`:
 *
 * - **node keys**: every node publishes the public half of its signing key
 *   when it starts. Tokens issued by any node (`plexus token`) verify on
 *   every node, and calls between nodes are signed with them (RFC 9421).
 * - **service keys**: enrolled by an admin (`POST /api/v1/keys`), an Ed25519
 *   public key or an HMAC-SHA256 secret, each bound to a subject and a role.
 *   A request signed with one acts as that subject with that role.
 *
 * A `keyid` in a token or a signature is only ever looked up here (or in the
 * node's own key): never fetched, never used as a path. The trust root is the
 * shared KV itself: whoever can write it can already rewrite every queue,
 * lease and session, so it is protected like a credential (a denokv access
 * token, file permissions). HMAC secrets are stored as given, since
 * verifying needs them; prefer Ed25519 keys, which keep only public halves
 * in KV.
 *
 * Lookups are cached for `cacheMs` (default 5 s), so a removed key stops
 * working on other nodes within that time; on the node that removed it, at
 * once.
 *
 * @module
 */
import { z } from "zod";
import type { Clock } from "../clock.ts";
import { systemClock } from "../clock.ts";
import { trustedKeyKey } from "../state/keys.ts";
import { describeIssues } from "../plugin.ts";
import {
  ed25519DidKey,
  importEd25519PublicKey,
  KeyFormatError,
  parseEd25519PublicKey,
} from "./ed25519.ts";
import type { NodeKey } from "./node_key.ts";
import { type Role, ROLES } from "./roles.ts";
import type {
  SignatureAlgorithm,
  SignatureKey,
} from "./http_signatures/mod.ts";
import { deleteOldest } from "../oldest.ts";

/** A key id: printable ASCII without spaces, quotes or backslashes (an RFC 8941 string), 1-256 characters. */
export const KEYID_RE = /^[\x21\x23-\x5b\x5d-\x7e]{1,256}$/;
const SUBJECT_RE = /^[\x20-\x7e]{1,256}$/;
const MIN_SECRET_BYTES = 32;
const MAX_SECRET_BYTES = 128;

/** A trusted key as stored. `secret` never leaves the keyring's API except once, at enrolment. */
export interface TrustedKey {
  /** The key's id: the `keyid` of its signatures. */
  keyid: string;
  /** The algorithm the key is used with (never taken from a message). */
  alg: SignatureAlgorithm;
  /** `node`: a node's own key (also trusted for JWTs); `service`: enrolled. */
  kind: "node" | "service";
  /** Who a request signed with this key acts as. */
  sub: string;
  /** The role that subject has. */
  role: Role;
  /** Ed25519: the 32-byte public key, base64url. */
  publicKey?: string;
  /** Ed25519: the key as a `did:key`. */
  agentDid?: string;
  /** HMAC: the secret, base64url. */
  secret?: string;
  /** Wall ms. */
  createdAt: number;
  /** The principal that enrolled it. */
  createdBy: string;
}

/** A trusted key without its secret, as listed by the API. */
export type PublicTrustedKey = Omit<TrustedKey, "secret">;

/** A refused enrolment: `status` is the HTTP status to answer with. */
export class KeyringError extends Error {
  override name = "KeyringError";
  constructor(message: string, readonly status: 400 | 404 | 409) {
    super(message);
  }
}

/** What an admin sends to enrol a key (the `POST /api/v1/keys` body). */
export const enrolmentSchema = z.strictObject({
  /** Defaults to the key's did:key (Ed25519) or a random id (HMAC). */
  keyid: z.string().regex(
    KEYID_RE,
    "1-256 printable characters without spaces, quotes or backslashes",
  ).optional(),
  alg: z.enum(["ed25519", "hmac-sha256"]),
  /** Ed25519 public key: base64url/base64/hex of 32 bytes, a did:key, or a JWK. */
  publicKey: z.union([
    z.string().max(200),
    z.strictObject({
      kty: z.string().max(8),
      crv: z.string().max(16),
      x: z.string().max(64),
      kid: z.string().max(256).optional(),
      alg: z.string().max(16).optional(),
      use: z.string().max(8).optional(),
    }),
  ]).optional(),
  /** HMAC secret, base64url, 32-128 bytes; generated (and returned once) when absent. */
  secret: z.string().max(200).optional(),
  sub: z.string().regex(SUBJECT_RE, "1-256 printable ASCII characters"),
  role: z.enum(ROLES),
});

/** A validated enrolment request. */
export type Enrolment = z.output<typeof enrolmentSchema>;

/** Options for {@linkcode createKeyring}. */
export interface KeyringOptions {
  /** How long a lookup is reused. @default {5000} */
  cacheMs?: number;
  /** How long "no such key" is reused. @default {1000} */
  missCacheMs?: number;
  clock?: Clock;
}

/** The trusted keys. */
export interface Keyring {
  /**
   * Enrols a service key. Throws {@linkcode KeyringError} (400 bad key or
   * input, 409 keyid taken). Returns the stored key without its secret, and
   * the secret when it was generated here (the only time it is shown).
   */
  enrol(
    input: unknown,
    by: string,
  ): Promise<{ key: PublicTrustedKey; secret?: string }>;
  /** Publishes (or refreshes) a node's public key, trusted for tokens and node-to-node calls. */
  publishNode(key: NodeKey, nodeId: string): Promise<void>;
  /** Removes a key; false when there was none. */
  remove(keyid: string): Promise<boolean>;
  /** Every key, without secrets, by keyid. */
  list(limit?: number): Promise<PublicTrustedKey[]>;
  /** The key with this id (cached), or undefined. Safe on any string. */
  get(keyid: string): Promise<TrustedKey | undefined>;
  /** The RFC 9421 verification key for `keyid`, or null: the `ResolveKey` of the verifier. */
  signatureKey(keyid: string): Promise<SignatureKey | null>;
  /** The public key of a node's signing key `kid`, for JWT verification; undefined for other keys. */
  nodeJwtKey(kid: string): Promise<CryptoKey | undefined>;
}

interface CacheEntry {
  at: number;
  key?: TrustedKey;
  crypto?: Promise<CryptoKey>;
}

/**
 * The keyring over `kv`.
 *
 * @example Usage
 * ```ts
 * import { createKeyring } from "./keyring.ts";
 * import assert from "node:assert/strict";
 * const kv = await Deno.openKv(":memory:");
 * const keys = createKeyring(kv);
 * const { key, secret } = await keys.enrol(
 *   { alg: "hmac-sha256", keyid: "billing", sub: "billing-svc", role: "operator" },
 *   "admin",
 * );
 * assert.equal(key.role, "operator");
 * assert.ok(secret && secret.length >= 43); // shown once
 * assert.equal((await keys.signatureKey("billing"))?.alg, "hmac-sha256");
 * assert.equal(await keys.signatureKey("nobody"), null);
 * kv.close();
 * ```
 */
export function createKeyring(
  kv: Deno.Kv,
  options: KeyringOptions = {},
): Keyring {
  const clock = options.clock ?? systemClock;
  const cacheMs = options.cacheMs ?? 5000;
  const missCacheMs = options.missCacheMs ?? 1000;
  // A Map: attacker-chosen ids such as "__proto__" find nothing.
  const cache = new Map<string, CacheEntry>();
  const MAX_CACHED = 10_000;

  async function load(keyid: string): Promise<CacheEntry> {
    const now = clock.mono();
    const hit = cache.get(keyid);
    if (hit && now - hit.at < (hit.key ? cacheMs : missCacheMs)) return hit;
    if (!KEYID_RE.test(keyid)) return { at: now };
    const entry = await kv.get<TrustedKey>(trustedKeyKey(keyid));
    const fresh: CacheEntry = { at: now, key: entry.value ?? undefined };
    // Keep the imported CryptoKey while the record is unchanged.
    if (
      hit?.key && fresh.key && hit.crypto &&
      hit.key.publicKey === fresh.key.publicKey &&
      hit.key.secret === fresh.key.secret && hit.key.alg === fresh.key.alg
    ) fresh.crypto = hit.crypto;
    if (cache.size >= MAX_CACHED) deleteOldest(cache);
    cache.set(keyid, fresh);
    return fresh;
  }

  function cryptoKey(entry: CacheEntry): Promise<CryptoKey> {
    const key = entry.key!;
    entry.crypto ??= key.alg === "ed25519"
      ? importEd25519PublicKey(b64urlDecode(key.publicKey!))
      : crypto.subtle.importKey(
        "raw",
        b64urlDecode(key.secret!),
        { name: "HMAC", hash: "SHA-256" },
        false,
        ["verify", "sign"],
      );
    return entry.crypto;
  }

  async function enrol(
    input: unknown,
    by: string,
  ): Promise<{ key: PublicTrustedKey; secret?: string }> {
    const parsed = enrolmentSchema.safeParse(input);
    if (!parsed.success) {
      throw new KeyringError(describeIssues(parsed.error, input), 400);
    }
    const e = parsed.data;
    const record: TrustedKey = {
      keyid: "",
      alg: e.alg,
      kind: "service",
      sub: e.sub,
      role: e.role,
      createdAt: clock.now(),
      createdBy: by,
    };
    let generated: string | undefined;
    if (e.alg === "ed25519") {
      if (e.publicKey === undefined || e.secret !== undefined) {
        throw new KeyringError(
          "an ed25519 key needs 'publicKey' (and no 'secret')",
          400,
        );
      }
      let bytes: Uint8Array;
      try {
        bytes = parseEd25519PublicKey(e.publicKey);
      } catch (err) {
        if (err instanceof KeyFormatError) {
          throw new KeyringError(`publicKey: ${err.message}`, 400);
        }
        throw err;
      }
      record.publicKey = b64urlEncode(bytes);
      record.agentDid = ed25519DidKey(bytes);
      record.keyid = e.keyid ?? record.agentDid;
    } else {
      if (e.publicKey !== undefined) {
        throw new KeyringError(
          "an hmac-sha256 key takes 'secret', not 'publicKey'",
          400,
        );
      }
      let secret: Uint8Array;
      if (e.secret === undefined) {
        secret = crypto.getRandomValues(new Uint8Array(32));
        generated = b64urlEncode(secret);
      } else {
        const decoded = tryB64urlDecode(e.secret);
        if (
          !decoded || decoded.length < MIN_SECRET_BYTES ||
          decoded.length > MAX_SECRET_BYTES
        ) {
          throw new KeyringError(
            `secret must be base64url of ${MIN_SECRET_BYTES}-${MAX_SECRET_BYTES} bytes`,
            400,
          );
        }
        secret = decoded;
      }
      record.secret = b64urlEncode(secret);
      record.keyid = e.keyid ?? `hmac-${crypto.randomUUID()}`;
    }
    const k = trustedKeyKey(record.keyid);
    const res = await kv.atomic()
      .check({ key: k, versionstamp: null })
      .set(k, record)
      .commit();
    if (!res.ok) {
      throw new KeyringError(
        `keyid '${record.keyid}' is already enrolled`,
        409,
      );
    }
    cache.delete(record.keyid);
    return { key: withoutSecret(record), secret: generated };
  }

  async function publishNode(key: NodeKey, nodeId: string): Promise<void> {
    const record: TrustedKey = {
      keyid: key.kid,
      alg: "ed25519",
      kind: "node",
      sub: `node:${nodeId}`,
      role: "admin",
      publicKey: key.publicJwk.x,
      agentDid: ed25519DidKey(b64urlDecode(key.publicJwk.x)),
      createdAt: clock.now(),
      createdBy: `node:${nodeId}`,
    };
    await kv.set(trustedKeyKey(key.kid), record);
    cache.delete(key.kid);
  }

  async function remove(keyid: string): Promise<boolean> {
    if (!KEYID_RE.test(keyid)) return false;
    const k = trustedKeyKey(keyid);
    const existing = await kv.get(k);
    if (existing.versionstamp === null) return false;
    await kv.delete(k);
    cache.delete(keyid);
    return true;
  }

  async function list(limit = 1000): Promise<PublicTrustedKey[]> {
    const out: PublicTrustedKey[] = [];
    for await (
      const e of kv.list<TrustedKey>({ prefix: trustedKeyKey() }, { limit })
    ) out.push(withoutSecret(e.value));
    return out;
  }

  async function get(keyid: string): Promise<TrustedKey | undefined> {
    if (typeof keyid !== "string") return undefined;
    return (await load(keyid)).key;
  }

  async function signatureKey(keyid: string): Promise<SignatureKey | null> {
    if (typeof keyid !== "string") return null;
    const entry = await load(keyid);
    if (!entry.key) return null;
    const sk: SignatureKey = {
      keyid,
      alg: entry.key.alg,
      key: await cryptoKey(entry),
    };
    if (entry.key.agentDid) sk.agentDid = entry.key.agentDid;
    return sk;
  }

  async function nodeJwtKey(kid: string): Promise<CryptoKey | undefined> {
    if (typeof kid !== "string") return undefined;
    const entry = await load(kid);
    if (entry.key?.kind !== "node" || entry.key.alg !== "ed25519") {
      return undefined;
    }
    return await cryptoKey(entry);
  }

  return Object.freeze({
    enrol,
    publishNode,
    remove,
    list,
    get,
    signatureKey,
    nodeJwtKey,
  });
}

function withoutSecret(key: TrustedKey): PublicTrustedKey {
  const { secret: _secret, ...rest } = key;
  return rest;
}

function b64urlEncode(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

function b64urlDecode(text: string): Uint8Array<ArrayBuffer> {
  const bytes = tryB64urlDecode(text);
  if (!bytes) throw new TypeError("stored key is not base64url");
  return bytes;
}

function tryB64urlDecode(text: string): Uint8Array<ArrayBuffer> | undefined {
  try {
    return Uint8Array.fromBase64(text, { alphabet: "base64url" });
  } catch {
    return undefined;
  }
}
