/**
 * The plain, JSON-serialisable values the PBFT core takes in and hands out:
 * client requests, protocol messages, the records a driver must persist and
 * the {@linkcode PbftReady} batch.
 *
 * @module
 */

/**
 * A client's operation. `t` increases per client: a replica executes each
 * (client, t) at most once (the state machine keeps the last t per client).
 * `sig` is the client's signature over (client, t, op) (see
 * `requestSignInput` in core.ts): the key that signs is the one of the
 * client id's part before the first `/` (a node signs for its
 * `"<node>/<boot nonce>"` clients), so no replica can make up or alter a
 * request.
 *
 * @example Usage
 * ```ts
 * import type { PbftRequest } from "./types.ts";
 * const r: PbftRequest = { client: "c1", t: 1, op: '{"op":"write","key":"x","value":"1"}', sig: "…" };
 * r.t; // 1
 * ```
 */
export interface PbftRequest {
  client: string;
  t: number;
  op: string;
  sig: string;
}

/** The primary's proposal: `batch` takes sequence number `seq` in `view`. */
export interface PrePrepare {
  type: "pre-prepare";
  view: number;
  seq: number;
  digest: string;
  batch: PbftRequest[];
}

/** A backup's vote for the pre-prepare with `digest` at (`view`, `seq`). */
export interface Prepare {
  type: "prepare";
  view: number;
  seq: number;
  digest: string;
}

/** Sent once prepared: a vote to execute `digest` at `seq`. */
export interface Commit {
  type: "commit";
  view: number;
  seq: number;
  digest: string;
}

/**
 * Signed: `replica` has executed up to `seq` and its state's digest is
 * `digest`. 2f + 1 matching ones make a stable checkpoint.
 */
export interface Checkpoint {
  type: "checkpoint";
  seq: number;
  digest: string;
  replica: string;
  sig: string;
}

/**
 * A stable checkpoint with its proof: 2f + 1 signed matching checkpoints
 * (none for the initial state, `seq` 0).
 *
 * @example Usage
 * ```ts
 * import type { StableCheckpoint } from "./types.ts";
 * const genesis: StableCheckpoint = { seq: 0, digest: "", proof: [] };
 * genesis.seq; // 0
 * ```
 */
export interface StableCheckpoint {
  seq: number;
  digest: string;
  proof: Checkpoint[];
}

/** A P-set entry: this replica prepared `digest` at `seq` in `view` (its latest such view). */
export interface PreparedEntry {
  seq: number;
  view: number;
  digest: string;
}

/** A Q-set entry: this replica pre-prepared `batch` (`digest`) at `seq`, last in `view`. */
export interface PrePreparedEntry {
  seq: number;
  view: number;
  digest: string;
  batch: PbftRequest[];
}

/** A Q-set entry as a VIEW-CHANGE carries it: the digest only, not the batch. */
export type PrePreparedDigest = Omit<PrePreparedEntry, "batch">;

/**
 * Signed: `replica` asks to move to `view`, with what it knows (TOCS 2002
 * §4.5). Its Q set names batches by digest; a replica that the new view
 * gives a batch it does not hold fetches it ({@linkcode FetchBatch}).
 */
export interface ViewChange {
  type: "view-change";
  view: number;
  replica: string;
  stable: StableCheckpoint;
  prepared: PreparedEntry[];
  prePrepared: PrePreparedDigest[];
  sig: string;
}

/**
 * Signed by the new primary: the view changes it decided on. Every backup
 * recomputes the new view's pre-prepares from them, so they are not sent.
 */
export interface NewView {
  type: "new-view";
  view: number;
  replica: string;
  viewChanges: ViewChange[];
  sig: string;
}

/** A replica relays client requests so every backup's timer watches them (one message per Ready). */
export interface RequestRelay {
  type: "request";
  requests: PbftRequest[];
}

/**
 * A stalled replica with requests waiting says how far it got; replicas in
 * the same view that got further send it again what it missed (their
 * pre-prepares and commits above `executed`, or their stable checkpoint's
 * proof if it is behind that).
 */
export interface Status {
  type: "status";
  view: number;
  executed: number;
}

/** Ask for the batch with `digest` at `seq` (a new view chose it, this replica does not hold it). */
export interface FetchBatch {
  type: "fetch-batch";
  seq: number;
  digest: string;
}

/** A batch asked for: taken only if it hashes to `digest` and every request in it is its client's. */
export interface BatchReply {
  type: "batch";
  seq: number;
  digest: string;
  batch: PbftRequest[];
}

/** Ask for the state at (or after) stable checkpoint `seq`. */
export interface FetchState {
  type: "fetch-state";
  seq: number;
}

/** State transfer: the state at `stable.seq`, checked against its proven digest. */
export interface StateTransfer {
  type: "state";
  stable: StableCheckpoint;
  data: string;
}

/**
 * A replica's result for one client request. `digest` is the result's
 * digest; the result itself rides along only where asked for (the replica's
 * own proxy, and answers to a client's retry), since the proxy holds its
 * own replica's result and f matching digests vouch for it (Castro & Liskov
 * §5.1.1, digest replies). A receiver drops a `result` that does not hash
 * to `digest`.
 */
export interface ClientResult {
  client: string;
  t: number;
  digest: string;
  result?: string;
}

/** A replica's results for requests of clients another replica proxies (one message per Ready). */
export interface Reply {
  type: "reply";
  view: number;
  results: ClientResult[];
}

/** Everything a replica sends another. */
export type PbftPayload =
  | PrePrepare
  | Prepare
  | Commit
  | Checkpoint
  | ViewChange
  | NewView
  | RequestRelay
  | FetchState
  | FetchBatch
  | BatchReply
  | Status
  | StateTransfer
  | Reply;

/**
 * One message on one link: `mac` authenticates (`from`, `to`, `payload`)
 * with the key the two replicas share. Checkpoints, view changes and new
 * views also carry a signature inside, so a third replica can check them.
 *
 * @example Usage
 * ```ts
 * import type { PbftMessage } from "./types.ts";
 * const m: PbftMessage = {
 *   from: "1", to: "2", mac: "…",
 *   payload: { type: "prepare", view: 0, seq: 1, digest: "d" },
 * };
 * m.payload.type; // "prepare"
 * ```
 */
export interface PbftMessage {
  from: string;
  to: string;
  payload: PbftPayload;
  mac: string;
}

/**
 * What a replica must have on stable storage before it sends anything that
 * depends on it. Replaying the records in order rebuilds the replica.
 */
export type PbftRecord =
  | {
    k: "view";
    view: number;
    changing: boolean;
    /** The NEW-VIEW that started `view`, to hand to a replica that missed it. */
    newView?: NewView;
  }
  | { k: "q"; seq: number; view: number; digest: string; batch: PbftRequest[] }
  | { k: "p"; seq: number; view: number; digest: string }
  /** Executed: the batch is the Q entry with this digest (not stored twice). */
  | { k: "exec"; seq: number; view: number; digest: string }
  | {
    k: "stable";
    seq: number;
    digest: string;
    proof: Checkpoint[];
    /** The state at `seq`; absent while it is being fetched (the proof alone still moves the window). */
    data?: string;
  };

/** A batch to apply, in sequence order. */
export interface Executed {
  seq: number;
  view: number;
  digest: string;
  batch: PbftRequest[];
  /** Apply it, then call `checkpoint(seq, stateData)` before applying the next one. */
  checkpoint: boolean;
  /**
   * This replica's prepared certificate for `seq` is in the same Ready's
   * `persist`: apply it (and answer its clients) only once that is durable.
   * A batch without the flag, in a Ready with no `compact` or `snapshot`,
   * may be applied and answered before the Ready is persisted: its
   * certificate already is (a reply needs f + 1 honest replicas that hold
   * one durably, this one included), and the `exec` record it comes with is
   * only a shortcut for a restart, which can execute the batch again.
   */
  afterPersist?: boolean;
}

/**
 * One batch of work for the driver. Handle it in this order:
 * 0. `early` may leave and `replies` go to the waiting clients at once:
 *    they depend on nothing in this Ready (results of batches applied after
 *    an earlier Ready was persisted, and other replicas' answers);
 * 1. if `compact` is set, replace the stored records by it; then append
 *    `persist`, durably;
 * 2. only then send `messages`;
 * 3. install `snapshot` (state transfer) if any, then apply `executed` in
 *    order, calling `checkpoint` where an entry asks; answer `retried`
 *    requests from the last replies.
 *
 * @example Usage
 * ```ts ignore
 * const rd = node.ready();
 * for (const m of rd.early) send(m);
 * store(rd.compact, rd.persist); // durably
 * for (const m of rd.messages) send(m);
 * if (rd.snapshot) machine.restore(rd.snapshot.data);
 * for (const e of rd.executed) apply(e);
 * ```
 */
export interface PbftReady {
  compact?: PbftRecord[];
  persist: PbftRecord[];
  messages: PbftMessage[];
  /** Results for other replicas' clients: they need not wait for `persist`. */
  early: PbftMessage[];
  snapshot?: { seq: number; data: string };
  executed: Executed[];
  replies: (ClientResult & { from: string; view: number })[];
  /** Requests asked again that this replica already executed: answer from the last-reply table. */
  retried: PbftRequest[];
}

/**
 * The cryptography the core is given: a digest, per-link MACs and
 * signatures. The driver passes SHA-256, HMAC-SHA256 and Ed25519; the
 * simulation cheap stand-ins the adversary cannot forge.
 *
 * @example Usage
 * ```ts ignore
 * const auth: PbftAuth = {
 *   digest: (s) => sha256hex(s),
 *   mac: (to, s) => hmac(linkKey(to), s),
 *   checkMac: (from, s, mac) => hmac(linkKey(from), s) === mac,
 *   sign: (s) => ed25519.sign(s, myKey),
 *   verify: (replica, s, sig) => ed25519.verify(sig, s, publicKey(replica)),
 * };
 * ```
 */
export interface PbftAuth {
  /** A collision-resistant digest of `data`. */
  digest(data: string): string;
  /** The MAC of `data` on the link from this replica to `to`. */
  mac(to: string, data: string): string;
  /** Whether `mac` is the MAC of `data` on the link from `from` to this replica. */
  checkMac(from: string, data: string, mac: string): boolean;
  /** This replica's signature over `data`. */
  sign(data: string): string;
  /** Whether `sig` is `replica`'s signature over `data` (`replica` may also be a client's signer, see {@linkcode PbftRequest}). */
  verify(replica: string, data: string, sig: string): boolean;
}
