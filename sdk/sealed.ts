/**
 * Sealed payloads for agents (docs/security.md, "Agents as recipients"):
 * an agent can be a recipient of messages sealed on the node's broker
 * topics. The node that forwards them never opens them; the agent does,
 * here.
 *
 * - **Key.** The agent's X25519 key is derived from its Ed25519 seed with
 *   HKDF-SHA256 and the label {@linkcode AGENT_SEALING_KEY_INFO}, then
 *   RFC 9180's DeriveKeyPair: the SDK keeps no other secret, and the same
 *   seed gives the same key on every start. It is a separate key from the
 *   signing key (as for nodes): a break of one use does not carry over.
 * - **Statement.** {@linkcode subscribeSealed} signs the statement
 *   `plexus-sealing-key/v1` (directory id `agent:{id}`, X25519 key) with
 *   the agent's Ed25519 key and publishes it over its authenticated session
 *   (`agent.{id}.sealing-keys`); the node checks it against the enrolled key
 *   and writes the directory entry, which any node re-checks before sealing
 *   to it.
 * - **Opening.** Messages on the delivery channel (default `sealed`) carry
 *   the envelope exactly as it came off the broker. The SDK checks the
 *   sender's batch signature (its key read from the node's directory over
 *   the session, cached), the topic, the replay window and its own replay
 *   memory, unwraps with its X25519 key, and hands the handler the
 *   plaintext. A refusal is a {@linkcode SealedError} with the node's codes,
 *   given to `onRefused` and reported to the node (which logs and counts
 *   it); the message is acknowledged (dead for the agent), not redelivered.
 *
 * @module
 */
import type { AgentClient, AgentMessage, Subscription } from "./client.ts";
import { ed25519FromSeed } from "./protocol/handshake.ts";
import type { Envelope } from "../core/envelope.ts";
import { systemClock } from "../core/clock.ts";
import { deriveKeyPair, type HpkeKeyPair } from "../core/security/hpke.ts";
import { importEd25519PublicKey } from "../core/security/ed25519.ts";
import {
  ReplayMemory,
  SEALED_FROM_HEADER,
  SealedError,
  sealedOpener,
} from "../core/security/sealed_transport.ts";
import {
  type SealingPeer,
  signSealingKeyStatement,
} from "../core/security/sealing_keys.ts";
import { deleteOldest } from "../core/oldest.ts";

export { SealedError } from "../core/security/sealed_transport.ts";

/** The HKDF label an agent's X25519 key is derived from its seed with. */
export const AGENT_SEALING_KEY_INFO = "plexus-sealing-key/v1 x25519";
/** The agent channel sealing-key requests go on. */
export const SEALING_KEYS_CHANNEL = "sealing-keys";

const B64U = { alphabet: "base64url", omitPadding: true } as const;

/**
 * The agent's X25519 key pair for sealed payloads, derived from its 32-byte
 * Ed25519 seed (HKDF-SHA256, empty salt, info
 * {@linkcode AGENT_SEALING_KEY_INFO}, then DeriveKeyPair).
 *
 * @example Usage
 * ```ts
 * import { agentSealingKey } from "./sealed.ts";
 * import assert from "node:assert/strict";
 * const seed = new Uint8Array(32).fill(1);
 * const a = await agentSealingKey(seed);
 * const b = await agentSealingKey(seed);
 * assert.deepEqual(a.publicKey, b.publicKey);
 * ```
 */
export async function agentSealingKey(seed: Uint8Array): Promise<HpkeKeyPair> {
  if (seed.length !== 32) {
    throw new RangeError(
      `Cannot derive the sealing key: the seed must be 32 bytes, got ${seed.length}`,
    );
  }
  const ikm = await crypto.subtle.importKey(
    "raw",
    seed.slice(),
    "HKDF",
    false,
    [
      "deriveBits",
    ],
  );
  const bits = new Uint8Array(
    await crypto.subtle.deriveBits(
      {
        name: "HKDF",
        hash: "SHA-256",
        salt: new Uint8Array(),
        info: new TextEncoder().encode(AGENT_SEALING_KEY_INFO),
      },
      ikm,
      256,
    ),
  );
  const { secretKey: _secret, ...pair } = await deriveKeyPair(bits);
  return pair;
}

/** A sealed message opened by the agent. */
export interface SealedMessage {
  /** The envelope with its plaintext payload (and `plexus-sealed-from`). */
  envelope: Envelope;
  /** The payload, opened. */
  payload: unknown;
  /** The verified sender's directory id (`node:ID`). */
  from: string;
  /** The gateway message that carried it. */
  message: AgentMessage;
}

/** Options of {@linkcode subscribeSealed}. */
export interface SubscribeSealedOptions {
  /** The agent's 32-byte Ed25519 seed (signs the key statement; derives the X25519 key). */
  seed: Uint8Array;
  /** Receives each opened message; a throw has it redelivered. */
  handler: (message: SealedMessage) => void | Promise<void>;
  /** Refused messages (acknowledged, not redelivered). @default {console.warn} */
  onRefused?: (error: SealedError, message: AgentMessage) => void;
  /** Tell the node of each refusal (it logs and counts it). @default {true} */
  reportRefusals?: boolean;
  /** The backend channel name the node delivers on (`deliver.channel`). @default {"sealed"} */
  channel?: string;
  /** Oldest envelope `timestamp` accepted, ms before now. @default {300000} */
  replayWindowMs?: number;
  /** How far a timestamp may be ahead of this clock, ms. @default {30000} */
  clockSkewMs?: number;
  /** Message ids (per sender) remembered to refuse replays. @default {100000} */
  maxSeen?: number;
  /** Senders' keys are re-read from the node after this, ms. @default {60000} */
  keyCacheMs?: number;
  /** The clock the replay window is read against, epoch ms. @default {Date.now} */
  now?: () => number;
}

/** What {@linkcode subscribeSealed} returns. */
export interface SealedSubscription extends Subscription {
  /** The agent's directory id, `agent:{id}`. */
  id: string;
  /** The X25519 public key published for it. */
  x25519: Uint8Array;
}

/**
 * Publishes the agent's sealing key (signed statement) over its session
 * and subscribes to the sealed delivery channel, opening each message
 * before `handler`. Call it once the client is connected.
 *
 * @example Usage
 * ```ts ignore
 * import { subscribeSealed } from "./sealed.ts";
 * await agent.connect();
 * await subscribeSealed(agent, {
 *   seed,
 *   handler: ({ payload, from }) => console.log(from, payload),
 *   onRefused: (err) => console.warn(err.code, err.message),
 * });
 * ```
 */
export async function subscribeSealed(
  agent: AgentClient,
  options: SubscribeSealedOptions,
): Promise<SealedSubscription> {
  const now = options.now ?? Date.now;
  const x25519 = await agentSealingKey(options.seed);
  const { privateKey } = await ed25519FromSeed(options.seed);
  const sig = await signSealingKeyStatement(
    privateKey,
    agent.id,
    x25519.publicKey,
  );
  await agent.request(SEALING_KEYS_CHANNEL, {
    op: "publish",
    x25519: x25519.publicKey.toBase64(B64U),
    sig: sig.toBase64(B64U),
  });
  const keyCacheMs = options.keyCacheMs ?? 60_000;
  const peers = new Map<
    string,
    { at: number; peer: Promise<SealingPeer | undefined> }
  >();
  const directory = {
    lookup(id: string): Promise<SealingPeer | undefined> {
      const hit = peers.get(id);
      if (hit && now() - hit.at < keyCacheMs) return hit.peer;
      const peer = (async () => {
        const r = await agent.request(SEALING_KEYS_CHANNEL, {
          op: "lookup",
          id,
        }) as { id: string; x25519: string; ed25519: string };
        return {
          id,
          x25519: Uint8Array.fromBase64(r.x25519, { alphabet: "base64url" }),
          ed25519: await importEd25519PublicKey(
            Uint8Array.fromBase64(r.ed25519, { alphabet: "base64url" }),
          ),
        };
      })();
      if (peers.size >= 1024) deleteOldest(peers);
      peers.set(id, { at: now(), peer });
      peer.catch(() => peers.delete(id));
      return peer;
    },
  };
  const windowMs = options.replayWindowMs ?? 300_000;
  const id = `agent:${agent.id}`;
  const opener = sealedOpener({ id, x25519, directory }, {
    clock: { ...systemClock, now },
    replayWindowMs: windowMs,
    clockSkewMs: options.clockSkewMs,
  });
  const maxSeen = options.maxSeen ?? 100_000;
  const seen = new ReplayMemory(maxSeen);
  const onRefused = options.onRefused ??
    ((err: SealedError, m: AgentMessage) =>
      console.warn(
        `sealed message '${m.id}' on '${m.channel}' refused: ${err.code}: ${err.message}`,
      ));
  const sub = await agent.subscribe(
    options.channel ?? "sealed",
    async (message) => {
      let opened: Envelope;
      let from: string;
      try {
        const env = message.payload as Envelope;
        if (
          env === null || typeof env !== "object" || Array.isArray(env) ||
          typeof env.topic !== "string"
        ) {
          throw new SealedError(
            "malformed",
            "the message is not a sealed envelope",
          );
        }
        opened = await opener.open(env, env.topic);
        from = opened.headers[SEALED_FROM_HEADER];
        if (seen.has(from, opened.id)) {
          throw new SealedError(
            "replay",
            `message '${opened.id}' from '${from}' was already handled by this agent`,
          );
        }
      } catch (err) {
        if (!(err instanceof SealedError)) throw err;
        onRefused(err, message);
        if (options.reportRefusals !== false) {
          // Best effort, not awaited: the ack does not wait for it.
          agent.request(SEALING_KEYS_CHANNEL, {
            op: "refused",
            id: message.id,
            code: err.code,
            detail: err.message.slice(0, 500),
          }).catch(() => {});
        }
        return; // acknowledged: a refused message is dead, not retried
      }
      await options.handler({
        envelope: opened,
        payload: opened.payload,
        from,
        message,
      });
      seen.add(from, opened.id, opened.timestamp + windowMs, now());
    },
  );
  return { ...sub, id, x25519: x25519.publicKey };
}
