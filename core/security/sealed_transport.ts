/**
 * End-to-end sealed payloads over any {@linkcode Transport}
 * (docs/security.md, "Sealed payloads"). {@linkcode sealedTransport} wraps a
 * transport: on topics the policy marks sealed, `publish` encrypts the
 * payload to the topic's recipients (HPKE, RFC 9180) and signs the envelope
 * with the sender's Ed25519 key; delivery checks and opens it before the
 * handler. The broker stores only the routing fields and ciphertext.
 *
 * Encryption: the sender keeps one **session** per rule: a random 32-byte
 * content key wrapped once per recipient with single-shot HPKE (one `enc`
 * and one wrapped key per recipient), reused for up to
 * `rotateAfterMessages` messages or `rotateAfterMs`. Payloads are ChaCha20
 * under the session key, one key stream per batch (nonce: the session's
 * batch number; each message from a 64-byte block of its own), without a
 * Poly1305 tag: the batch signature covers every ciphertext and is checked
 * before anything is decrypted. Every message carries the wraps, so any one
 * message opens on its own; receivers cache unwrapped session keys, so
 * HPKE's two X25519 operations are paid per session, not per message.
 *
 * Format: the payload travels as one base64url string of a versioned
 * binary layout (`sealed_format.ts`, docs/wire-format.md): format byte 3,
 * sender, topic, session id, the recipients' wraps, batch number and block,
 * ciphertext and batch proof; {@linkcode SEALED_HEADER} carries the format as a readable
 * routing header. Format 2 (a JSON object of base64url fields) is refused as
 * `malformed`, with the reason.
 *
 * Signature: each message's **header** is a context string, the JSON of its
 * id, type, topic, source, timestamp, correlation id, reply-to and
 * destination, and the payload's bytes up to the ciphertext; its **digest**
 * is SHA-256 over the header and the ciphertext. Messages sealed before the next timer tick (up to
 * {@linkcode SEAL_BATCH_MAX}) form a batch: their digests are the leaves of a
 * Merkle tree (leaf and node hashes domain-separated) and the sender signs
 * the tree's root and size once with its Ed25519 node key. Each message
 * carries the signature, the root, its index and its path to the root, so it
 * verifies on its own with the sender's public key alone (anyone can check
 * it; no recipient can forge it). A receiver verifies each batch signature
 * once, synchronously (`node:crypto`), when the first member it opens
 * reaches the root, and remembers the digests under verified roots, so later
 * members of a batch stop climbing at the first one it knows; a delivery
 * whose sender key and session key are known opens without waiting on a
 * promise, its payload decoded into a buffer reused from one to the next.
 *
 * Where: with `worker: true`, the ChaCha20, digests, trees, signatures and
 * verifications of a sealed transport run on a worker thread of its own (`sealed_offload.ts`,
 * `sealed_batch.ts`), a batch or a turn's deliveries handed over as one
 * buffer; a message whose keys are not known yet, and {@linkcode sealedOpener},
 * take the same steps in the caller's thread. Only with `worker: true`; by
 * default it all runs here.
 *
 * Size: `caps.maxMessageBytes` is the inner transport's limit less what
 * sealing adds (the payload's base64 and the wraps), so a message that fits
 * is accepted on any topic once sealed; it applies to every topic of the
 * wrapped transport.
 *
 * Refusals (each `term`ed, so dead-lettered with the reason, and counted
 * in `plexus_sealed_refused_total{reason}`): `not_sealed`, `malformed`,
 * `readdressed`, `replay_window`, `unknown_sender`, `bad_signature`,
 * `not_recipient`, `no_key`, `tampered`, `replay` ({@linkcode SealedError}).
 *
 * Recipients are `node:ID` and `agent:ID`. The receiving side is also
 * {@linkcode sealedOpener} on its own: a node forwarding messages for agents
 * verifies with it, without a key (`sealed_forward.ts`), and the agent SDK
 * opens with it (`sdk/sealed.ts`).
 *
 * @module
 */
import type { Envelope } from "../envelope.ts";
import { PlexusError } from "../errors.ts";
import type { Clock } from "../clock.ts";
import { systemClock } from "../clock.ts";
import type { Logger } from "../observe/logger.ts";
import type { MetricsRegistry } from "../observe/metrics.ts";
import { topicMatches } from "../router.ts";
import {
  assertFits,
  boundWithoutPayload,
  type Delivery,
  type DeliveryHandler,
  type PublishOptions,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  TransportError,
} from "../transport.ts";
import { createHash, KeyObject } from "node:crypto";
import {
  chacha20,
  type HpkeKeyPair,
  open as hpkeOpen,
  seal as hpkeSeal,
} from "./hpke.ts";
import {
  authenticateProof,
  equalBytes,
  LEAF_PREFIX,
  nonceOf,
  OPEN_ITEM,
  type OpenPlan,
  ProofRefusal,
  SEAL_ITEM,
  type SealPlan,
  sealPlan,
  type VerifiedBatches,
  verifiedBatches,
  ZEROS,
} from "./sealed_batch.ts";
import { SealedWorker } from "./sealed_offload.ts";
import type { SealingDirectory, SealingPeer } from "./sealing_keys.ts";
import {
  COUNTER_BYTES,
  decodeSealed,
  DIGEST_BYTES,
  ENC_BYTES,
  encodeSealedHead,
  proofBytes,
  SEALED_FORMAT,
  type SealedFields,
  type SealedWrap,
  SIG_BYTES,
} from "./sealed_format.ts";
import { deleteOldest } from "../oldest.ts";

/** Topics whose payloads are sealed, and to whom. */
export interface SealedTopicRule {
  /** Topic pattern (`orders.*`, `billing.>`); the first matching rule applies. */
  pattern: string;
  /** Directory ids the payload is encrypted to: `node:ID` or `agent:ID`. */
  recipients: string[];
  /**
   * Where messages for `agent:` recipients go: the backend channel name
   * (`sealed` → `backend.{id}.sealed`) a node hands the still-sealed
   * envelope to through the gateway. Required when a recipient is an agent.
   */
  deliver?: {
    /** The backend channel name, e.g. `sealed`. */
    channel: string;
    /**
     * The topics forwarding nodes subscribe to. @default {[pattern]} (a
     * wildcard pattern needs a transport that subscribes to wildcards)
     */
    topics?: string[];
  };
}

/** Which topics are sealed, and the receiving side's limits. */
export interface SealingPolicy {
  /** The sealed topics; a topic no rule matches is passed through as it is. */
  topics: SealedTopicRule[];
  /** Oldest envelope `timestamp` accepted, in ms before now. @default {300000} */
  replayWindowMs?: number;
  /** How far an envelope's `timestamp` may be ahead of this clock. @default {30000} */
  clockSkewMs?: number;
  /** Message ids remembered per subscription to refuse replays in the window. @default {100000} */
  maxSeen?: number;
  /** A session key seals at most this many messages. @default {100000} */
  rotateAfterMessages?: number;
  /** A session key is used at most this long. @default {600000} */
  rotateAfterMs?: number;
  /**
   * Messages for agents a node hands to its gateway at once, per topic;
   * above 1 they may reach an agent out of order. @default {1}
   */
  forwardMaxInFlight?: number;
  /**
   * The node's sealed transports seal and open on a worker thread
   * ({@linkcode SealedTransportOptions.worker}). @default {false}
   */
  worker?: boolean;
}

/** This node's sealing identity and where peers' keys are found. */
export interface SealingKeys {
  /** This node's directory id (`node:ID`): the sender, and the recipient id it opens as. */
  id: string;
  /** The Ed25519 private key envelopes are signed with (the node key). */
  signingKey: CryptoKey;
  /** This node's X25519 key pair (what senders encrypt to). */
  x25519: HpkeKeyPair;
  /** Peers' public keys. */
  directory: SealingDirectory;
}

/** Options of {@linkcode sealedTransport}. */
export interface SealedTransportOptions {
  /** Where refusals and seal/open counts go. @default {undefined} (not counted) */
  metrics?: MetricsRegistry;
  /** Where refusals are logged (warn). @default {undefined} */
  log?: Logger;
  /** @default {systemClock} */
  clock?: Clock;
  /**
   * Seal and open on a worker thread of the transport's own (no Deno
   * permissions; needs `--unstable-worker-options`): the ChaCha20, digests,
   * Merkle trees, signatures and verifications leave the node's thread. It
   * costs the process more CPU in all (each batch's bytes move between
   * cores), so it pays only where a core is spare (docs/security.md, "What
   * runs where"). @default {false}
   */
  worker?: boolean;
}

/** Why a sealed delivery was refused (the first word of its dead-letter reason). */
export type SealedRefusal =
  | "not_sealed"
  | "malformed"
  | "readdressed"
  | "replay_window"
  | "unknown_sender"
  | "bad_signature"
  | "not_recipient"
  | "no_key"
  | "tampered"
  | "replay";

/**
 * The core capability under which the node hands transports its `sealed`
 * config (a {@linkcode SealingPolicy}).
 */
export const SEALING_POLICY = "sealing:policy";

/** The header carried in `envelope.headers` of a sealed message. */
export const SEALED_HEADER = "plexus-sealed";
/** Set on delivered (opened) envelopes: the verified sender's directory id. */
export const SEALED_FROM_HEADER = "plexus-sealed-from";

/**
 * Most messages one batch signature covers: their Merkle paths have at most
 * log2 of it (6) digests.
 *
 * @example
 * ```ts
 * import { SEAL_BATCH_MAX } from "./sealed_transport.ts";
 * SEAL_BATCH_MAX; // 64
 * ```
 */
export const SEAL_BATCH_MAX = 64;
/** A batch this large is signed without waiting for the timer tick. */
const SEAL_BATCH_EAGER = 16;
/** Bytes sealing adds besides the payload's base64, at most: ids, session, sequence, tag, signature, root, path, header. */
const SEAL_OVERHEAD_BYTES = 1536;
/** Bytes each recipient's wrap adds, at most (id up to 70, enc, wrapped key). */
const SEAL_OVERHEAD_PER_RECIPIENT = 256;
/** The value of {@linkcode SEALED_HEADER}: the payload's format. */
const VERSION = String(SEALED_FORMAT);
const INFO = new TextEncoder().encode("plexus-sealed/v1 session key");
/** Path digests the sender leaves room for: log2 of SEAL_BATCH_MAX. */
const SEAL_PATH_MAX = Math.ceil(Math.log2(SEAL_BATCH_MAX));
/** Most messages in one job for the worker. */
const OPEN_JOB_MAX = 128;
/** A job's buffer to start with (grown when a job needs more). */
const OPEN_JOB_BYTES = 256 * 1024;
const B64 = { alphabet: "base64url", omitPadding: true } as const;
const B64_IN = { alphabet: "base64url" } as const;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

interface Session {
  /** The session id, and as base64url (in the wraps' associated data). */
  id: Uint8Array;
  idText: string;
  key: Uint8Array;
  wraps: SealedWrap[];
  /** The payload's constant part per topic (format to wraps). */
  heads: Map<string, Uint8Array>;
  /** The recipients' X25519 keys the wraps were made for. */
  fingerprint: string;
  /** The directory's answers those keys came from, per recipient. */
  lookups: Promise<SealingPeer | undefined>[];
  /** Messages sealed in it (it rotates after `rotateAfterMessages`). */
  next: number;
  /** Batches encrypted under it: the next one's nonce. */
  batches: number;
  startedAt: number;
}

/**
 * A sealed message refused: `code` is the refusal (the first word of its
 * dead-letter reason), `message` the detail. Thrown by
 * {@linkcode SealedOpener}; the transport turns it into a `term`.
 *
 * @example Usage
 * ```ts
 * import { SealedError } from "./sealed_transport.ts";
 * const err = new SealedError("replay", "message 'm1' was already handled");
 * err.code; // "replay"
 * err instanceof Error; // true
 * ```
 */
export class SealedError extends PlexusError {
  /** Always "SealedError". */
  override name = "SealedError";
  /** Why it was refused. */
  declare readonly code: SealedRefusal;
  /** `code` is the refusal, `message` says what was found. */
  constructor(code: SealedRefusal, message: string) {
    super(code, message, { status: 400 });
  }
}

/**
 * Wraps `inner` so that topics `policy` marks sealed carry only ciphertext
 * and a signature on the broker. `publish` on a sealed topic rejects with
 * `TransportError("invalid_argument")` when a recipient has no published
 * key. Delivery on a sealed topic hands the handler the envelope with its
 * plaintext payload (and {@linkcode SEALED_FROM_HEADER}); a refused delivery
 * is `term`ed with `"sealed <code>: <detail>"` and never reaches the handler.
 *
 * @example Usage
 * ```ts ignore
 * import { sealedTransport } from "./sealed_transport.ts";
 * const t = sealedTransport(inner, {
 *   topics: [{ pattern: "orders.>", recipients: ["node:billing-1"] }],
 * }, keys, { metrics });
 * await t.publish("orders.created", envelope); // the broker sees ciphertext
 * ```
 */
export function sealedTransport(
  inner: Transport,
  policy: SealingPolicy,
  keys: SealingKeys,
  options: SealedTransportOptions = {},
): Transport {
  const clock = options.clock ?? systemClock;
  const windowMs = policy.replayWindowMs ?? 300_000;
  const skewMs = policy.clockSkewMs ?? 30_000;
  const maxSeen = policy.maxSeen ?? 100_000;
  const rotateAfter = policy.rotateAfterMessages ?? 100_000;
  const rotateMs = policy.rotateAfterMs ?? 600_000;
  const refused = options.metrics?.counter(
    "plexus_sealed_refused_total",
    "Sealed deliveries refused and dead-lettered, by reason",
  );
  const counted = options.metrics?.counter(
    "plexus_sealed_messages_total",
    "Payloads sealed on publish and opened on delivery",
  );
  const sealedCount = counted?.labels({ op: "sealed" });
  const openedCount = counted?.labels({ op: "opened" });
  const sessions = new Map<SealedTopicRule, Session>();
  const opening = new Map<
    SealedTopicRule,
    { fingerprint: string; session: Promise<Session> }
  >();

  // The limit holds for the envelope as given: leave room for what sealing
  // adds (base64 is 4/3 of the payload; the wraps, ids and signature).
  const recipientsMax = Math.max(
    0,
    ...policy.topics.map((r) => r.recipients.length),
  );
  const caps = policy.topics.length === 0 ? inner.caps : {
    ...inner.caps,
    maxMessageBytes: Math.max(
      0,
      Math.floor(
        (inner.caps.maxMessageBytes - SEAL_OVERHEAD_BYTES -
          SEAL_OVERHEAD_PER_RECIPIENT * recipientsMax) * 3 / 4,
      ),
    ),
  };

  // Each topic's rule, found once: matching splits the pattern and topic
  // (~0.4 µs a message each way). A wildcard may cover many topics: the
  // recent ones are kept.
  const rules = new Map<string, SealedTopicRule | null>();
  const ruleFor = (topic: string) => {
    let rule = rules.get(topic);
    if (rule === undefined) {
      if (rules.size >= 1024) rules.clear();
      rule = policy.topics.find((r) => topicMatches(r.pattern, topic)) ?? null;
      rules.set(topic, rule);
    }
    return rule ?? undefined;
  };

  const lookup = (id: string) => {
    try {
      return keys.directory.lookup(id);
    } catch (err) {
      return Promise.reject(err);
    }
  };

  /**
   * The rule's session. Without a wait when it is fresh and the directory
   * hands back the very answers it was made from (a cached lookup is the
   * same promise: the same keys); else the keys are looked at again.
   */
  function session(
    rule: SealedTopicRule,
    topic: string,
  ): Session | Promise<Session> {
    const lookups = rule.recipients.map(lookup);
    const current = sessions.get(rule);
    if (
      current && current.next < rotateAfter &&
      clock.mono() - current.startedAt < rotateMs &&
      lookups.every((l, j) => l === current.lookups[j])
    ) return current;
    return renewSession(rule, topic, lookups);
  }

  async function renewSession(
    rule: SealedTopicRule,
    topic: string,
    lookups: Promise<SealingPeer | undefined>[],
  ): Promise<Session> {
    const peers = await Promise.all(lookups.map(async (answer, j) => {
      const id = rule.recipients[j];
      let peer: SealingPeer | undefined;
      try {
        peer = await answer;
      } catch (err) {
        throw new TransportError(
          "invalid_argument",
          `Cannot seal a message on '${topic}': the sealing key of recipient '${id}' is refused (rule '${rule.pattern}'): ${
            (err as Error).message
          }`,
          { data: { topic, recipient: id } },
        );
      }
      if (!peer) {
        throw new TransportError(
          "invalid_argument",
          `Cannot seal a message on '${topic}': recipient '${id}' has no published sealing key (rule '${rule.pattern}')`,
          { data: { topic, recipient: id } },
        );
      }
      return peer;
    }));
    const fingerprint = peers.map((p) => p.x25519.toBase64(B64)).join(",");
    const current = sessions.get(rule);
    if (
      current && current.fingerprint === fingerprint &&
      current.next < rotateAfter &&
      clock.mono() - current.startedAt < rotateMs
    ) {
      current.lookups = lookups;
      return current;
    }
    // One new session for all the publishes that found none (or a spent one).
    const pending = opening.get(rule);
    if (pending?.fingerprint === fingerprint) return pending.session;
    const fresh = {
      fingerprint,
      session: openSession(peers, fingerprint, lookups),
    };
    opening.set(rule, fresh);
    try {
      const opened = await fresh.session;
      sessions.set(rule, opened);
      return opened;
    } finally {
      if (opening.get(rule) === fresh) opening.delete(rule);
    }
  }

  async function openSession(
    peers: SealingPeer[],
    fingerprint: string,
    lookups: Promise<SealingPeer | undefined>[],
  ): Promise<Session> {
    const id = crypto.getRandomValues(new Uint8Array(16));
    const idText = id.toBase64(B64);
    const key = crypto.getRandomValues(new Uint8Array(32));
    const wraps = await Promise.all(peers.map(async (p) => {
      const aad = encoder.encode(JSON.stringify([keys.id, idText, p.id]));
      const { enc, ct } = await hpkeSeal(p.x25519, INFO, aad, key);
      return { r: p.id, enc, k: ct };
    }));
    return {
      id,
      idText,
      key,
      wraps,
      heads: new Map(),
      fingerprint,
      lookups,
      next: 0,
      batches: 0,
      startedAt: clock.mono(),
    };
  }

  /**
   * Seals `envelope` and publishes it once its batch is signed: the
   * promise of the inner publish.
   */
  function seal(
    rule: SealedTopicRule,
    topic: string,
    envelope: Envelope,
    opts: PublishOptions | undefined,
  ): Promise<void> {
    if (envelope.topic !== topic) {
      // Receivers refuse a topic mismatch as re-addressed: fail here instead.
      throw new TransportError(
        "invalid_argument",
        `Cannot seal message '${envelope.id}': its envelope topic '${envelope.topic}' is not the topic '${topic}' it is published on`,
        { data: { topic, envelopeTopic: envelope.topic } },
      );
    }
    const json = JSON.stringify(envelope.payload ?? null);
    // The size check without serialising the envelope: exact only when a
    // bound (3 bytes a character of the payload's JSON, UTF-8's most for a
    // UTF-16 unit) might not fit.
    const rest = envelope.payload === undefined
      ? undefined
      : boundWithoutPayload(envelope);
    const surelyFits = rest !== undefined &&
      rest + json.length * 3 <= caps.maxMessageBytes;
    if (!surelyFits) assertFits(envelope, caps.maxMessageBytes);
    const live = session(rule, topic);
    return live instanceof Promise
      ? live.then((s) => sealIn(s, topic, envelope, json, opts))
      : sealIn(live, topic, envelope, json, opts);
  }

  /**
   * Puts a message in the open batch: its leaf's routing bytes, head and
   * plaintext written straight into the batch's buffer, one after another
   * (the digest's input is then one run of bytes), where it is encrypted in
   * place, and its proof added once the batch is signed.
   */
  function sealIn(
    s: Session,
    topic: string,
    envelope: Envelope,
    json: string,
    opts: PublishOptions | undefined,
  ): Promise<void> {
    s.next++;
    let head = s.heads.get(topic);
    if (!head) {
      head = encodeSealedHead(keys.id, topic, s.id, s.wraps);
      // A wildcard rule may cover many topics: keep the recent ones.
      if (s.heads.size >= 256) s.heads.clear();
      s.heads.set(topic, head);
    }
    const routing = routingText(envelope);
    const b = openBatch();
    // Room for UTF-8's most (3 bytes a UTF-16 unit), 3 bytes of alignment
    // and the longest proof.
    reserve(
      b,
      b.used + routing.length * 3 + 3 + head.length + COUNTER_BYTES +
        json.length * 3 + proofBytes(SEAL_PATH_MAX),
    );
    let routingAt = b.used;
    const routingLength =
      encoder.encodeInto(routing, b.buf.subarray(routingAt)).written;
    // The ciphertext starts on a 4-byte boundary (XORed a word at a time):
    // the routing bytes move up to 3 bytes on.
    const shift = (4 - ((routingAt + routingLength + head.length) & 3)) & 3;
    if (shift) {
      b.buf.copyWithin(routingAt + shift, routingAt, routingAt + routingLength);
      routingAt += shift;
    }
    const start = routingAt + routingLength;
    b.buf.set(head, start);
    const ctAt = start + head.length + COUNTER_BYTES;
    const ctLength = encoder.encodeInto(json, b.buf.subarray(ctAt)).written;
    b.used = ctAt + ctLength + proofBytes(SEAL_PATH_MAX);
    const w: Waiting = {
      session: s,
      routingAt,
      start,
      ctAt,
      ctLength,
      envelope,
      topic,
      opts,
      done: Promise.withResolvers<void>(),
    };
    b.items.push(w);
    if (b.items.length >= SEAL_BATCH_MAX) signBatch(b);
    return w.done.promise;
  }

  /** A message waiting for its batch: encrypted, signed, then published. */
  interface Waiting {
    session: Session;
    /** Where its leaf's routing bytes start in the batch's buffer. */
    routingAt: number;
    /** Where its payload starts (its routing bytes end). */
    start: number;
    /** Where its ciphertext starts, and its length. */
    ctAt: number;
    ctLength: number;
    envelope: Envelope;
    topic: string;
    opts: PublishOptions | undefined;
    done: PromiseWithResolvers<void>;
  }

  /**
   * Messages sealed together, their payloads side by side in one buffer
   * (gaps between them are never sent).
   */
  interface Batch {
    items: Waiting[];
    buf: Uint8Array<ArrayBuffer>;
    used: number;
  }

  // Buffers of sealed batches, reused: a batch's payloads are base64url
  // strings once it is published.
  const spare: Uint8Array<ArrayBuffer>[] = [];

  /** The buffer of `b` holds at least `bytes`: a bigger one if not. */
  function reserve(b: Batch, bytes: number): void {
    if (b.buf.length >= bytes) return;
    const buf = new Uint8Array(Math.max(bytes, b.buf.length * 2) + 3 & ~3);
    buf.set(b.buf.subarray(0, b.used));
    b.buf = buf;
  }

  // Messages sealed until the next timer tick (setTimeout 0, up to ~2 ms
  // here), signed together then. setImmediate would cut the wait, but
  // publishes spread over I/O callbacks would then go one to a batch. A
  // burst (SEAL_BATCH_EAGER or more sealed in one run of the event loop's
  // current job) is signed once that job's microtasks run: it waits for no
  // timer, and more publishes would not have come before it anyway.
  let batch: Batch | undefined;

  function openBatch(): Batch {
    if (batch) return batch;
    const b: Batch = {
      items: [],
      buf: spare.pop() ?? new Uint8Array(SEAL_BATCH_MAX * 2048),
      used: 0,
    };
    batch = b;
    queueMicrotask(() => {
      if (batch === b && b.items.length >= SEAL_BATCH_EAGER) signBatch(b);
    });
    setTimeout(() => {
      if (batch === b) signBatch(b);
    }, 0);
    return b;
  }

  function checkSigningKey(): void {
    const algorithm = keys.signingKey.algorithm.name;
    if (algorithm !== "Ed25519") {
      // node:crypto would sign with any key: refuse as WebCrypto would.
      throw new TransportError(
        "invalid_argument",
        `Cannot seal with '${keys.id}': its signing key is ${algorithm}, not Ed25519`,
        { data: { algorithm } },
      );
    }
  }

  // In this thread, the node key as a `node:crypto` key: its Ed25519 sign is
  // synchronous (~15-20 µs). WebCrypto's, a promise, cost the main thread
  // 10-20 µs alone but ~350 µs a call in the Redis bench (profiled).
  let signer: KeyObject | undefined;
  // On the worker: the batch's crypto leaves this thread (sealed_offload.ts).
  const worker = options.worker !== true || policy.topics.length === 0
    ? undefined
    : new SealedWorker(keys.id, keys.signingKey);
  // Started now, not at the first batch: a worker takes ~50 ms to start.
  void worker?.started.then((ok) => {
    if (ok) options.log?.info("sealed payloads: crypto on a worker thread");
    else {
      options.log?.warn(
        "sealed payloads: the worker thread could not start (is --unstable-worker-options set?); sealing and opening in this thread",
      );
    }
  });
  const inFlight = new Set<Promise<void>>();

  /**
   * Seals a batch (on the worker, or here): each session's batch number
   * taken now, in order; its messages published in order once it is back.
   */
  function signBatch(b: Batch) {
    if (batch === b) batch = undefined;
    const items = b.items;
    const plan: SealPlan = {
      buf: b.buf,
      items: new Int32Array(items.length * SEAL_ITEM),
      sessions: [],
    };
    const index = new Map<Session, number>();
    items.forEach((w, i) => {
      let s = index.get(w.session);
      if (s === undefined) {
        index.set(w.session, s = plan.sessions.length);
        plan.sessions.push({ key: w.session.key, n: w.session.batches++ });
      }
      const o = i * SEAL_ITEM;
      plan.items[o] = w.routingAt;
      plan.items[o + 1] = w.start;
      plan.items[o + 2] = w.ctAt;
      plan.items[o + 3] = w.ctLength;
      plan.items[o + 4] = s;
    });
    const fail = (err: unknown) => {
      for (const w of items) w.done.reject(err);
    };
    try {
      checkSigningKey();
      if (!worker) {
        sealPlan(plan, keys.id, signer ??= KeyObject.from(keys.signingKey));
      }
    } catch (err) {
      fail(err);
      release(b.buf);
      return;
    }
    if (!worker) return publishAll(items, plan);
    const sealed = worker.seal(plan).then(
      (back) => publishAll(items, back),
      fail,
    );
    inFlight.add(sealed);
    sealed.finally(() => inFlight.delete(sealed));
  }

  function publishAll(items: Waiting[], plan: SealPlan): void {
    const { buf } = plan;
    items.forEach((w, i) => {
      sealedCount?.inc();
      try {
        w.done.resolve(inner.publish(w.topic, {
          ...w.envelope,
          headers: { ...w.envelope.headers, [SEALED_HEADER]: VERSION },
          payload: buf.subarray(w.start, plan.items[i * SEAL_ITEM + 5])
            .toBase64(B64),
        }, w.opts));
      } catch (err) {
        w.done.reject(err);
      }
    });
    release(buf);
  }

  function release(buf: Uint8Array<ArrayBuffer>): void {
    if (spare.length < 4 && buf.length >= SEAL_BATCH_MAX * 2048) {
      spare.push(buf);
    }
  }

  const opener = openerOf(keys, {
    clock,
    replayWindowMs: windowMs,
    clockSkewMs: skewMs,
    onOpened: () => openedCount?.inc(),
    worker,
  });

  return {
    name: inner.name,
    caps,
    publish(
      topic: string,
      envelope: Envelope,
      opts?: PublishOptions,
    ): Promise<void> {
      // No async frame of its own: a sealed publish is its batch's promise.
      try {
        const rule = ruleFor(topic);
        if (rule) return seal(rule, topic, envelope, opts);
        assertFits(envelope, caps.maxMessageBytes);
        return inner.publish(topic, envelope, opts);
      } catch (err) {
        return Promise.reject(err);
      }
    },
    subscribe(
      topic: string,
      handler: DeliveryHandler,
      opts?: SubscribeOptions,
    ): Promise<Subscription> {
      // Per subscription: each one sees every message of its own stream.
      const seen = new ReplayMemory(maxSeen);
      const remember = (from: string, id: string, timestamp: number) =>
        seen.add(from, id, timestamp + windowMs, clock.now());
      return inner.subscribe(topic, async (d) => {
        const rule = ruleFor(d.topic);
        if (!rule) return handler(d);
        let opened: Envelope;
        let from: string;
        try {
          const now = opener.open(d.envelope, d.topic);
          opened = now instanceof Promise ? await now : now;
          from = opened.headers[SEALED_FROM_HEADER];
          if (seen.has(from, opened.id)) {
            throw new SealedError(
              "replay",
              `message '${opened.id}' from '${from}' was already handled here`,
            );
          }
        } catch (err) {
          if (!(err instanceof SealedError)) throw err;
          refused?.inc({ reason: err.code });
          options.log?.warn("sealed delivery refused", {
            topic: d.topic,
            id: d.envelope.id,
            reason: err.code,
            detail: err.message,
          });
          await d.term(`sealed ${err.code}: ${err.message}`);
          return;
        }
        const view = new OpenedDelivery(opened, d);
        await handler(view);
        // Handled (acked now or by the transport on return): a copy is a replay.
        if (!view.naked) remember(from, opened.id, opened.timestamp);
      }, opts);
    },
    ...(inner.deadLetters
      ? { deadLetters: inner.deadLetters.bind(inner) }
      : {}),
    // Request/reply (service calls) is not a sealed topic: passed through.
    ...(inner.respond ? { respond: inner.respond.bind(inner) } : {}),
    ...(inner.responders ? { responders: inner.responders.bind(inner) } : {}),
    ...(inner.listResponders
      ? { listResponders: inner.listResponders.bind(inner) }
      : {}),
    ...(inner.request ? { request: inner.request.bind(inner) } : {}),
    async close() {
      // Batches on the worker are published before the inner transport closes.
      await Promise.allSettled([...inFlight]);
      worker?.close();
      await inner.close();
    },
  };
}

/** What a {@linkcode SealedOpener} opens as, and where it finds senders' keys. */
export interface SealedOpenerKeys {
  /** The recipient id it opens as (`node:ID`, `agent:ID`); none: it only verifies. */
  id?: string;
  /** The recipient's X25519 key pair; none: it only verifies. */
  x25519?: HpkeKeyPair;
  /** Senders' public keys. */
  directory: SealingDirectory;
}

/**
 * What a sealed subscription's handler gets: the opened envelope, settled
 * through the transport's delivery. One object, its methods shared, instead
 * of a closure per method per message.
 */
class OpenedDelivery implements Delivery {
  /** Whether the handler asked for a redelivery (not then a replay). */
  naked = false;
  constructor(readonly envelope: Envelope, readonly inner: Delivery) {}
  get topic(): string {
    return this.inner.topic;
  }
  get key(): string | undefined {
    return this.inner.key;
  }
  get attempts(): number {
    return this.inner.attempts;
  }
  get settled(): boolean {
    return this.inner.settled;
  }
  ack(): Promise<void> {
    return this.inner.ack();
  }
  nak(delayMs?: number, error?: string): Promise<void> {
    this.naked = true;
    return this.inner.nak(delayMs, error);
  }
  inProgress(): Promise<void> {
    return this.inner.inProgress();
  }
  term(reason: string): Promise<void> {
    return this.inner.term(reason);
  }
}

/**
 * The sealed messages a receiver has handled, to refuse copies: each
 * sender's id of a message is kept until its expiry or until `max` newer ones
 * (of any sender) push it out, oldest first. Ids are only unique per sender:
 * a map of ids per sender, so a lookup builds no `sender|id` string (~0.5-0.9
 * µs a message). A ring of (sender, id) beside the maps: dropping a Map's
 * oldest entries one by one makes V8 walk every deleted slot on the next
 * iteration, which cost 20-80 µs per message once `max` was reached.
 *
 * @example Usage
 * ```ts
 * import { ReplayMemory } from "./sealed_transport.ts";
 * const seen = new ReplayMemory(2);
 * seen.add("node:a", "m1", 1000, 0);
 * seen.has("node:a", "m1"); // true
 * seen.has("node:b", "m1"); // false
 * seen.add("node:a", "m2", 1000, 0);
 * seen.add("node:a", "m3", 1000, 0); // full: m1 goes
 * seen.has("node:a", "m1"); // false
 * seen.add("node:a", "m4", 1000, 2000); // m2 and m3 expired at 1000
 * seen.size; // 1
 * ```
 */
export class ReplayMemory {
  #bySender = new Map<string, Map<string, number>>();
  #ringFrom: string[] = [];
  #ringId: string[] = [];
  #head = 0;
  #count = 0;

  /** Keeps at most `max` ids (at least 1). */
  constructor(readonly max: number) {
    this.max = Math.max(1, Math.floor(max));
  }

  /** How many ids are kept. */
  get size(): number {
    return this.#count;
  }

  /** Whether `id` from `from` was added and is still kept. */
  has(from: string, id: string): boolean {
    return this.#bySender.get(from)?.has(id) ?? false;
  }

  /**
   * Keeps `id` from `from` until `expiresAt` (an id kept already only takes
   * the new expiry), after dropping the ids expired at `now` from the oldest
   * on (up to the first one that is not) and, when full, the oldest.
   */
  add(from: string, id: string, expiresAt: number, now: number): void {
    let ids = this.#bySender.get(from);
    if (ids?.has(id)) {
      ids.set(id, expiresAt);
      return;
    }
    while (this.#count > 0) {
      const oldFrom = this.#ringFrom[this.#head];
      const oldIds = this.#bySender.get(oldFrom)!;
      const oldId = this.#ringId[this.#head];
      if (oldIds.get(oldId)! > now && this.#count < this.max) break;
      oldIds.delete(oldId);
      if (oldIds.size === 0) this.#bySender.delete(oldFrom);
      this.#head = (this.#head + 1) % this.max;
      this.#count--;
    }
    ids = this.#bySender.get(from);
    if (!ids) this.#bySender.set(from, ids = new Map());
    ids.set(id, expiresAt);
    const at = (this.#head + this.#count) % this.max;
    this.#ringFrom[at] = from;
    this.#ringId[at] = id;
    this.#count++;
  }
}

/** Options of {@linkcode sealedOpener}. */
export interface SealedOpenerOptions {
  /** @default {systemClock} */
  clock?: Clock;
  /** Oldest envelope `timestamp` accepted, in ms before now. @default {300000} */
  replayWindowMs?: number;
  /** How far an envelope's `timestamp` may be ahead of this clock. @default {30000} */
  clockSkewMs?: number;
  /** Called once per message opened. */
  onOpened?: () => void;
}

/** {@linkcode openerOf}'s options: also where messages are checked and decrypted. */
interface OpenerOptions extends SealedOpenerOptions {
  /** Runs of messages arriving together are checked and decrypted there. */
  worker?: SealedWorker;
}

/** What {@linkcode SealedOpener.verify} found in a sealed envelope. */
export interface SealedCheck {
  /** The verified sender's directory id. */
  from: string;
  /** The recipients' directory ids the payload is wrapped to. */
  recipients: string[];
}

/** Checks and opens sealed envelopes (the receiving side of sealing). */
export interface SealedOpener {
  /**
   * Checks what can be checked without a recipient's key: the shape, the
   * topic (re-addressing), the replay window and the sender's batch
   * signature. Throws {@linkcode SealedError}.
   */
  verify(envelope: Envelope, topic: string): Promise<SealedCheck>;
  /**
   * {@linkcode SealedOpener.verify}, then unwraps this recipient's session
   * key and decrypts: the envelope with its plaintext payload and
   * {@linkcode SEALED_FROM_HEADER}. Throws {@linkcode SealedError}.
   */
  open(envelope: Envelope, topic: string): Promise<Envelope>;
}

/**
 * The receiving side of sealed payloads, on its own: what
 * {@linkcode sealedTransport} runs for each delivery, what a forwarding
 * node checks before handing a message to the gateway (without a key), and
 * what the agent SDK opens messages with. Per-message replay memory is the
 * caller's (ids are only unique per sender).
 *
 * @example Usage
 * ```ts ignore
 * const opener = sealedOpener({ id: "agent:a1", x25519, directory });
 * const env = await opener.open(sealedEnvelope, sealedEnvelope.topic);
 * env.payload; // the plaintext
 * ```
 */
export function sealedOpener(
  keys: SealedOpenerKeys,
  options: SealedOpenerOptions = {},
): SealedOpener {
  const { check, open } = openerOf(keys, options);
  return {
    async verify(envelope, topic) {
      const p = await check(envelope, topic);
      return { from: p.from, recipients: p.wraps.map((w) => w.r) };
    },
    async open(envelope, topic) {
      return await open(envelope, topic);
    },
  };
}

/**
 * {@linkcode sealedOpener}'s work, synchronous when nothing needs waiting
 * for (the sender's key looked up and the session key unwrapped before): a
 * promise per message costs what a digest does.
 */
function openerOf(keys: SealedOpenerKeys, options: OpenerOptions) {
  const clock = options.clock ?? systemClock;
  const windowMs = options.replayWindowMs ?? 300_000;
  const skewMs = options.clockSkewMs ?? 30_000;
  // Unwrapped session keys, by sender, session and our wrap.
  const sessionKeys = new Map<
    string,
    { pending: Promise<Uint8Array>; key?: Uint8Array }
  >();
  const MAX_SESSION_KEYS = 1024;
  // The worker's job of this turn, and buffers of jobs come back.
  let job: OpenJob | undefined;
  const spareJobBuffers: Uint8Array<ArrayBuffer>[] = [];
  // Payloads are decoded into this buffer, reused from message to message:
  // a message that has to wait (a key lookup, a batch signature, a session
  // key) takes a copy of its bytes first ({@linkcode own}).
  const wire = { bytes: new Uint8Array(4096) };
  function own(p: SealedFields): void {
    if (p.bytes.buffer !== wire.bytes.buffer) return;
    p.bytes = p.bytes.slice();
    p.sig = p.bytes.subarray(p.ctEnd, p.ctEnd + SIG_BYTES);
    p.root = p.bytes.subarray(
      p.ctEnd + SIG_BYTES,
      p.ctEnd + SIG_BYTES + DIGEST_BYTES,
    );
  }
  // The payloads whose heads were decoded last (newest first): a session's
  // later messages reuse its decoded head after comparing its bytes.
  const heads: SealedFields[] = [];
  // The directory's answers already settled (a cached lookup is the same
  // promise each time), so a known sender costs no wait.
  const senders = new WeakMap<
    Promise<SealingPeer | undefined>,
    SealingPeer
  >();

  // Per sender key (a replaced key starts afresh): batch signatures
  // verified, and the tree nodes (leaves and inner digests, kept as bytes)
  // under a verified root. A message whose climb reaches one of those nodes
  // is in a batch the sender signed.
  const verified = new WeakMap<CryptoKey, VerifiedBatches>();

  /**
   * Checks that `leaf` is under a batch root `p`'s sender signed
   * ({@linkcode authenticateProof}). Synchronous: the batch signature is
   * verified here, once per batch (`node:crypto`'s Ed25519, ~40 µs), so no
   * member of a batch waits on another's verification.
   */
  function authenticate(
    senderKey: CryptoKey,
    p: SealedFields,
    leaf: Uint8Array,
  ): void {
    let known = verified.get(senderKey);
    if (!known) verified.set(senderKey, known = verifiedBatches());
    try {
      authenticateProof(known, () => publicKeyOf(senderKey), p, leaf);
    } catch (err) {
      if (err instanceof ProofRefusal) {
        throw new SealedError(err.code, err.message);
      }
      throw err;
    }
  }

  function noteHead(p: SealedFields): void {
    if (p.head !== heads[0]?.head) {
      const j = heads.findIndex((k) => k.head === p.head);
      if (j >= 0) heads.splice(j, 1);
      else if (heads.length >= 4) heads.pop();
      heads.unshift(p);
    }
  }

  /** Refuses a re-addressed message and one outside the replay window. */
  function checkRouting(env: Envelope, topic: string, p: SealedFields): void {
    if (p.topic !== env.topic || p.topic !== topic) {
      throw new SealedError(
        "readdressed",
        `sealed for topic '${p.topic}', found on '${topic}' (envelope topic '${env.topic}')`,
      );
    }
    const now = clock.now();
    if (env.timestamp < now - windowMs || env.timestamp > now + skewMs) {
      throw new SealedError(
        "replay_window",
        `timestamp ${env.timestamp} is outside the window [now-${windowMs} ms, now+${skewMs} ms] (now ${now})`,
      );
    }
  }

  function check(
    env: Envelope,
    topic: string,
  ): SealedFields | Promise<SealedFields> {
    const p = parseSealed(env.payload, heads, wire);
    noteHead(p);
    checkRouting(env, topic, p);
    const unreadable = (err: unknown) =>
      new SealedError(
        "unknown_sender",
        `the key of sender '${p.from}' cannot be read: ${
          (err as Error).message
        }`,
      );
    let answer: Promise<SealingPeer | undefined>;
    try {
      answer = keys.directory.lookup(p.from);
    } catch (err) {
      throw unreadable(err);
    }
    const sender = senders.get(answer);
    if (sender) return checkWith(env, p, sender);
    own(p);
    return answer.then((sender) => {
      if (sender) senders.set(answer, sender);
      return checkWith(env, p, sender);
    }, (err) => {
      throw unreadable(err);
    });
  }

  function checkWith(
    env: Envelope,
    p: SealedFields,
    sender: SealingPeer | undefined,
  ): SealedFields {
    if (!sender) {
      throw new SealedError(
        "unknown_sender",
        `sender '${p.from}' has no published key`,
      );
    }
    authenticate(sender.ed25519, p, digestOf(env, p.bytes, 0, p.ctEnd));
    return p;
  }

  function open(env: Envelope, topic: string): Envelope | Promise<Envelope> {
    const checked = check(env, topic);
    return checked instanceof Promise
      ? checked.then((c) => openChecked(env, c))
      : openChecked(env, checked);
  }

  function openChecked(
    env: Envelope,
    p: SealedFields,
  ): Envelope | Promise<Envelope> {
    if (!keys.id || !keys.x25519) {
      throw new SealedError(
        "not_recipient",
        "this opener has no recipient id or X25519 key",
      );
    }
    const mine = p.wraps.find((w) => w.r === keys.id);
    if (!mine) {
      throw new SealedError(
        "not_recipient",
        `'${keys.id}' is not among the recipients [${
          p.wraps.map((w) => w.r).join(", ")
        }]`,
      );
    }
    const known = knownKey(p, mine);
    if (known) return decrypt(env, p, known);
    const cacheKey = sessionName(p, mine);
    const cached = sessionKeys.get(cacheKey);
    const noKey = (err: unknown) =>
      new SealedError(
        "no_key",
        `this node's X25519 key does not open its wrap for '${keys.id}' (key replaced since the sender looked it up?): ${
          (err as Error).message
        }`,
      );
    own(p);
    let pending: Promise<Uint8Array>;
    try {
      pending = cached?.pending ?? unwrap(p, mine, keys.x25519, cacheKey);
    } catch (err) {
      throw noKey(err);
    }
    return pending.then((key) => decrypt(env, p, key), (err) => {
      throw noKey(err);
    });
  }

  /** The wrap's enc and key, which lie together in the head. */
  function wrapOf(p: SealedFields, mine: SealedWrap): Uint8Array {
    const at = mine.enc.byteOffset - p.head.byteOffset;
    return p.head.subarray(at, at + ENC_BYTES + 1 + mine.k.length);
  }

  function sessionName(p: SealedFields, mine: SealedWrap): string {
    return `${p.from}|${p.session.toBase64(B64)}|${
      wrapOf(p, mine).toBase64(B64)
    }`;
  }

  /** The session key of `p`'s wrap `mine` if it was unwrapped before. */
  function knownKey(
    p: SealedFields,
    mine: SealedWrap,
  ): Uint8Array | undefined {
    // The same head (decoded once, shared): the same sender, session and wrap.
    if (last?.head === p.head) return last.key;
    const wrap = wrapOf(p, mine);
    if (
      last && last.from === p.from && equalBytes(last.session, p.session) &&
      equalBytes(last.wrap, wrap)
    ) {
      last.head = p.head;
      return last.key;
    }
    const cached = sessionKeys.get(sessionName(p, mine));
    if (!cached?.key) return undefined;
    last = {
      head: p.head,
      from: p.from,
      session: p.session,
      wrap,
      key: cached.key,
    };
    return cached.key;
  }

  // The session key opened last and what named it: the messages of one
  // session, one after another, skip building the cache's name (and, with
  // the head decoded for one of them, comparing its bytes).
  let last:
    | {
      head: Uint8Array;
      from: string;
      session: Uint8Array;
      wrap: Uint8Array;
      key: Uint8Array;
    }
    | undefined;

  // Key streams of recent batches: a batch's members arrive together, and
  // one ChaCha20 call for the rest of the batch costs what one per message
  // costs in cipher objects (the bytes themselves are cheap).
  const streams: {
    key: Uint8Array;
    n: number;
    start: number;
    end: number;
    stream: Uint8Array;
    /** The stream a word at a time, when it starts on a 4-byte boundary. */
    words: Uint32Array | undefined;
  }[] = [];
  const MAX_STREAMS = 8;
  let scratch = new Uint8Array(4096);
  let scratchWords = new Uint32Array(scratch.buffer);

  function decipher(key: Uint8Array, p: SealedFields): Uint8Array {
    const ct = p.bytes.subarray(p.ctAt, p.ctEnd);
    const blocks = Math.ceil(ct.length / 64);
    let s = streams.find((s) =>
      s.key === key && s.n === p.n && s.start <= p.block &&
      p.block + blocks <= s.end
    );
    if (!s) {
      // This message and, if it is not the batch's last, room for each later
      // member: the larger of its size and the mean of the members before it
      // (their blocks end where it starts), and a tenth more for sizes varying.
      // A member past the end makes a stream of its own.
      const later = p.m - 1 - p.i;
      const per = p.i > 0 ? Math.max(blocks, Math.ceil(p.block / p.i)) : blocks;
      const want = blocks + Math.ceil(per * later * 1.1);
      const end = Math.min(p.block + Math.min(want, 4096), 0x1_0000_0000);
      const length = Math.max(end - p.block, blocks) * 64;
      // The key stream is ChaCha20 over zeros: one zero buffer, never written.
      const stream = chacha20(
        key,
        nonceOf(p.n),
        p.block,
        length <= ZEROS.length
          ? ZEROS.subarray(0, length)
          : new Uint8Array(length),
      );
      s = {
        key,
        n: p.n,
        start: p.block,
        end,
        stream,
        words: stream.byteOffset % 4 === 0
          ? new Uint32Array(
            stream.buffer,
            stream.byteOffset,
            stream.length >>> 2,
          )
          : undefined,
      };
      if (later > 0) {
        if (streams.length >= MAX_STREAMS) streams.shift();
        streams.push(s);
      }
    }
    const at = (p.block - s.start) * 64;
    // Into a scratch buffer: the plaintext is decoded to a string at once.
    if (scratch.length < ct.length) {
      scratch = new Uint8Array(Math.max(ct.length, scratch.length * 2));
      scratchWords = new Uint32Array(scratch.buffer);
    }
    const plain = scratch.subarray(0, ct.length);
    plain.set(ct);
    let j = 0;
    if (s.words) {
      // Four bytes at a time (the scratch and each block start aligned).
      const words = plain.length >>> 2, from = at >>> 2;
      const src = s.words;
      for (; j < words; j++) scratchWords[j] ^= src[from + j];
      j = words * 4;
    }
    for (; j < plain.length; j++) plain[j] ^= s.stream[at + j];
    return plain;
  }

  function decrypt(
    env: Envelope,
    p: SealedFields,
    key: Uint8Array,
  ): Envelope {
    // The sender's signature over the ciphertext held (checked first):
    // what does not decrypt to JSON was encrypted under another key than
    // the one wrapped for us.
    return opened(env, p.from, decipher(key, p));
  }

  /** The delivered envelope: `plain` parsed as its payload, from `from`. */
  function opened(env: Envelope, from: string, plain: Uint8Array): Envelope {
    let payload: unknown;
    try {
      payload = JSON.parse(decoder.decode(plain));
    } catch {
      throw new SealedError(
        "tampered",
        `the payload does not open for '${keys.id}': it decrypts to no UTF-8 JSON (encrypted under another key than the one wrapped for '${keys.id}')`,
      );
    }
    options.onOpened?.();
    // The headers without the format's and with the sender's, built in one
    // pass (a rest pattern with a computed key is V8's slow path).
    const headers: Record<string, string> = {};
    for (const name in env.headers) {
      if (name !== SEALED_HEADER) headers[name] = env.headers[name];
    }
    headers[SEALED_FROM_HEADER] = from;
    return { ...env, headers, payload };
  }

  function unwrap(
    p: SealedFields,
    mine: SealedWrap,
    x25519: HpkeKeyPair,
    cacheKey: string,
  ): Promise<Uint8Array> {
    const aad = encoder.encode(
      JSON.stringify([p.from, p.session.toBase64(B64), keys.id]),
    );
    const entry: { pending: Promise<Uint8Array>; key?: Uint8Array } = {
      pending: hpkeOpen(x25519, mine.enc, INFO, aad, mine.k),
    };
    if (sessionKeys.size >= MAX_SESSION_KEYS) {
      deleteOldest(sessionKeys);
    }
    sessionKeys.set(cacheKey, entry);
    entry.pending.then(
      (key) => entry.key = key,
      () => sessionKeys.delete(cacheKey),
    );
    return entry.pending;
  }

  const worker = options.worker;
  return {
    check,
    open: worker
      ? (env: Envelope, topic: string) => openOn(worker, env, topic)
      : open,
  };

  /**
   * Messages arriving together (in one turn of the event loop, as a
   * transport hands over what one read returned), their leaf inputs laid
   * out in one buffer for the worker.
   */
  interface OpenJob {
    buf: Uint8Array<ArrayBuffer>;
    used: number;
    items: number[];
    keys: Uint8Array[];
    count: number;
    ready: PromiseWithResolvers<OpenPlan>;
  }

  /**
   * {@linkcode open} with the digests, batch proofs and decryption on the
   * worker: a message whose sender key and session key are known and which
   * passes the checks made here (shape, topic, window, recipient) joins this
   * turn's job; any other takes {@linkcode open} in this thread, which
   * waits for keys or refuses it with the same reasons in the same order.
   */
  function openOn(
    w: SealedWorker,
    env: Envelope,
    topic: string,
  ): Envelope | Promise<Envelope> {
    const payload = env.payload;
    if (typeof payload !== "string" || !keys.id) return open(env, topic);
    const routing = routingText(env);
    const j = jobWith(
      routing.length * 3 + Math.ceil(payload.length / 4) * 3,
    );
    const routingAt = j.used;
    const payloadAt = routingAt +
      encoder.encodeInto(routing, j.buf.subarray(routingAt)).written;
    let bytes: Uint8Array | undefined;
    try {
      const { read, written } = j.buf.subarray(payloadAt).setFromBase64(
        payload,
        B64_IN,
      );
      if (read === payload.length) {
        bytes = j.buf.subarray(payloadAt, payloadAt + written);
      }
    } catch { /* refused by open */ }
    if (bytes?.[0] !== SEALED_FORMAT) return open(env, topic);
    let p: SealedFields;
    try {
      p = decodeSealed(bytes, heads);
    } catch {
      return open(env, topic);
    }
    noteHead(p);
    checkRouting(env, topic, p);
    let answer: Promise<SealingPeer | undefined>;
    try {
      answer = keys.directory.lookup(p.from);
    } catch {
      return open(env, topic);
    }
    const sender = senders.get(answer);
    const mine = p.wraps.find((w) => w.r === keys.id);
    const key = sender && mine && knownKey(p, mine);
    if (!key) return open(env, topic);
    j.used = payloadAt + bytes.length;
    const k = j.count++;
    let keyAt = j.keys.indexOf(key);
    if (keyAt < 0) keyAt = j.keys.push(key) - 1;
    j.items.push(
      routingAt,
      payloadAt,
      payloadAt + p.ctAt,
      payloadAt + p.ctEnd,
      p.i,
      p.m,
      payloadAt + p.pathAt,
      p.pathLength,
      w.sender(p.from, sender.ed25519),
      keyAt,
      p.n,
      p.block,
      0,
    );
    const from = p.from;
    return j.ready.promise.then((plan) => {
      const o = k * OPEN_ITEM;
      const outcome = plan.items[o + OPEN_ITEM - 1];
      if (outcome !== 0) {
        throw new SealedError(
          outcome === 1 ? "malformed" : "bad_signature",
          plan.errors?.[k] ?? "the batch proof does not hold",
        );
      }
      return opened(
        env,
        from,
        plan.buf.subarray(plan.items[o + 2], plan.items[o + 3]),
      );
    });
  }

  /** This turn's job, with room for `bytes` more. */
  function jobWith(bytes: number): OpenJob {
    let j = job;
    if (j && j.count >= OPEN_JOB_MAX) {
      sendJob(j);
      j = undefined;
    }
    if (!j) {
      const fresh: OpenJob = j = job = {
        buf: spareJobBuffers.pop() ?? new Uint8Array(OPEN_JOB_BYTES),
        used: 0,
        items: [],
        keys: [],
        count: 0,
        ready: Promise.withResolvers<OpenPlan>(),
      };
      queueMicrotask(() => {
        if (job === fresh) sendJob(fresh);
      });
    }
    if (j.buf.length < j.used + bytes) {
      const buf = new Uint8Array(Math.max(j.used + bytes, j.buf.length * 2));
      buf.set(j.buf.subarray(0, j.used));
      j.buf = buf;
    }
    return j;
  }

  function sendJob(j: OpenJob): void {
    if (job === j) job = undefined;
    if (j.count === 0) {
      spareJobBuffers.push(j.buf);
      return;
    }
    worker!.open({ buf: j.buf, items: new Float64Array(j.items), keys: j.keys })
      .then((plan) => {
        j.ready.resolve(plan);
        // After each member's continuation (queued before this) took its
        // plaintext.
        queueMicrotask(() => {
          if (spareJobBuffers.length < 4) spareJobBuffers.push(plan.buf);
        });
      }, (err) => j.ready.reject(err));
  }
}

/**
 * The sealed payload of a delivery decoded (its bytes in `wire`, grown to
 * fit), or the refusal: `not_sealed`
 * for a plain payload, `malformed` for one that claims to be sealed but
 * does not decode (format 2, the JSON object written before format 3, is
 * refused so: docs/wire-format.md).
 */
function parseSealed(
  payload: unknown,
  known: readonly SealedFields[],
  wire: { bytes: Uint8Array },
): SealedFields {
  if (typeof payload === "string") {
    let bytes: Uint8Array | undefined;
    const most = Math.ceil(payload.length / 4) * 3;
    if (wire.bytes.length < most) {
      wire.bytes = new Uint8Array(Math.max(most, wire.bytes.length * 2));
    }
    try {
      const { read, written } = wire.bytes.setFromBase64(payload, B64_IN);
      if (read === payload.length) bytes = wire.bytes.subarray(0, written);
    } catch { /* a plain string */ }
    if (bytes?.[0] !== SEALED_FORMAT) {
      throw new SealedError(
        "not_sealed",
        "the topic is sealed but the payload is a plain string",
      );
    }
    try {
      return decodeSealed(bytes, known);
    } catch (err) {
      throw new SealedError(
        "malformed",
        `the sealed payload does not decode: ${(err as Error).message}`,
      );
    }
  }
  if (
    payload !== null && typeof payload === "object" && !Array.isArray(payload)
  ) {
    const p = payload as Record<string, unknown>;
    if (p.v === "2") {
      throw new SealedError(
        "malformed",
        "sealed format 2 (a JSON object) is no longer read: seal with format 3 (a node and SDK of 2026-12-07 or later)",
      );
    }
    if (p.v !== undefined || p.sig !== undefined || p.ct !== undefined) {
      throw new SealedError(
        "malformed",
        `unknown sealed format '${String(p.v)}'`,
      );
    }
  }
  throw new SealedError(
    "not_sealed",
    "the topic is sealed but the payload is plain",
  );
}

/**
 * The message's digest, the Merkle leaf its batch signature covers: SHA-256
 * over its **header** (the leaf tag 0x00, a context string, the envelope's
 * routing fields as JSON, self-delimiting, then the payload's bytes up to the
 * ciphertext: format, sender, topic, session, wraps, batch number, block,
 * ciphertext length) and the ciphertext; `bytes[start, ctEnd)` is those
 * bytes and the ciphertext, in order.
 */
function digestOf(
  env: Envelope,
  bytes: Uint8Array,
  start: number,
  ctEnd: number,
): Uint8Array {
  const routing = routingText(env);
  // One `update` over one buffer: a second costs more than copying the
  // ~1.2 KB after the routing fields' bytes. The digest read as hex: the
  // polyfill copies a binary digest into a Buffer a byte at a time.
  const most = routing.length * 3 + ctEnd - start;
  if (digestInput.length < most) {
    digestInput = new Uint8Array(Math.max(most, digestInput.length * 2));
  }
  const at = encoder.encodeInto(routing, digestInput).written;
  digestInput.set(bytes.subarray(start, ctEnd), at);
  return Uint8Array.fromHex(
    createHash("sha256").update(digestInput.subarray(0, at + ctEnd - start))
      .digest("hex"),
  );
}
/**
 * The start of a message's leaf digest input: the leaf tag, the context and
 * the envelope's routing fields as JSON (self-delimiting).
 */
function routingText(env: Envelope): string {
  return LEAF_PREFIX + JSON.stringify([
    env.id,
    env.type,
    env.topic,
    env.source,
    env.timestamp,
    env.correlationId ?? null,
    env.replyTo ?? null,
    env.destination ?? null,
  ]);
}

/** Where a digest's input is put together, reused. */
let digestInput = new Uint8Array(4096);

/** Senders' Ed25519 keys as `node:crypto` keys, for its synchronous verify. */
const publicKeys = new WeakMap<CryptoKey, KeyObject>();
function publicKeyOf(key: CryptoKey): KeyObject {
  let k = publicKeys.get(key);
  if (!k) publicKeys.set(key, k = KeyObject.from(key));
  return k;
}
