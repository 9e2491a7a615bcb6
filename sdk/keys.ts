/**
 * Agent keys: the Ed25519 identity an agent proves itself with, as
 * `plexus keygen` prints it (`{"id": did:key, "publicKey", "privateKey"}`),
 * made fresh, from a seed, or read back from a key file.
 *
 * @module
 */
import { b64u, ed25519FromSeed, fromB64u } from "./protocol/handshake.ts";
import { isAgentId } from "./protocol/channels.ts";
import { ed25519DidKey } from "../core/security/ed25519.ts";

/** An agent key as `plexus keygen` prints it. */
export interface AgentKey {
  /** `did:key:z6Mk…` of the public key. */
  id: string;
  /** The raw 32-byte Ed25519 public key, base64url. */
  publicKey: string;
  /** The 32-byte Ed25519 seed, base64url. Keep it secret. */
  privateKey: string;
}

/**
 * A fresh Ed25519 agent key, with its did:key id.
 *
 * @example Usage
 * ```ts
 * import { generateAgentKey } from "./keys.ts";
 * import assert from "node:assert/strict";
 * const key = await generateAgentKey();
 * assert.match(key.id, /^did:key:z6Mk/);
 * assert.equal(Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" }).length, 32);
 * ```
 */
export async function generateAgentKey(): Promise<AgentKey> {
  return await agentKeyFromSeed(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * The agent key of a 32-byte Ed25519 seed.
 *
 * @example Usage
 * ```ts
 * import { agentKeyFromSeed } from "./keys.ts";
 * import assert from "node:assert/strict";
 * const key = await agentKeyFromSeed(new Uint8Array(32).fill(0xa1));
 * assert.equal(key.id, "did:key:z6Mks931aemXLmTDGrasbApX8araucPWxRhzP8iqL7XHhXeC");
 * ```
 */
export async function agentKeyFromSeed(seed: Uint8Array): Promise<AgentKey> {
  if (seed.length !== 32) {
    throw new RangeError(
      `Cannot use agent key: the seed must be 32 bytes, got ${seed.length}`,
    );
  }
  const { publicRaw } = await ed25519FromSeed(seed);
  return {
    id: ed25519DidKey(publicRaw),
    publicKey: b64u(publicRaw),
    privateKey: b64u(seed),
  };
}

/**
 * Reads an agent key file: the JSON object `plexus keygen` prints, or just
 * the base64url seed. Checks that `publicKey` (and a did:key `id`) belong
 * to the seed. A non-did:key `id` is kept as the agent id.
 *
 * @example Usage
 * ```ts
 * import { generateAgentKey, parseAgentKey } from "./keys.ts";
 * import assert from "node:assert/strict";
 * const key = await generateAgentKey();
 * assert.deepEqual(await parseAgentKey(JSON.stringify(key)), key);
 * assert.deepEqual(await parseAgentKey(key.privateKey + "\n"), key);
 * await assert.rejects(parseAgentKey("{}"), /privateKey/);
 * ```
 */
export async function parseAgentKey(text: string): Promise<AgentKey> {
  const trimmed = text.trim();
  let seedText: unknown = trimmed;
  let given: Record<string, unknown> = {};
  if (trimmed.startsWith("{")) {
    try {
      given = JSON.parse(trimmed);
    } catch (err) {
      throw new TypeError(
        `Cannot parse agent key: not valid JSON (${(err as Error).message})`,
      );
    }
    if (given === null || typeof given !== "object" || Array.isArray(given)) {
      throw new TypeError("Cannot parse agent key: expected a JSON object");
    }
    seedText = given.privateKey;
  }
  let seed: Uint8Array;
  try {
    seed = fromB64u(seedText, 32, "privateKey");
  } catch {
    throw new TypeError(
      `Cannot parse agent key: privateKey must be base64url of 32 bytes${
        typeof seedText === "string" ? "" : ` (got ${typeof seedText})`
      }`,
    );
  }
  const key = await agentKeyFromSeed(seed);
  if (given.publicKey !== undefined && given.publicKey !== key.publicKey) {
    throw new TypeError(
      "Cannot parse agent key: publicKey does not belong to privateKey",
    );
  }
  if (given.id !== undefined) {
    if (typeof given.id !== "string" || !isAgentId(given.id)) {
      throw new TypeError(
        `Cannot parse agent key: id must be an agent id (letters, digits, ':', '_', '-'), got ${
          JSON.stringify(given.id)?.slice(0, 80)
        }`,
      );
    }
    if (given.id.startsWith("did:key:") && given.id !== key.id) {
      throw new TypeError(
        "Cannot parse agent key: the did:key id does not belong to privateKey",
      );
    }
    key.id = given.id;
  }
  return key;
}
