/**
 * The agent side of the node's prompt service (plugins/prompts): an agent
 * that answers prompts for a capability (`prompt`, `prompt.hotel`, `plan`,
 * …) handles backend channel `tasks.{capability}`, gets one hop of a prompt
 * (`{requestId, hop, prompt, scenario, metadata, sage, payload}`), may ask
 * other agents by capability through the node ({@linkcode PromptHopContext.ask})
 * and stream pieces of its answer ({@linkcode PromptHopContext.stream}), is
 * told when the node cancels the prompt (`signal`; the node sends
 * `{cancel: requestId}` on the same channel), and answers `{response, signature?}`: in SAGE mode the answer is signed
 * with the agent's key over (requestId, hop, digest of the answer)
 * (see `sage.ts`).
 *
 * @example A root agent that asks a planning agent
 * ```ts ignore
 * await servePrompts(agent, "prompt", async (hop) => {
 *   const plan = await hop.ask("plan", { prompt: hop.prompt });
 *   return `Plan: ${plan}`;
 * }, { key: seed });
 * ```
 *
 * @module
 */
import type { AgentClient, Subscription } from "./client.ts";
import { AgentError } from "./errors.ts";
import { Buffer } from "node:buffer";
import { createPrivateKey, hash, type KeyObject, sign } from "node:crypto";
import { ed25519FromSeed } from "./protocol/handshake.ts";
import {
  hopBatch,
  hopBatchBytes,
  type HopFields,
  SAGE_BATCH_MAX,
  SAGE_CONTEXT,
  signHop,
} from "./sage.ts";

/** One hop of a prompt, as the node sends it on `tasks.{capability}`. */
export interface PromptHop {
  /** The prompt request's id. */
  requestId: string;
  /** 0 for the root agent; the node numbers every further hop. */
  hop: number;
  /** The prompt text (for a hop asked by another agent: what that agent sent as `prompt`, else the original prompt). */
  prompt: string;
  /** The scenario, when the client gave one. */
  scenario?: string;
  /** The client's metadata (`userId`, `sessionId`, …). */
  metadata?: Record<string, unknown>;
  /** Whether this hop's answer must be signed. */
  sage: boolean;
  /** What the asking agent sent (hops > 0). */
  payload?: unknown;
  /** The asking agent (hops > 0). */
  from?: string;
}

/** What a prompt handler gets: the hop, and ways to ask other agents and to stream. */
export interface PromptHopContext extends PromptHop {
  /**
   * Asks an agent offering `capability` through the node, as the next hop
   * of this prompt; resolves with its answer text.
   */
  ask(capability: string, payload: unknown): Promise<string>;
  /**
   * Sends a piece of the answer as it is produced (a `msg` on
   * `agent.{id}.requests.stream`): a client reading the answer as
   * Server-Sent Events sees it at once. The handler still returns the whole
   * answer, which is what is signed. Resolves once the node has it.
   */
  stream(delta: string): Promise<void>;
  /** Aborted when the node cancels this prompt (its client went away, or its deadline passed). */
  signal: AbortSignal;
}

/** Answers one hop: the answer text. */
export type PromptHandler = (hop: PromptHopContext) => string | Promise<string>;

/** Options of {@linkcode servePrompts}. */
export interface ServePromptsOptions {
  /** The key SAGE answers are signed with: the agent's own (its 32-byte seed or private CryptoKey). */
  key: Uint8Array | CryptoKey;
  /**
   * SAGE answers waiting to be signed from which a seed's signature is made
   * with WebCrypto (on Deno's blocking pool) rather than `node:crypto`'s
   * synchronous sign on the event loop: {@linkcode SIGN_ASYNC_AT} by
   * default; 1 always WebCrypto, `Infinity` never (docs/prompts.md, "SAGE
   * crypto that adapts to load").
   */
  signAsyncAt?: number;
  /**
   * Whether answers finished together (the hops of one sealed batch) share
   * one signature over the Merkle root of their leaves, each answer carrying
   * its `proof` (`plexus-sage/v2`, sdk/sage.ts): one Ed25519 sign for the
   * batch instead of one per answer, and one verify on the node. A single
   * answer is signed alone (`plexus-sage/v1`) either way. Nodes before
   * 2026-12-07 refuse batch proofs: set `false` for them.
   * @default {true}
   */
  batch?: boolean;
}

/**
 * The default {@linkcode ServePromptsOptions.signAsyncAt}: answers finished
 * together (hops of one sealed batch) or while signatures run on the pool
 * are signed there once this many wait.
 */
export const SIGN_ASYNC_AT = 4;

/** What the node gets back for one hop. */
export interface PromptAnswer {
  /** The hop's answer text (what is signed). */
  response: string;
  /** base64url Ed25519 signature (SAGE mode only). */
  signature?: string;
  /** Where the answer sits in the batch `signature` covers, when it was signed in one (sdk/sage.ts `encodeHopProof`). */
  proof?: string;
}

/** A node's cancellation of a prompt, sent on the same channel as its hops. */
interface CancelHop {
  cancel: string;
}

function isCancel(payload: unknown): payload is CancelHop {
  return typeof (payload as CancelHop | null)?.cancel === "string";
}

function parseHop(payload: unknown): PromptHop {
  const p = payload as Partial<PromptHop> | null;
  if (
    !p || typeof p !== "object" || typeof p.requestId !== "string" ||
    !Number.isSafeInteger(p.hop) || typeof p.prompt !== "string"
  ) {
    throw new AgentError(
      "bad_request",
      "not a prompt hop: want {requestId, hop, prompt, sage}",
    );
  }
  return { ...p, sage: p.sage === true } as PromptHop;
}

/**
 * Answers prompt hops for `capability` on `agent` (handles
 * `tasks.{capability}`; the agent needs a role that may subscribe to
 * `tasks.*`, `worker` by default). Resolves once the node confirmed the
 * subscription.
 *
 * @example Usage
 * ```ts ignore
 * await servePrompts(agent, "plan", (hop) => `3 steps for: ${hop.prompt}`, { key: seed });
 * ```
 */
export function servePrompts(
  agent: AgentClient,
  capability: string,
  handler: PromptHandler,
  options: ServePromptsOptions,
): Promise<Subscription> {
  /** Running hops by request id, so a cancellation reaches them. */
  const running = new Map<string, Set<AbortController>>();
  let signer:
    | ((fields: HopFields) => Promise<{ signature: string; proof?: string }>)
    | undefined;
  return agent.handle(`tasks.${capability}`, async (m) => {
    if (isCancel(m.payload)) {
      const hops = running.get(m.payload.cancel);
      for (const c of hops ?? []) c.abort(new Error("cancelled by the node"));
      return { cancelled: hops?.size ?? 0 };
    }
    const hop = parseHop(m.payload);
    const controller = new AbortController();
    let hops = running.get(hop.requestId);
    if (!hops) running.set(hop.requestId, hops = new Set());
    hops.add(controller);
    let response: string;
    try {
      response = await handler({
        ...hop,
        signal: controller.signal,
        stream: (delta) =>
          agent.publish("requests.stream", {
            requestId: hop.requestId,
            hop: hop.hop,
            delta,
          }),
        ask: async (cap, payload) => {
          const r = await agent.ask(cap, payload, {
            requestId: hop.requestId,
          });
          const text = (r as { response?: unknown } | null)?.response;
          if (typeof text !== "string") {
            throw new AgentError(
              "bad_request",
              `agent for '${cap}' answered without a response text`,
            );
          }
          return text;
        },
      });
    } finally {
      hops.delete(controller);
      if (hops.size === 0) running.delete(hop.requestId);
    }
    if (typeof response !== "string") {
      throw new TypeError(
        `prompt handler for '${capability}' must return a string`,
      );
    }
    const answer: PromptAnswer = { response };
    if (hop.sage) {
      signer ??= batchSigner(
        options.key,
        hopSigner(options.key, options.signAsyncAt ?? SIGN_ASYNC_AT),
        options.batch ?? true,
      );
      const signed = await signer({
        requestId: hop.requestId,
        hop: hop.hop,
        content: response,
      });
      answer.signature = signed.signature;
      if (signed.proof !== undefined) answer.proof = signed.proof;
    }
    return answer;
  });
}

/** PKCS #8 wrapping of a raw Ed25519 seed (RFC 8410), before the seed. */
const PKCS8_ED25519 = Uint8Array.of(
  0x30,
  0x2e,
  0x02,
  0x01,
  0x00,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x04,
  0x22,
  0x04,
  0x20,
);
const encoder = new TextEncoder();

/**
 * Signs the answers finished in one turn together: each answer waits one
 * microtask for the others, then a batch of two or more gets one
 * `node:crypto` signature over its Merkle root (`hopBatch`, up to
 * `SAGE_BATCH_MAX` a signature) and each answer its proof; an answer alone
 * goes to `single` (`plexus-sage/v1`), as every answer does with `batch`
 * off or a key that is not a 32-byte seed.
 */
function batchSigner(
  key: Uint8Array | CryptoKey,
  single: (fields: HopFields) => Promise<string>,
  batch: boolean,
): (fields: HopFields) => Promise<{ signature: string; proof?: string }> {
  const alone = async (fields: HopFields) => ({
    signature: await single(fields),
  });
  if (!batch || key instanceof CryptoKey || key.length !== 32) return alone;
  let privateKey: KeyObject | undefined;
  let waiting: {
    fields: HopFields;
    done: PromiseWithResolvers<{ signature: string; proof?: string }>;
  }[] = [];
  const flush = () => {
    const all = waiting;
    waiting = [];
    for (let at = 0; at < all.length; at += SAGE_BATCH_MAX) {
      const part = all.slice(at, at + SAGE_BATCH_MAX);
      if (part.length === 1) {
        alone(part[0].fields).then(part[0].done.resolve, part[0].done.reject);
        continue;
      }
      try {
        privateKey ??= seedKey(key);
        const { root, proofs } = hopBatch(part.map((w) => w.fields));
        const signature = new Uint8Array(
          sign(null, hopBatchBytes(part.length, root), privateKey),
        ).toBase64({ alphabet: "base64url", omitPadding: true });
        part.forEach((w, i) => w.done.resolve({ signature, proof: proofs[i] }));
      } catch (err) {
        for (const w of part) w.done.reject(err);
      }
    }
  };
  return (fields) => {
    // hopLeaf's own refusal of a bad hop number, for this answer alone.
    if (!Number.isSafeInteger(fields.hop) || fields.hop < 0) {
      return alone(fields);
    }
    const done = Promise.withResolvers<
      { signature: string; proof?: string }
    >();
    if (waiting.length === 0) queueMicrotask(flush);
    waiting.push({ fields, done });
    return done.promise;
  };
}

/** A 32-byte Ed25519 seed as a `node:crypto` private key (RFC 8410 PKCS #8). */
function seedKey(seed: Uint8Array): KeyObject {
  const der = new Uint8Array(PKCS8_ED25519.length + 32);
  der.set(PKCS8_ED25519);
  der.set(seed, PKCS8_ED25519.length);
  return createPrivateKey({
    key: Buffer.from(der),
    format: "der",
    type: "pkcs8",
  });
}

/**
 * Signs hops with `key` as `signHop` does (the same bytes; Ed25519 is
 * deterministic, so the same signature). A seed is imported once for each
 * crypto. While fewer than `asyncAt` answers wait to be signed, with
 * `node:crypto`'s synchronous sign (~20 µs of the event loop; `signHop`'s
 * WebCrypto digest and sign cost ~54 and ~38 µs a hop one at a time, as an
 * awaited call wakes the idle event loop again); when that many wait (the
 * hops of one sealed batch, or answers finishing while signatures run on
 * the pool: the loop is busy), with WebCrypto, whose sign runs on Deno's
 * blocking pool. An answer waits from its handler's return, counted
 * before one microtask's yield so the answers finished in one turn see each
 * other. A CryptoKey always goes to `signHop`.
 */
function hopSigner(
  key: Uint8Array | CryptoKey,
  asyncAt: number,
): (fields: HopFields) => Promise<string> {
  if (key instanceof CryptoKey || key.length !== 32) {
    return (fields) => signHop(key, fields);
  }
  let privateKey: KeyObject;
  try {
    privateKey = seedKey(key);
  } catch {
    return (fields) => signHop(key, fields);
  }
  let web: Promise<CryptoKey> | undefined;
  let waiting = 0;
  return async (fields) => {
    // signHop's own refusal of a bad hop number.
    if (!Number.isSafeInteger(fields.hop) || fields.hop < 0) {
      return signHop(key, fields);
    }
    waiting++;
    try {
      // Let the answers finished in this turn count themselves.
      await undefined;
      if (waiting >= asyncAt) {
        web ??= ed25519FromSeed(key).then((k) => k.privateKey);
        return await signHop(await web, fields);
      }
      // One-shot: createHash builds a Node stream per digest.
      const digest = hash("sha256", fields.content, "base64url");
      const signed = encoder.encode(
        SAGE_CONTEXT + JSON.stringify([fields.requestId, fields.hop, digest]),
      );
      return new Uint8Array(sign(null, signed, privateKey)).toBase64({
        alphabet: "base64url",
        omitPadding: true,
      });
    } finally {
      waiting--;
    }
  };
}
