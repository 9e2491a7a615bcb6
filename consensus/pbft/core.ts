/**
 * The deterministic PBFT state machine (Castro & Liskov, OSDI 1999 and TOCS
 * 2002): inputs are messages ({@linkcode PbftNode.step}), client requests
 * ({@linkcode PbftNode.request}), checkpoints of the application state
 * ({@linkcode PbftNode.checkpoint}) and ticks ({@linkcode PbftNode.tick});
 * outputs come out as a {@linkcode PbftReady}: records to persist, messages
 * to send after that, a state to install and batches to execute. No clock,
 * randomness or I/O inside; cryptography is injected ({@linkcode PbftAuth}).
 *
 * - Normal case: pre-prepare, prepare, commit with quorums of 2f + 1, in a
 *   window of L sequence numbers above the stable checkpoint; the primary
 *   batches pending requests, at most `maxInflight` batches unexecuted.
 * - Checkpoints every `checkpointInterval` requests (K; after the batch that
 *   reaches K since the last one, or after half a window of sequence
 *   numbers if batches are empty), signed; 2f + 1
 *   matching ones make it stable and the log below it is dropped.
 * - View change as in TOCS 2002 §4.5: each VIEW-CHANGE carries the P set
 *   (latest prepared digest per sequence number) and the Q set (digests
 *   pre-prepared, with their batches) and is signed, as is its stable
 *   checkpoint's proof; the new primary's NEW-VIEW carries the view changes
 *   it used, and every replica recomputes the new view's pre-prepares from
 *   them with rules A1/A2 (a request, else a null request, else wait for
 *   more view changes).
 * - State transfer: a replica that learns of a stable checkpoint it has not
 *   executed fetches the state from the others and installs the first one
 *   whose digest matches the proven one.
 *
 * @module
 */
import type {
  Checkpoint,
  ClientResult,
  Executed,
  NewView,
  PbftAuth,
  PbftMessage,
  PbftPayload,
  PbftReady,
  PbftRecord,
  PbftRequest,
  PreparedEntry,
  PrePreparedEntry,
  StableCheckpoint,
  ViewChange,
} from "./types.ts";
import { deleteOldest } from "../../core/oldest.ts";

/** Options for {@linkcode createPbft}. */
export interface PbftOptions {
  /** This replica's id; must be in `replicas`. */
  id: string;
  /** Every replica, in a fixed order: the primary of view v is `replicas[v mod n]`. n ≥ 3f + 1. */
  replicas: string[];
  /** Digest, MACs and signatures. */
  auth: PbftAuth;
  /**
   * Take a checkpoint every this many requests (K): after the first batch
   * that brings the requests executed since the last checkpoint to K, or
   * after `window / 2` sequence numbers without one (empty batches), so the
   * window always moves. @default {16}
   */
  checkpointInterval?: number;
  /** Sequence numbers accepted above the stable checkpoint (L, at least 2). @default {4 · checkpointInterval} */
  window?: number;
  /** Requests per batch at most. @default {64} */
  maxBatch?: number;
  /** Batches the primary leaves unexecuted at most before it holds requests back (they batch up). @default {4} */
  maxInflight?: number;
  /** Ticks a request may wait (or a view change last) before moving to the next view; doubles per view change without progress. @default {20} */
  viewChangeTicks?: number;
  /** The view-change timeout doubles at most this many times. @default {3} */
  maxBackoff?: number;
  /** Ticks between re-sends of a view change or a state fetch. @default {5} */
  retransmitTicks?: number;
  /** What the driver persisted before a restart, in order. */
  storage?: PbftRecord[];
  /**
   * BROKEN ON PURPOSE, for tests only: the replicas (pre-prepare included)
   * that make a request prepared. Correct is 2f + 1.
   */
  unsafePrepareQuorum?: number;
  /**
   * BROKEN ON PURPOSE, for tests only: the new view takes, for each
   * sequence number, the prepared claim with the highest view that some
   * view change backs with its batch, skipping rules A1 and A2 (the
   * "trust the newest certificate" shortcut, unsafe without signed
   * certificates).
   */
  unsafeNewestClaim?: boolean;
  /**
   * BROKEN ON PURPOSE, for tests only: take requests without checking their
   * clients' signatures (a Byzantine primary can then order made-up ones).
   */
  unsafeTrustRequests?: boolean;
}

/** What a replica tells about itself, for tests and dashboards. */
export interface PbftStatus {
  id: string;
  view: number;
  primary: string;
  /** True between sending a view change and accepting the new view. */
  changing: boolean;
  /** Last executed sequence number. */
  executed: number;
  /** The stable checkpoint (low water mark). */
  stable: number;
  /** Requests known and not yet executed. */
  pending: number;
  /** True while fetching a state. */
  fetching: boolean;
}

interface Slot {
  pp?: { digest: string; batch: PbftRequest[] };
  prepares: Map<string, string>;
  commits: Map<string, string>;
  prepared: boolean;
  committed: boolean;
}

/**
 * What rules A1/A2 give for a new view: its checkpoint and pre-prepares.
 * An entry's batch is missing when this replica does not hold it; `holders`
 * are the replicas whose view changes name it (at least one honest).
 */
interface Decision {
  stable: StableCheckpoint;
  entries: {
    seq: number;
    digest: string;
    batch?: PbftRequest[];
    holders: string[];
  }[];
}

const GENESIS: StableCheckpoint = { seq: 0, digest: "", proof: [] };
/** Digests a replica keeps per sequence number in its Q set (a VIEW-CHANGE may carry up to this many per number). */
const Q_PER_SEQ = 4;
/**
 * Stable checkpoints between rewrites of the record file: a rewrite holds a
 * window of batches, so doing it at every checkpoint wrote each batch many
 * times over.
 */
const COMPACT_EVERY = 4;

function reqKey(r: PbftRequest): string {
  return `${r.client}\u0000${r.t}`;
}

function isRequest(r: unknown): r is PbftRequest {
  const x = r as PbftRequest;
  return typeof x === "object" && x !== null &&
    typeof x.client === "string" && Number.isSafeInteger(x.t) &&
    typeof x.op === "string" && typeof x.sig === "string";
}

/**
 * A client's request overtaken by a later one of its own still runs if it
 * is among the client's last this many timestamps (the state machine keeps
 * the same window).
 */
export const RECENT_T = 16;

/**
 * Client signatures checked and remembered (each replica verifies a request
 * once), at most this many and this many characters of signed input (a
 * node's request can carry a MiB of operations).
 */
const VERIFIED_MAX = 16_384;
const VERIFIED_MAX_CHARS = 32 << 20;

function isBatch(b: unknown): b is PbftRequest[] {
  return Array.isArray(b) && b.every(isRequest);
}

const nat = (x: unknown): x is number =>
  Number.isSafeInteger(x) && x as number >= 0;

/**
 * Creates a replica.
 *
 * @example Usage
 * ```ts ignore
 * import { createPbft } from "./core.ts";
 * const node = createPbft({ id: "1", replicas: ["1", "2", "3", "4"], auth });
 * node.request(signRequest(clientAuth, { client: "c", t: 1, op: "x" }));
 * node.ready().messages.length; // 3 pre-prepares
 * ```
 */
export function createPbft(options: PbftOptions): PbftNode {
  return new PbftNode(options);
}

/**
 * One PBFT replica as a pure state machine. See the module doc.
 *
 * @example Usage
 * ```ts ignore
 * import { createPbft } from "./core.ts";
 * const node = createPbft({ id: "2", replicas: ["1", "2", "3", "4"], auth });
 * node.step(messageFromTheWire);
 * const rd = node.ready(); // persist, send, execute
 * ```
 */
export class PbftNode {
  readonly id: string;
  readonly replicas: string[];
  /** Byzantine replicas tolerated: ⌊(n − 1) / 3⌋. */
  readonly f: number;
  readonly checkpointInterval: number;
  readonly window: number;
  readonly #auth: PbftAuth;
  readonly #maxBatch: number;
  readonly #maxInflight: number;
  readonly #vcTicks: number;
  readonly #retransmitTicks: number;
  readonly #maxBackoff: number;
  readonly #prepareQuorum: number;
  readonly #newestClaim: boolean;
  readonly #trustRequests: boolean;

  #view = 0;
  #changing = false;
  #stable: StableCheckpoint = GENESIS;
  #stableData: string | undefined = "";
  #executed = 0;
  #lastAssigned = 0;
  #slots = new Map<number, Slot>();
  #committedBatches = new Map<
    number,
    { view: number; digest: string; batch: PbftRequest[] }
  >();
  #P = new Map<number, PreparedEntry>();
  #Q = new Map<number, Map<string, PrePreparedEntry>>();
  #checkpoints = new Map<number, Map<string, Checkpoint>>();
  #ownSnapshots = new Map<number, string>();
  #viewChanges = new Map<number, Map<string, ViewChange>>();
  #latestVcView = new Map<string, number>();
  #newView: NewView | undefined;
  #future: PbftMessage[] = [];
  #pending = new Map<string, PbftRequest>();
  #inflight = new Set<string>();
  /** Each client's highest executed `t`, and the recent ones below it that were skipped (not executed yet). */
  #executedT = new Map<string, number>();
  #gapsT = new Map<string, Set<number>>();
  #timer = 0;
  #backoff = 0;
  /** Ticks since this replica last executed something. */
  #stall = 0;
  /** Replicas seen working in a later view than this one's. */
  #ahead = new Set<string>();
  #ticks = 0;
  /** The last checkpoint position executed, and the requests executed since. */
  #lastCheckpoint = 0;
  #sinceCheckpoint = 0;
  #stablesSinceCompact = 0;
  /** When each replica's STATUS was last answered (in ticks). */
  #statusAnswered = new Map<string, number>();
  #fetch: { seq: number; elapsed: number } | undefined;
  /** A NEW-VIEW decided but not entered: batches it chose are being fetched. */
  #awaiting: { nv: NewView; d: Decision; askedAt: number } | undefined;
  /** Batches fetched for `#awaiting`, by `seq\0digest`. */
  #fetched = new Map<string, PbftRequest[]>();
  /** Executed batches above the stable checkpoint, for compaction. */
  #execLog = new Map<number, ExecRecord>();

  #out: PbftMessage[] = [];
  #persist: PbftRecord[] = [];
  /** Sequence numbers whose P record is in `#persist` (not handed out yet). */
  #freshP = new Set<number>();
  #compact: PbftRecord[] | undefined;
  #snapshot: { seq: number; data: string } | undefined;
  #exec: Executed[] = [];
  #replies: (ClientResult & { from: string; view: number })[] = [];
  /** Requests to relay and results to send, batched into one message each per Ready. */
  #relay: PbftRequest[] = [];
  #results = new Map<string, ClientResult[]>();
  #retried: PbftRequest[] = [];

  /** Client signatures verified here: sig → the input it was verified over. */
  #verified = new Map<string, string>();
  #verifiedChars = 0;
  /** Digests of requests' ops, by request object (checked against its op). */
  #opDigests = new WeakMap<PbftRequest, { op: string; digest: string }>();

  /** Messages dropped because their MAC, signature or shape was wrong. */
  rejected = 0;

  constructor(o: PbftOptions) {
    if (!o.replicas.includes(o.id)) {
      throw new RangeError(
        `Cannot create PBFT replica '${o.id}': not in replicas [${o.replicas}]`,
      );
    }
    if (new Set(o.replicas).size !== o.replicas.length) {
      throw new RangeError(
        `Cannot create PBFT replica '${o.id}': replicas [${o.replicas}] repeat an id`,
      );
    }
    this.id = o.id;
    this.replicas = [...o.replicas];
    this.f = Math.floor((this.replicas.length - 1) / 3);
    this.checkpointInterval = o.checkpointInterval ?? 16;
    this.window = o.window ?? 4 * this.checkpointInterval;
    if (!Number.isSafeInteger(this.window) || this.window < 2) {
      throw new RangeError(
        `Cannot create PBFT replica '${o.id}': window ${this.window} must be an integer of at least 2`,
      );
    }
    this.#auth = o.auth;
    this.#maxBatch = o.maxBatch ?? 64;
    this.#maxInflight = o.maxInflight ?? 4;
    this.#vcTicks = o.viewChangeTicks ?? 20;
    this.#retransmitTicks = o.retransmitTicks ?? 5;
    this.#maxBackoff = o.maxBackoff ?? 3;
    this.#prepareQuorum = o.unsafePrepareQuorum ?? this.quorum;
    this.#newestClaim = o.unsafeNewestClaim ?? false;
    this.#trustRequests = o.unsafeTrustRequests ?? false;
    if (o.storage) this.#restore(o.storage);
  }

  /** 2f + 1. */
  get quorum(): number {
    return 2 * this.f + 1;
  }

  /** The current view (the fencing epoch). */
  get view(): number {
    return this.#view;
  }

  /** The primary of the current view. */
  get primary(): string {
    return this.#primaryOf(this.#view);
  }

  /** A snapshot of this replica's state. */
  status(): PbftStatus {
    return {
      id: this.id,
      view: this.#view,
      primary: this.primary,
      changing: this.#changing,
      executed: this.#executed,
      stable: this.#stable.seq,
      pending: this.#pending.size,
      fetching: this.#fetch !== undefined,
    };
  }

  /** Whether {@linkcode ready} has anything. */
  hasReady(): boolean {
    return this.#out.length > 0 || this.#relay.length > 0 ||
      this.#results.size > 0 || this.#persist.length > 0 ||
      this.#compact !== undefined || this.#snapshot !== undefined ||
      this.#exec.length > 0 || this.#replies.length > 0 ||
      this.#retried.length > 0;
  }

  /** Takes the work accumulated since the last call (see {@linkcode PbftReady}). */
  ready(): PbftReady {
    if (this.#relay.length > 0) {
      this.#multicast({ type: "request", requests: this.#relay });
      this.#relay = [];
    }
    const { early, replies } = this.takeEarly();
    const rd: PbftReady = {
      persist: this.#persist,
      messages: this.#out,
      early,
      executed: this.#exec,
      replies,
      retried: this.#retried,
    };
    if (this.#compact) rd.compact = this.#compact;
    if (this.#snapshot) rd.snapshot = this.#snapshot;
    this.#persist = [];
    this.#freshP.clear();
    this.#out = [];
    this.#exec = [];
    this.#retried = [];
    this.#compact = undefined;
    this.#snapshot = undefined;
    return rd;
  }

  /**
   * Takes only what may leave before anything is persisted: results for
   * other replicas' clients and the replies for this node's (a
   * {@linkcode PbftReady}'s `early` and `replies`). A driver that applied
   * batches ahead of an fsync (see {@linkcode Executed.afterPersist}) sends
   * their results with this at once.
   */
  takeEarly(): Pick<PbftReady, "early" | "replies"> {
    const early: PbftMessage[] = [];
    for (const [proxy, results] of this.#results) {
      const payload = { type: "reply" as const, view: this.#view, results };
      early.push({
        from: this.id,
        to: proxy,
        payload,
        mac: this.#auth.mac(proxy, macInput(this.id, proxy, payload)),
      });
    }
    this.#results.clear();
    const replies = this.#replies;
    this.#replies = [];
    return { early, replies };
  }

  /**
   * A client request arriving at this replica: relayed to the others,
   * proposed by the primary. False when it is already known here (pending or
   * executed): answer a retry from the state machine's last reply.
   */
  request(r: PbftRequest, options: { retry?: boolean } = {}): boolean {
    if (!isRequest(r)) {
      throw new TypeError(
        `Cannot take PBFT request: expected {client, t, op, sig}, got ${
          JSON.stringify(r)
        }`,
      );
    }
    if (!this.#authentic(r)) {
      throw new TypeError(
        `Cannot take PBFT request ${r.client}/${r.t}: its signature is not the one of client signer '${
          requestSigner(r.client)
        }'`,
      );
    }
    // A client's retry goes out again: replicas that executed it answer
    // anew. An active primary need not relay: its pre-prepare will. A
    // backup does not take a retry as waiting here: after a state transfer
    // it cannot tell whether the state holds the request (its own copy was
    // dropped then), and a stale one would time out into a view change
    // nobody joins; the replicas it relays to watch the retry instead.
    const proposing = !this.#changing && this.primary === this.id;
    const fresh = options.retry && !proposing ? false : this.#addPending(r);
    if ((fresh && !proposing) || options.retry) this.#relay.push(r);
    if (!fresh && this.#wasExecuted(r)) this.#retried.push(r);
    this.#propose();
    return fresh;
  }

  /**
   * A request of a client this replica's node signs for (the client id
   * starts with this replica's id and a `/`), signed with this replica's
   * key and remembered as verified: handing it to {@linkcode request} then
   * costs no signature check.
   */
  ownRequest(client: string, t: number, op: string): PbftRequest {
    if (requestSigner(client) !== this.id) {
      throw new RangeError(
        `Cannot sign PBFT request of client '${client}' at replica '${this.id}': its signer is '${
          requestSigner(client)
        }'`,
      );
    }
    const opDigest = this.#auth.digest(op);
    const input = requestSignInput({ client, t }, opDigest);
    const r: PbftRequest = { client, t, op, sig: this.#auth.sign(input) };
    this.#opDigests.set(r, { op, digest: opDigest });
    this.#remember(r.sig, input);
    return r;
  }

  /**
   * Whether `r` counts as executed here: at or below its client's highest
   * executed `t` and not one of the gaps that request skipped (a request
   * overtaken by a later one of its client still runs if it is among the
   * client's last {@linkcode RECENT_T} timestamps; the state machine decides
   * the same way, see kv_state.ts).
   */
  #wasExecuted(r: PbftRequest): boolean {
    const max = this.#executedT.get(r.client);
    if (max === undefined || r.t > max) return false;
    if (r.t <= max - RECENT_T) return true;
    return !(this.#gapsT.get(r.client)?.has(r.t) ?? false);
  }

  #markExecuted(r: PbftRequest): void {
    const max = this.#executedT.get(r.client);
    let gaps = this.#gapsT.get(r.client);
    if (max === undefined || r.t > max) {
      for (let t = Math.max((max ?? 0) + 1, r.t - RECENT_T + 1); t < r.t; t++) {
        if (!gaps) this.#gapsT.set(r.client, gaps = new Set());
        gaps.add(t);
      }
      if (gaps) {
        for (const t of gaps) if (t <= r.t - RECENT_T) gaps.delete(t);
      }
      this.#executedT.set(r.client, r.t);
    } else gaps?.delete(r.t);
    if (gaps?.size === 0) this.#gapsT.delete(r.client);
  }

  /**
   * Sends a result for `client`'s request `t` to `proxy`, the replica that
   * relayed it for the client: its digest only, unless `full` (the answer
   * to a retry: the proxy may not have executed the request itself).
   */
  reply(
    proxy: string,
    client: string,
    t: number,
    result: string,
    options: { full?: boolean } = {},
  ): void {
    const digest = this.#auth.digest(result);
    if (proxy === this.id) {
      this.#replies.push({
        client,
        t,
        digest,
        result,
        view: this.#view,
        from: this.id,
      });
    } else if (this.replicas.includes(proxy)) {
      let list = this.#results.get(proxy);
      if (!list) this.#results.set(proxy, list = []);
      list.push(
        options.full ? { client, t, digest, result } : {
          client,
          t,
          digest,
        },
      );
    }
  }

  /**
   * After applying an {@linkcode Executed} with `checkpoint` set: the
   * application's state at `seq`, serialised the same way on every replica.
   */
  checkpoint(seq: number, data: string): void {
    if (seq > this.#executed) return;
    const digest = this.#auth.digest(data);
    if (
      seq === this.#stable.seq && this.#stableData === undefined &&
      digest === this.#stable.digest
    ) {
      // Stable before the driver handed this state over: no fetch needed.
      this.#makeStable(this.#stable, data);
      return;
    }
    if (seq <= this.#stable.seq) return;
    this.#ownSnapshots.set(seq, data);
    const c = this.#signed<Checkpoint>({
      type: "checkpoint",
      seq,
      digest,
      replica: this.id,
      sig: "",
    });
    this.#multicast(c);
    this.#onCheckpoint(c);
  }

  /** One tick of the logical clock: view-change timer, re-sends. */
  tick(): void {
    this.#ticks++;
    if (this.#fetch && ++this.#fetch.elapsed >= this.#retransmitTicks) {
      this.#fetch.elapsed = 0;
      this.#multicast({ type: "fetch-state", seq: this.#fetch.seq });
    }
    const timeout = this.#vcTicks *
      2 ** Math.min(this.#backoff, this.#maxBackoff);
    if (this.#changing) {
      // The new-view timer runs only once 2f + 1 replicas have left for this
      // view or a later one (OSDI 1999 §4.5.2): otherwise one replica with a
      // fast clock would race ahead through views alone.
      let support = 0;
      for (const v of this.#latestVcView.values()) {
        if (v >= this.#view) support++;
      }
      if (support >= this.quorum) this.#timer++;
      if (this.#timer >= timeout) return this.#startViewChange(this.#view + 1);
      if (++this.#stall % this.#retransmitTicks === 0) {
        const mine = this.#viewChanges.get(this.#view)?.get(this.id);
        if (mine) this.#multicast(mine);
        if (this.#awaiting) this.#askBatches(true);
        if (this.#primaryOf(this.#view) === this.id) this.#tryNewView();
      }
      return;
    }
    if (++this.#stall % this.#retransmitTicks === 0) {
      this.#retransmit();
      // f + 1 replicas work in a later view: ask for its NEW-VIEW.
      if (this.#ahead.size >= this.f + 1) {
        this.#multicast({
          type: "status",
          view: this.#view,
          executed: this.#executed,
        });
      }
    }
    if (this.#pending.size === 0) {
      this.#timer = 0;
      return;
    }
    this.#timer++;
    if (this.#timer >= timeout) return this.#startViewChange(this.#view + 1);
    // Half-way, remind the primary of what waits (it may have missed it).
    if (
      this.#timer === Math.floor(timeout / 2) && this.primary !== this.id
    ) {
      this.#send(this.primary, {
        type: "request",
        requests: [...this.#pending.values()],
      });
    }
    this.#propose();
  }

  /** A message from another replica. Unauthentic or malformed ones are dropped and counted in `rejected`. */
  step(m: PbftMessage): void {
    if (
      m.to !== this.id || m.from === this.id ||
      !this.replicas.includes(m.from) || typeof m.payload !== "object" ||
      m.payload === null ||
      !this.#auth.checkMac(m.from, macInput(m.from, m.to, m.payload), m.mac)
    ) {
      this.rejected++;
      return;
    }
    const p = m.payload;
    switch (p.type) {
      case "request":
        if (!Array.isArray(p.requests) || !p.requests.every(isRequest)) {
          return this.#reject();
        }
        for (const r of p.requests) {
          // A relay may carry a request no client made: drop it alone.
          if (!this.#authentic(r)) {
            this.#reject();
            continue;
          }
          if (!this.#addPending(r) && this.#wasExecuted(r)) {
            this.#retried.push(r);
          }
        }
        this.#propose();
        return;
      case "pre-prepare":
      case "prepare":
      case "commit":
        return this.#onNormal(m);
      case "checkpoint":
        // Signed, so one replica may pass on another's (status answers).
        if (!this.#validCheckpoint(p)) return this.#reject();
        return this.#onCheckpoint(p);
      case "status":
        if (!nat(p.view) || !nat(p.executed)) return this.#reject();
        return this.#onStatus(m.from, p.view, p.executed);
      case "view-change":
        if (p.replica !== m.from || !this.#validViewChange(p)) {
          return this.#reject();
        }
        return this.#onViewChange(p);
      case "new-view":
        return this.#onNewView(p);
      case "fetch-state":
        return this.#onFetch(m.from, p.seq);
      case "fetch-batch":
        if (!nat(p.seq) || typeof p.digest !== "string") return this.#reject();
        return this.#onFetchBatch(m.from, p.seq, p.digest);
      case "batch":
        return this.#onBatch(p);
      case "state":
        return this.#onState(p.stable, p.data);
      case "reply":
        if (
          !nat(p.view) || !Array.isArray(p.results) ||
          !p.results.every((x) =>
            nat(x?.t) && typeof x.client === "string" &&
            typeof x.digest === "string" &&
            (x.result === undefined ||
              (typeof x.result === "string" &&
                this.#auth.digest(x.result) === x.digest))
          )
        ) return this.#reject();
        for (const x of p.results) {
          this.#replies.push({
            client: x.client,
            t: x.t,
            digest: x.digest,
            ...(x.result === undefined ? {} : { result: x.result }),
            view: p.view,
            from: m.from,
          });
        }
        return;
      default:
        return this.#reject();
    }
  }

  // ---- normal case ---------------------------------------------------

  #onNormal(m: PbftMessage): void {
    const p = m.payload as PbftPayload & {
      view: number;
      seq: number;
      digest: string;
    };
    if (!nat(p.view) || !nat(p.seq) || typeof p.digest !== "string") {
      return this.#reject();
    }
    if (p.view > this.#view || (p.view === this.#view && this.#changing)) {
      // Early for a view this replica has not entered: keep a bounded few per sender.
      const held = this.#future.filter((x) => x.from === m.from).length;
      if (held < 2 * this.window) this.#future.push(m);
      if (p.view > this.#view) this.#ahead.add(m.from);
      return;
    }
    if (p.view < this.#view) return;
    if (p.seq <= this.#stable.seq || p.seq > this.#stable.seq + this.window) {
      return;
    }
    const slot = this.#slot(p.seq);
    if (p.type === "pre-prepare") {
      if (m.from !== this.primary || slot.pp) return;
      if (!isBatch(p.batch) || this.#digestOf(p.batch) !== p.digest) {
        return this.#reject();
      }
      // A primary that made up or altered a request: no prepare for it
      // (the waiting requests' timer then replaces the primary).
      if (!p.batch.every((r) => this.#authentic(r))) return this.#reject();
      this.#acceptPrePrepare(p.seq, p.digest, p.batch);
    } else if (p.type === "prepare") {
      if (m.from === this.primary) return;
      if (!slot.prepares.has(m.from)) slot.prepares.set(m.from, p.digest);
    } else {
      if (!slot.commits.has(m.from)) slot.commits.set(m.from, p.digest);
    }
    this.#advanceSlot(p.seq);
  }

  #slot(seq: number): Slot {
    let s = this.#slots.get(seq);
    if (!s) {
      s = {
        prepares: new Map(),
        commits: new Map(),
        prepared: false,
        committed: false,
      };
      this.#slots.set(seq, s);
    }
    return s;
  }

  #acceptPrePrepare(seq: number, digest: string, batch: PbftRequest[]): void {
    const slot = this.#slot(seq);
    slot.pp = { digest, batch };
    this.#addQ({ seq, view: this.#view, digest, batch });
    for (const r of batch) this.#inflight.add(reqKey(r));
    if (this.primary !== this.id) {
      slot.prepares.set(this.id, digest);
      this.#multicast({ type: "prepare", view: this.#view, seq, digest });
    }
  }

  #addQ(e: PrePreparedEntry): void {
    let byDigest = this.#Q.get(e.seq);
    if (!byDigest) this.#Q.set(e.seq, byDigest = new Map());
    const had = byDigest.get(e.digest);
    if (had && had.view >= e.view) return;
    byDigest.set(e.digest, e);
    this.#persist.push({ k: "q", ...e });
    trimQ(byDigest, this.#P.get(e.seq)?.digest);
  }

  #advanceSlot(seq: number): void {
    const slot = this.#slots.get(seq);
    if (!slot?.pp) return;
    const d = slot.pp.digest;
    if (!slot.prepared) {
      let n = 0;
      for (const v of slot.prepares.values()) if (v === d) n++;
      if (n < this.#prepareQuorum - 1) return;
      slot.prepared = true;
      const e = { seq, view: this.#view, digest: d };
      this.#P.set(seq, e);
      this.#persist.push({ k: "p", ...e });
      this.#freshP.add(seq);
      slot.commits.set(this.id, d);
      this.#multicast({ type: "commit", view: this.#view, seq, digest: d });
    }
    if (slot.committed) return;
    let n = 0;
    for (const v of slot.commits.values()) if (v === d) n++;
    if (n < this.quorum) return;
    slot.committed = true;
    if (seq > this.#executed) {
      this.#committedBatches.set(seq, {
        view: this.#view,
        digest: d,
        batch: slot.pp.batch,
      });
      this.#execute();
    }
  }

  /**
   * Whether executing `size` requests at `seq` ends at a checkpoint. Every
   * honest replica executes the same batches from the same stable
   * checkpoint (always a checkpoint position), so all find the same ones.
   */
  #countCheckpoint(seq: number, size: number): boolean {
    this.#sinceCheckpoint += size;
    if (
      this.#sinceCheckpoint < this.checkpointInterval &&
      seq - this.#lastCheckpoint < Math.floor(this.window / 2)
    ) return false;
    this.#lastCheckpoint = seq;
    this.#sinceCheckpoint = 0;
    return true;
  }

  #execute(): void {
    for (;;) {
      const next = this.#executed + 1;
      const c = this.#committedBatches.get(next);
      if (!c) break;
      this.#committedBatches.delete(next);
      this.#executed = next;
      const rec: ExecRecord = {
        k: "exec",
        seq: next,
        view: c.view,
        digest: c.digest,
      };
      this.#execLog.set(next, rec);
      this.#persist.push(rec);
      this.#exec.push({
        seq: next,
        ...c,
        checkpoint: this.#countCheckpoint(next, c.batch.length),
        ...(this.#freshP.has(next) ? { afterPersist: true } : {}),
      });
      for (const r of c.batch) {
        const k = reqKey(r);
        this.#pending.delete(k);
        this.#inflight.delete(k);
        this.#markExecuted(r);
      }
      this.#timer = 0;
      this.#backoff = 0;
      this.#stall = 0;
    }
    this.#propose();
  }

  /**
   * Nothing executed for a while: send again what this replica said about
   * each unexecuted sequence number, and its newest checkpoint not yet
   * stable (messages may have been lost; receivers ignore copies).
   */
  #retransmit(): void {
    for (const [seq, slot] of this.#slots) {
      if (seq <= this.#executed || !slot.pp) continue;
      const { digest, batch } = slot.pp;
      const view = this.#view;
      if (this.primary === this.id) {
        this.#multicast({ type: "pre-prepare", view, seq, digest, batch });
      } else this.#multicast({ type: "prepare", view, seq, digest });
      if (slot.prepared) this.#multicast({ type: "commit", view, seq, digest });
    }
    const newest = Math.max(this.#stable.seq, ...this.#ownSnapshots.keys());
    const own = this.#checkpoints.get(newest)?.get(this.id);
    if (own && newest > this.#stable.seq) this.#multicast(own);
    if (this.#pending.size > 0) {
      this.#multicast({
        type: "status",
        view: this.#view,
        executed: this.#executed,
      });
    }
  }

  /** A replica in this view that is behind: send it what it missed here. */
  #onStatus(from: string, view: number, executed: number): void {
    // One answer per sender per retransmit period: a STATUS can cost a window of messages.
    const last = this.#statusAnswered.get(from) ?? -Infinity;
    if (this.#changing || this.#ticks - last < this.#retransmitTicks) return;
    this.#statusAnswered.set(from, this.#ticks);
    if (view < this.#view) {
      if (this.#newView) this.#send(from, this.#newView);
      return;
    }
    if (view !== this.#view || executed >= this.#executed) return;
    if (executed < this.#stable.seq) {
      for (const c of this.#stable.proof) this.#send(from, c);
      return;
    }
    for (const [seq, slot] of this.#slots) {
      if (seq <= executed || !slot.pp) continue;
      const { digest, batch } = slot.pp;
      if (this.primary === this.id) {
        this.#send(from, { type: "pre-prepare", view, seq, digest, batch });
      } else this.#send(from, { type: "prepare", view, seq, digest });
      if (slot.prepared) {
        this.#send(from, { type: "commit", view, seq, digest });
      }
    }
  }

  #addPending(r: PbftRequest): boolean {
    const k = reqKey(r);
    if (
      this.#pending.has(k) || this.#wasExecuted(r) ||
      this.#pending.size >= 64 * this.window
    ) return false;
    this.#pending.set(k, r);
    return true;
  }

  #propose(): void {
    if (this.#changing || this.primary !== this.id || this.#fetch) return;
    while (
      this.#lastAssigned < this.#stable.seq + this.window &&
      this.#lastAssigned - this.#executed < this.#maxInflight
    ) {
      const batch: PbftRequest[] = [];
      for (const [k, r] of this.#pending) {
        if (this.#inflight.has(k)) continue;
        batch.push(r);
        if (batch.length >= this.#maxBatch) break;
      }
      if (batch.length === 0) return;
      const seq = Math.max(this.#lastAssigned, this.#stable.seq) + 1;
      this.#lastAssigned = seq;
      const digest = this.#digestOf(batch);
      this.#acceptPrePrepare(seq, digest, batch);
      this.#multicast({
        type: "pre-prepare",
        view: this.#view,
        seq,
        digest,
        batch,
      });
    }
  }

  // ---- checkpoints and state transfer --------------------------------

  #validCheckpoint(c: Checkpoint): boolean {
    return nat(c.seq) && c.seq > 0 && typeof c.digest === "string" &&
      typeof c.replica === "string" && this.replicas.includes(c.replica) &&
      typeof c.sig === "string" &&
      this.#auth.verify(c.replica, signInput(c), c.sig);
  }

  #validStable(s: StableCheckpoint): boolean {
    if (typeof s !== "object" || s === null || !nat(s.seq)) return false;
    if (s.seq === 0) return s.digest === "" && Array.isArray(s.proof);
    if (!Array.isArray(s.proof) || typeof s.digest !== "string") return false;
    const signers = new Set<string>();
    for (const c of s.proof) {
      if (
        c?.seq !== s.seq || c.digest !== s.digest ||
        signers.has(c.replica) || !this.#validCheckpoint(c)
      ) return false;
      signers.add(c.replica);
    }
    return signers.size >= this.quorum;
  }

  #onCheckpoint(c: Checkpoint): void {
    if (c.seq <= this.#stable.seq) return;
    let bySigner = this.#checkpoints.get(c.seq);
    if (!bySigner) this.#checkpoints.set(c.seq, bySigner = new Map());
    if (bySigner.has(c.replica)) return;
    // Bound what one replica can make us hold: its 8 highest checkpoints.
    const mine = [...this.#checkpoints].filter(([, m]) => m.has(c.replica));
    if (mine.length >= 8) {
      const lowest = Math.min(...mine.map(([s]) => s));
      if (lowest > c.seq) return;
      this.#checkpoints.get(lowest)!.delete(c.replica);
    }
    bySigner.set(c.replica, c);
    const proof = [...bySigner.values()].filter((x) => x.digest === c.digest);
    if (proof.length >= this.quorum) {
      this.#makeStable({ seq: c.seq, digest: c.digest, proof });
    }
  }

  /** Moves the low water mark to a proven checkpoint, fetching its state if not executed here. */
  #makeStable(s: StableCheckpoint, transferred?: string): void {
    // A transferred state may be for the checkpoint already stable here.
    if (
      s.seq < this.#stable.seq ||
      (s.seq === this.#stable.seq && transferred === undefined)
    ) return;
    this.#stable = { seq: s.seq, digest: s.digest, proof: s.proof };
    const own = transferred ?? this.#ownSnapshots.get(s.seq);
    const haveIt = own !== undefined &&
      (transferred !== undefined || this.#executed >= s.seq) &&
      this.#auth.digest(own) === s.digest;
    this.#stableData = haveIt ? own : undefined;
    for (const k of [...this.#slots.keys()]) {
      if (k <= s.seq) this.#slots.delete(k);
    }
    for (
      const m of [this.#P, this.#Q, this.#committedBatches, this.#execLog]
    ) {
      for (const k of [...m.keys()]) if (k <= s.seq) m.delete(k);
    }
    for (const k of [...this.#checkpoints.keys()]) {
      if (k <= s.seq) this.#checkpoints.delete(k);
    }
    for (const k of [...this.#ownSnapshots.keys()]) {
      if (k <= s.seq) this.#ownSnapshots.delete(k);
    }
    if (this.#lastAssigned < s.seq) this.#lastAssigned = s.seq;
    if (transferred !== undefined) {
      this.#fetch = undefined;
      if (this.#executed < s.seq) {
        this.#executed = s.seq;
        this.#lastCheckpoint = s.seq;
        this.#sinceCheckpoint = 0;
        this.#snapshot = { seq: s.seq, data: transferred };
        this.#exec = this.#exec.filter((e) => e.seq > s.seq);
        // What waited here may be in that state; the core cannot tell, and a
        // stale request would time out into a view change nobody else wants.
        // Clients re-send what still waits.
        this.#pending.clear();
      }
    }
    if (haveIt) {
      // Rewrite the whole file every few checkpoints; in between, append.
      if (++this.#stablesSinceCompact >= COMPACT_EVERY) this.#compactNow();
      else {
        this.#persist.push({
          k: "stable",
          seq: s.seq,
          digest: s.digest,
          proof: s.proof,
          data: own!,
        });
      }
    } else {
      // Behind (or diverged, which an honest replica cannot be): fetch it.
      // The proof is persisted now: what this replica accepts from here on
      // lies above it, and a restart must not pull the window back.
      this.#fetch = { seq: s.seq, elapsed: 0 };
      this.#multicast({ type: "fetch-state", seq: s.seq });
      this.#persist.push({
        k: "stable",
        seq: s.seq,
        digest: s.digest,
        proof: s.proof,
      });
    }
    this.#propose();
  }

  #compactNow(): void {
    const recs: PbftRecord[] = [
      {
        k: "view",
        view: this.#view,
        changing: this.#changing,
        newView: this.#newView,
      },
      {
        k: "stable",
        seq: this.#stable.seq,
        digest: this.#stable.digest,
        proof: this.#stable.proof,
        data: this.#stableData ?? "",
      },
    ];
    for (const byDigest of this.#Q.values()) {
      for (const e of byDigest.values()) recs.push({ k: "q", ...e });
    }
    for (const e of this.#P.values()) recs.push({ k: "p", ...e });
    recs.push(...[...this.#execLog.values()].sort((a, b) => a.seq - b.seq));
    this.#compact = recs;
    this.#persist = [];
    this.#stablesSinceCompact = 0;
  }

  #onFetch(from: string, seq: number): void {
    if (!nat(seq) || this.#stableData === undefined) return;
    if (this.#stable.seq < seq || this.#stable.seq === 0) return;
    this.#send(from, {
      type: "state",
      stable: this.#stable,
      data: this.#stableData,
    });
  }

  #onState(s: StableCheckpoint, data: string): void {
    if (!this.#fetch || typeof data !== "string") return;
    if (
      !this.#validStable(s) || s.seq < this.#fetch.seq ||
      this.#auth.digest(data) !== s.digest
    ) return this.#reject();
    this.#makeStable(s, data);
    this.#execute();
  }

  // ---- view change ---------------------------------------------------

  #primaryOf(view: number): string {
    return this.replicas[view % this.replicas.length];
  }

  #startViewChange(view: number): void {
    if (view <= this.#view && (this.#changing || view < this.#view)) return;
    this.#view = view;
    this.#changing = true;
    this.#timer = 0;
    this.#backoff++;
    this.#slots.clear();
    this.#inflight.clear();
    this.#newView = undefined;
    this.#awaiting = undefined;
    this.#persist.push({ k: "view", view, changing: true });
    const vc = this.#ownViewChange(view);
    this.#multicast(vc);
    this.#onViewChange(vc);
  }

  /** This replica's signed VIEW-CHANGE for `view`: its P set and its Q set's digests. */
  #ownViewChange(view: number): ViewChange {
    return this.#signed<ViewChange>({
      type: "view-change",
      view,
      replica: this.id,
      stable: this.#stable,
      prepared: [...this.#P.values()],
      prePrepared: [...this.#Q.values()].flatMap((m) =>
        [...m.values()].map(({ seq, view, digest }) => ({ seq, view, digest }))
      ),
      sig: "",
    });
  }

  #validViewChange(vc: ViewChange): boolean {
    if (
      !nat(vc.view) || vc.view === 0 || typeof vc.replica !== "string" ||
      !this.replicas.includes(vc.replica) || typeof vc.sig !== "string" ||
      !Array.isArray(vc.prepared) || !Array.isArray(vc.prePrepared) ||
      vc.prepared.length > this.window ||
      vc.prePrepared.length > Q_PER_SEQ * this.window ||
      !this.#validStable(vc.stable)
    ) return false;
    const lo = vc.stable.seq, hi = vc.stable.seq + this.window;
    const inRange = (e: { seq: number; view: number; digest: string }) =>
      nat(e?.seq) && e.seq > lo && e.seq <= hi && nat(e.view) &&
      e.view < vc.view && typeof e.digest === "string";
    const pSeqs = new Set<number>();
    for (const e of vc.prepared) {
      if (!inRange(e) || pSeqs.has(e.seq)) return false;
      pSeqs.add(e.seq);
    }
    for (const e of vc.prePrepared) if (!inRange(e)) return false;
    return this.#auth.verify(vc.replica, signInput(vc), vc.sig);
  }

  #onViewChange(vc: ViewChange): void {
    if (vc.view < this.#view) {
      // It is views behind (restarted, or cut off): show it the view we are in.
      if (!this.#changing && this.#newView && vc.replica !== this.id) {
        this.#send(vc.replica, this.#newView);
      }
      return;
    }
    let forView = this.#viewChanges.get(vc.view);
    if (!forView) this.#viewChanges.set(vc.view, forView = new Map());
    // The first one a replica sends for a view counts; a conflicting copy is ignored.
    if (!forView.has(vc.replica)) forView.set(vc.replica, vc);
    if ((this.#latestVcView.get(vc.replica) ?? -1) < vc.view) {
      this.#latestVcView.set(vc.replica, vc.view);
    }
    for (const v of [...this.#viewChanges.keys()]) {
      if (v < this.#view) this.#viewChanges.delete(v);
    }
    if (vc.replica !== this.id) {
      // f + 1 replicas want a later view: at least one honest does, so join.
      const later = [...this.#latestVcView.entries()]
        .filter(([r, v]) => r !== this.id && v > this.#view)
        .map(([, v]) => v);
      if (later.length >= this.f + 1) {
        const target = Math.min(...later);
        if (target > this.#view) return this.#startViewChange(target);
      }
    }
    if (vc.view !== this.#view) return;
    if (this.#changing) {
      if (this.#primaryOf(vc.view) === this.id) this.#tryNewView();
      return;
    }
    if (this.#newView && vc.replica !== this.id) {
      // It missed the NEW-VIEW; any replica may pass it on (it is signed).
      this.#send(vc.replica, this.#newView);
    }
  }

  #tryNewView(): void {
    const vcs = [...(this.#viewChanges.get(this.#view)?.values() ?? [])];
    const decision = this.#decide(vcs);
    if (!decision) return;
    const nv = this.#signed<NewView>({
      type: "new-view",
      view: this.#view,
      replica: this.id,
      viewChanges: vcs,
      sig: "",
    });
    this.#multicast(nv);
    this.#enterView(nv, decision);
  }

  /** Rules A1/A2 of TOCS 2002 §4.5 over a set of view changes; undefined when it cannot decide yet. */
  #decide(vcs: ViewChange[]): Decision | undefined {
    if (vcs.length < this.quorum) return undefined;
    let stable = vcs[0].stable;
    for (const m of vcs) if (m.stable.seq > stable.seq) stable = m.stable;
    const h = stable.seq;
    const pOf = vcs.map((m) => new Map(m.prepared.map((e) => [e.seq, e])));
    let maxS = h;
    for (const m of vcs) {
      for (const e of m.prepared) if (e.seq > maxS) maxS = e.seq;
    }
    const entries: Decision["entries"] = [];
    for (let n = h + 1; n <= maxS; n++) {
      const candidates = new Map<string, PreparedEntry>();
      for (const p of pOf) {
        const e = p.get(n);
        if (e) candidates.set(`${e.view}\u0000${e.digest}`, e);
      }
      const sorted = [...candidates.values()].sort((a, b) =>
        b.view - a.view || (a.digest < b.digest ? -1 : 1)
      );
      let chosen: Decision["entries"][number] | undefined;
      for (const c of sorted) {
        let a1 = 0;
        vcs.forEach((m, i) => {
          const e = pOf[i].get(n);
          if (
            m.stable.seq < n &&
            (!e || e.view < c.view ||
              (e.view === c.view && e.digest === c.digest))
          ) a1++;
        });
        if (a1 < this.quorum && !this.#newestClaim) continue;
        const holders: string[] = [];
        for (const m of vcs) {
          const q = m.prePrepared.find((e) =>
            e.seq === n && e.digest === c.digest && e.view >= c.view
          );
          if (q) holders.push(m.replica);
        }
        if (holders.length < this.f + 1 && !this.#newestClaim) continue;
        if (holders.length === 0) continue;
        // The batch itself: held here, or fetched from the holders (and
        // then checked like a pre-prepare's, see #onBatch).
        const batch = this.#batchFor(n, c.digest);
        // Never through a view change either: a batch with a request no
        // client signed cannot have been prepared by an honest replica.
        if (batch && !batch.every((r) => this.#authentic(r))) continue;
        chosen = { seq: n, digest: c.digest, batch, holders };
        break;
      }
      if (!chosen) {
        let none = 0;
        vcs.forEach((m, i) => {
          if (m.stable.seq < n && !pOf[i].has(n)) none++;
        });
        if (none < this.quorum) return undefined;
        chosen = {
          seq: n,
          digest: this.#digestOf([]),
          batch: [],
          holders: [],
        };
      }
      entries.push(chosen);
    }
    return { stable, entries };
  }

  #onNewView(nv: NewView): void {
    if (
      !nat(nv.view) || nv.replica !== this.#primaryOf(nv.view) ||
      typeof nv.sig !== "string" || !Array.isArray(nv.viewChanges)
    ) return this.#reject();
    if (nv.view < this.#view || (nv.view === this.#view && !this.#changing)) {
      return;
    }
    if (!this.#auth.verify(nv.replica, signInput(nv), nv.sig)) {
      return this.#reject();
    }
    const seen = new Set<string>();
    for (const vc of nv.viewChanges) {
      if (
        vc?.view !== nv.view || seen.has(vc.replica) ||
        !this.#validViewChange(vc)
      ) return this.#reject();
      seen.add(vc.replica);
    }
    const decision = this.#decide(nv.viewChanges);
    if (!decision) return this.#reject();
    this.#enterView(nv, decision);
  }

  #enterView(nv: NewView, d: Decision): void {
    const top = Math.max(this.#stable.seq, d.stable.seq);
    for (const e of d.entries) {
      if (e.seq > top && !e.batch) e.batch = this.#batchFor(e.seq, e.digest);
    }
    if (d.entries.some((e) => e.seq > top && !e.batch)) {
      // Still changing: the view is entered once every chosen batch is here.
      if (this.#view < nv.view || !this.#changing) {
        this.#view = nv.view;
        this.#changing = true;
        this.#timer = 0;
        this.#slots.clear();
        this.#inflight.clear();
        this.#persist.push({ k: "view", view: nv.view, changing: true });
      }
      const fresh = this.#awaiting?.nv.view !== nv.view;
      this.#awaiting = {
        nv,
        d,
        askedAt: fresh ? -Infinity : this.#awaiting!.askedAt,
      };
      this.#askBatches(false);
      return;
    }
    this.#awaiting = undefined;
    this.#fetched.clear();
    const view = nv.view;
    this.#view = view;
    this.#ahead.clear();
    this.#newView = nv;
    // Still changing while the checkpoint moves: nothing may be proposed yet.
    this.#changing = true;
    this.#slots.clear();
    this.#inflight.clear();
    if (d.stable.seq > this.#stable.seq) this.#makeStable(d.stable);
    this.#changing = false;
    this.#timer = 0;
    this.#persist.push({ k: "view", view, changing: false, newView: nv });
    let maxS = this.#stable.seq;
    for (const e of d.entries) {
      if (e.seq <= this.#stable.seq) continue;
      maxS = Math.max(maxS, e.seq);
      this.#acceptPrePrepare(e.seq, e.digest, e.batch!);
    }
    this.#lastAssigned = maxS;
    const early = this.#future;
    this.#future = [];
    for (const m of early) {
      const v = (m.payload as { view: number }).view;
      if (v === view) this.#onNormal(m);
      else if (v > view) this.#future.push(m);
    }
    this.#propose();
  }

  /** The batch with `digest` at `seq` if this replica holds it. */
  #batchFor(seq: number, digest: string): PbftRequest[] | undefined {
    return this.#Q.get(seq)?.get(digest)?.batch ??
      (this.#slots.get(seq)?.pp?.digest === digest
        ? this.#slots.get(seq)!.pp!.batch
        : undefined) ??
      (this.#committedBatches.get(seq)?.digest === digest
        ? this.#committedBatches.get(seq)!.batch
        : undefined) ??
      this.#fetched.get(`${seq}\u0000${digest}`);
  }

  /** Asks the holders for the batches the awaited new view lacks (again after a retransmit period). */
  #askBatches(again: boolean): void {
    const a = this.#awaiting!;
    if (!again && this.#ticks - a.askedAt < this.#retransmitTicks) return;
    a.askedAt = this.#ticks;
    for (const e of a.d.entries) {
      if (e.batch || e.seq <= this.#stable.seq) continue;
      const ask = {
        type: "fetch-batch" as const,
        seq: e.seq,
        digest: e.digest,
      };
      // Retries ask everyone: a holder may be silent, another may have it.
      for (const to of again ? this.replicas : e.holders) {
        if (to !== this.id) this.#send(to, ask);
      }
    }
  }

  #onFetchBatch(from: string, seq: number, digest: string): void {
    const batch = this.#batchFor(seq, digest);
    if (batch) this.#send(from, { type: "batch", seq, digest, batch });
  }

  #onBatch(p: { seq: number; digest: string; batch: PbftRequest[] }): void {
    const a = this.#awaiting;
    const e = a?.d.entries.find((x) =>
      x.seq === p.seq && x.digest === p.digest && !x.batch
    );
    if (!a || !e) return;
    if (
      !isBatch(p.batch) || this.#digestOf(p.batch) !== p.digest ||
      !p.batch.every((r) => this.#authentic(r))
    ) return this.#reject();
    this.#fetched.set(`${p.seq}\u0000${p.digest}`, p.batch);
    e.batch = p.batch;
    if (a.d.entries.every((x) => x.batch || x.seq <= this.#stable.seq)) {
      this.#enterView(a.nv, a.d);
    }
  }

  // ---- plumbing ------------------------------------------------------

  #restore(records: PbftRecord[]): void {
    let proven: StableCheckpoint | undefined;
    for (const r of records) {
      switch (r.k) {
        case "view":
          if (r.view >= this.#view) {
            this.#view = r.view;
            this.#changing = r.changing;
            this.#newView = r.newView;
          }
          break;
        case "stable":
          if (r.data === undefined) {
            // Proven, state not fetched yet: applied after the replay below.
            if (!proven || r.seq > proven.seq) proven = r;
          } else if (r.seq >= this.#stable.seq) {
            this.#stable = { seq: r.seq, digest: r.digest, proof: r.proof };
            this.#stableData = r.data;
            for (const m of [this.#P, this.#Q, this.#execLog]) {
              for (const k of [...m.keys()]) if (k <= r.seq) m.delete(k);
            }
          }
          break;
        case "q": {
          if (r.seq <= this.#stable.seq) break;
          let byDigest = this.#Q.get(r.seq);
          if (!byDigest) this.#Q.set(r.seq, byDigest = new Map());
          const { k: _, ...e } = r;
          byDigest.set(r.digest, e);
          break;
        }
        case "p": {
          if (r.seq <= this.#stable.seq) break;
          const { k: _, ...e } = r;
          this.#P.set(r.seq, e);
          break;
        }
        case "exec":
          if (r.seq > this.#stable.seq) this.#execLog.set(r.seq, r);
          break;
      }
    }
    for (const [seq, byDigest] of this.#Q) {
      trimQ(byDigest, this.#P.get(seq)?.digest);
    }
    this.#executed = this.#stable.seq;
    this.#lastCheckpoint = this.#stable.seq;
    if (this.#stable.seq > 0) {
      this.#snapshot = { seq: this.#stable.seq, data: this.#stableData ?? "" };
    }
    for (;;) {
      const r = this.#execLog.get(this.#executed + 1);
      const batch = r && this.#Q.get(r.seq)?.get(r.digest)?.batch;
      if (!r || !batch) break;
      this.#executed = r.seq;
      this.#exec.push({
        seq: r.seq,
        view: r.view,
        digest: r.digest,
        batch,
        checkpoint: this.#countCheckpoint(r.seq, batch.length),
      });
      for (const q of batch) {
        this.#markExecuted(q);
      }
    }
    // In the current view, pre-prepared sequence numbers stay assigned.
    for (const [seq, byDigest] of this.#Q) {
      for (const e of byDigest.values()) {
        if (e.view === this.#view && !this.#changing) {
          this.#slot(seq).pp = { digest: e.digest, batch: e.batch };
          this.#lastAssigned = Math.max(this.#lastAssigned, seq);
        }
      }
    }
    this.#lastAssigned = Math.max(this.#lastAssigned, this.#executed);
    if (proven && proven.seq > this.#stable.seq) this.#makeStable(proven);
    if (this.#changing) {
      // Re-send the view change on the next retransmit tick.
      const vc = this.#ownViewChange(this.#view);
      let forView = this.#viewChanges.get(this.#view);
      if (!forView) this.#viewChanges.set(this.#view, forView = new Map());
      forView.set(this.id, vc);
      this.#latestVcView.set(this.id, this.#view);
    }
  }

  /** Whether `r` carries its client's signature (verified once, then remembered). */
  #authentic(r: PbftRequest): boolean {
    if (this.#trustRequests) return true;
    const input = requestSignInput(r, this.#opDigest(r));
    if (this.#verified.get(r.sig) === input) return true;
    if (!this.#auth.verify(requestSigner(r.client), input, r.sig)) {
      return false;
    }
    this.#remember(r.sig, input);
    return true;
  }

  /** Remembers that `sig` is a valid request signature over `input`. */
  #remember(sig: string, input: string): void {
    const had = this.#verified.get(sig);
    if (had !== undefined) this.#verifiedChars -= had.length;
    this.#verified.set(sig, input);
    this.#verifiedChars += input.length;
    while (
      this.#verified.size > VERIFIED_MAX ||
      this.#verifiedChars > VERIFIED_MAX_CHARS
    ) {
      this.#verifiedChars -= deleteOldest(this.#verified)!.length;
    }
  }

  #digestOf(batch: PbftRequest[]): string {
    return batchDigest(this.#auth, batch, (r) => this.#opDigest(r));
  }

  /** The digest of `r.op`, computed once per request object. */
  #opDigest(r: PbftRequest): string {
    const had = this.#opDigests.get(r);
    if (had?.op === r.op) return had.digest;
    const digest = this.#auth.digest(r.op);
    this.#opDigests.set(r, { op: r.op, digest });
    return digest;
  }

  #signed<T extends { sig: string }>(body: T): T {
    return { ...body, sig: this.#auth.sign(signInput(body)) };
  }

  #send(to: string, payload: PbftPayload): void {
    this.#out.push({
      from: this.id,
      to,
      payload,
      mac: this.#auth.mac(to, macInput(this.id, to, payload)),
    });
  }

  #multicast(payload: PbftPayload): void {
    // One serialisation for every link's MAC.
    const body = macBody(payload);
    for (const to of this.replicas) {
      if (to === this.id) continue;
      this.#out.push({
        from: this.id,
        to,
        payload,
        mac: this.#auth.mac(to, `${this.id}>${to}:${body}`),
      });
    }
  }

  #reject(): void {
    this.rejected++;
  }
}

type ExecRecord = PbftRecord & { k: "exec" };

/**
 * Keeps a sequence number's Q entries bounded (view changes check the size):
 * the digests of the newest views, and always the one this replica last
 * prepared there (`keep`), which its P set may name. Dropping others can
 * only make rule A2 fail for them (a view change waits), never choose one.
 */
function trimQ(
  byDigest: Map<string, PrePreparedEntry>,
  keep: string | undefined,
): void {
  while (byDigest.size > Q_PER_SEQ) {
    let oldest: PrePreparedEntry | undefined;
    for (const x of byDigest.values()) {
      if (x.digest === keep) continue;
      if (!oldest || x.view < oldest.view) oldest = x;
    }
    byDigest.delete(oldest!.digest);
  }
}

/**
 * The bytes a link MAC covers: both ends and the payload — of a
 * pre-prepare, all but its batch. The batch is bound by the digest the MAC
 * does cover, and a replica takes a pre-prepare only if its batch hashes to
 * that digest (the paper's pre-prepare likewise carries the requests beside
 * the authenticated part). So the MAC costs the same for any batch size.
 *
 * @example Usage
 * ```ts
 * import { macInput } from "./core.ts";
 * macInput("1", "2", { type: "fetch-state", seq: 4 });
 * // '1>2:{"type":"fetch-state","seq":4}'
 * macInput("1", "2", { type: "pre-prepare", view: 0, seq: 1, digest: "d", batch: [] });
 * // '1>2:["pre-prepare",0,1,"d"]'
 * ```
 */
export function macInput(
  from: string,
  to: string,
  payload: PbftPayload,
): string {
  return `${from}>${to}:${macBody(payload)}`;
}

function macBody(p: PbftPayload): string {
  return p.type === "pre-prepare"
    ? JSON.stringify([p.type, p.view, p.seq, p.digest])
    : JSON.stringify(p);
}

/**
 * The bytes a signature covers: the payload with `sig` empty.
 *
 * @example Usage
 * ```ts
 * import { signInput } from "./core.ts";
 * const c = { type: "checkpoint", seq: 4, digest: "d", replica: "1", sig: "x" };
 * signInput(c);
 * // '{"type":"checkpoint","seq":4,"digest":"d","replica":"1","sig":""}'
 * ```
 */
export function signInput(p: { sig: string }): string {
  return JSON.stringify({ ...p, sig: "" });
}

/**
 * The bytes a client signs for a request: (client, t, digest of op),
 * prefixed so the signature cannot pass for any other message a node signs.
 * The op enters by its digest (`opDigest`, the `PbftAuth` digest of `op`),
 * which a replica computes once per request and reuses for the batch
 * digest ({@linkcode batchDigest}), so a large op is hashed once, not once
 * for the signature and again for the batch.
 *
 * @example Usage
 * ```ts
 * import { requestSignInput } from "./core.ts";
 * requestSignInput({ client: "a/1", t: 2 }, "d(x)");
 * // 'plexus-pbft-request:["a/1",2,"d(x)"]'
 * ```
 */
export function requestSignInput(
  r: Pick<PbftRequest, "client" | "t">,
  opDigest: string,
): string {
  return `plexus-pbft-request:${JSON.stringify([r.client, r.t, opDigest])}`;
}

/**
 * The digest that names a batch: of each request's client, t, op digest and
 * signature. It binds every byte of the batch (the op through its
 * collision-resistant digest) while hashing the ops only once per replica.
 * `opDigest` may return a remembered `auth.digest(r.op)`.
 *
 * @example Usage
 * ```ts
 * import { batchDigest } from "./core.ts";
 * const auth = { digest: (s: string) => `d(${s})` };
 * batchDigest(auth, [{ client: "a/1", t: 1, op: "x", sig: "s" }]);
 * // 'd([["a/1",1,"d(x)","s"]])'
 * ```
 */
export function batchDigest(
  auth: Pick<PbftAuth, "digest">,
  batch: PbftRequest[],
  opDigest: (r: PbftRequest) => string = (r) => auth.digest(r.op),
): string {
  return auth.digest(
    JSON.stringify(batch.map((r) => [r.client, r.t, opDigest(r), r.sig])),
  );
}

/**
 * Whose key signs a client's requests: the client id up to its first `/`
 * (a node signs for the `"<node>/<boot nonce>"` clients it proxies).
 *
 * @example Usage
 * ```ts
 * import { requestSigner } from "./core.ts";
 * requestSigner("a/3f2c"); // "a"
 * requestSigner("c1"); // "c1"
 * ```
 */
export function requestSigner(client: string): string {
  const slash = client.indexOf("/");
  return slash < 0 ? client : client.slice(0, slash);
}

/**
 * A request signed by its client (`auth` is the signer's).
 *
 * @example Usage
 * ```ts ignore
 * import { signRequest } from "./core.ts";
 * node.request(signRequest(auth, { client: "a/1", t: 1, op: "x" }));
 * ```
 */
export function signRequest(
  auth: Pick<PbftAuth, "sign" | "digest">,
  r: Pick<PbftRequest, "client" | "t" | "op">,
): PbftRequest {
  return {
    client: r.client,
    t: r.t,
    op: r.op,
    sig: auth.sign(requestSignInput(r, auth.digest(r.op))),
  };
}
