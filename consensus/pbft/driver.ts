/**
 * Runs the deterministic PBFT core ({@linkcode PbftNode}) for real: ticks
 * it on a timer, feeds it messages from the network, and drains its
 * {@linkcode PbftReady}s in order — persist (one write and one fsync per
 * Ready, however many requests it batches), only then send, install a
 * transferred state, execute batches on the {@linkcode PbftKvState} and
 * take checkpoints where asked.
 *
 * The driver is also its node's client proxy: {@linkcode PbftDriver.submit}
 * makes a request `{client: "<node>/<boot nonce>", t}` signed with this
 * node's Ed25519 key (replicas refuse a request whose signature is not its
 * node's), and every replica
 * that executes it sends its result back to this node; the request
 * resolves on f + 1 matching results (so at least one from an honest
 * replica). Retries re-broadcast the request; replicas that already
 * executed it answer from their last-reply table.
 *
 * @module
 */
import type { LeaderChange } from "../../core/consensus.ts";
import {
  ConsensusTimeoutError,
  ConsensusUnavailableError,
} from "../_shared/errors.ts";
import {
  batchDigest,
  createPbft,
  macInput,
  type PbftNode,
  type PbftStatus,
  signRequest,
} from "./core.ts";
import {
  fullResult,
  type PbftKvAnswer,
  type PbftKvOp,
  type PbftKvResult,
  PbftKvState,
} from "./kv_state.ts";
import type {
  PbftAuth,
  PbftMessage,
  PbftReady,
  PbftRecord,
  PbftRequest,
} from "./types.ts";

/** What the driver needs from durable storage ({@linkcode PbftFileLog} or a test double). */
export interface PbftDriverStorage {
  records(): PbftRecord[];
  save(rd: Pick<PbftReady, "compact" | "persist">): Promise<void> | void;
  close?(): void;
}

/** Options of {@linkcode PbftDriver}. */
export interface PbftDriverOptions {
  /** This replica's id. */
  id: string;
  /** Every replica, in order (the primary of view v is `replicas[v mod n]`). */
  replicas: string[];
  auth: PbftAuth;
  storage: PbftDriverStorage;
  /** Hands messages for one replica to the network (best effort). */
  send: (to: string, messages: PbftMessage[]) => void;
  /** Milliseconds per tick; 0 means the caller calls {@linkcode PbftDriver.tick}. @default {50} */
  tickMs?: number;
  /** Ticks before a waiting request moves the replicas to the next view. @default {40} */
  viewChangeTicks?: number;
  /** A checkpoint every this many requests (K). @default {1024} */
  checkpointInterval?: number;
  /** Sequence numbers accepted above the stable checkpoint (L). @default {4 · checkpointInterval} */
  window?: number;
  /** @default {64} */
  maxBatch?: number;
  /** @default {4} */
  maxInflight?: number;
  /** Ticks without progress before a replica re-sends what it said (and asks others). @default {5} */
  retransmitTicks?: number;
  /** Milliseconds a request may wait for f + 1 matching results. @default {5000} */
  requestTimeoutMs?: number;
  /** Milliseconds between re-broadcasts of a request still waiting. @default {1000} */
  retryMs?: number;
  /**
   * Requests this node keeps outstanding as a client at most; operations
   * submitted meanwhile wait and leave together in the next one.
   * @default {4}
   */
  maxOutstanding?: number;
  /**
   * BROKEN ON PURPOSE, for the real-process Byzantine test only: as primary,
   * send half the replicas a different batch (equivocate), and go silent
   * `silentAfterMs` after the first equivocation.
   */
  byzantine?: {
    silentAfterMs: number;
    /** Told once when it first equivocates and once when it goes silent. */
    onMisbehave?: (what: string) => void;
  };
  /** Called when persisting fails; the driver has stopped. */
  onFatal?: (error: unknown) => void;
}

/**
 * A request that could not be placed (the driver stopped): it did not happen.
 *
 * @example Usage
 * ```ts
 * import { PbftUnavailableError } from "./driver.ts";
 * new PbftUnavailableError("stopped").status; // 503
 * ```
 */
export class PbftUnavailableError extends ConsensusUnavailableError {
  override name = "PbftUnavailableError";
}

/**
 * A request placed but without f + 1 matching results in time: its outcome
 * is unknown (a write may still execute).
 *
 * @example Usage
 * ```ts
 * import { PbftTimeoutError } from "./driver.ts";
 * new PbftTimeoutError("pbft request a/x/1 not answered").status; // 504
 * ```
 */
export class PbftTimeoutError extends ConsensusTimeoutError {
  override name = "PbftTimeoutError";
}

/** What a request returned, with the view it was answered in. */
export interface SubmitResult {
  result: PbftKvResult;
  view: number;
  /** Replicas whose matching results were counted (f + 1 of them). */
  matching: string[];
}

/** One operation waiting to be sent, or for its request's answer. */
interface Op {
  op: PbftKvOp;
  resolve: (v: SubmitResult) => void;
  reject: (e: Error) => void;
  queuedAt: number;
}

/** One of this node's outstanding requests: the operations it carries. */
interface Outstanding {
  request: PbftRequest;
  ops: Op[];
  /** Each replica's reply: the digest of its result. */
  replies: Map<string, { digest: string; view: number }>;
  /** Full results received (the core checked each hashes to its digest), by digest. */
  results: Map<string, string>;
  deadline: number;
  nextRetry: number;
}

/** Operations one request carries at most, and their JSON bytes at most. */
const MAX_GROUP_OPS = 512;
const MAX_GROUP_BYTES = 1 << 20;

/**
 * The driver.
 *
 * @example Usage
 * ```ts ignore
 * const d = new PbftDriver({ id: "a", replicas, auth, storage, send });
 * d.start();
 * links.onMessages = (_from, ms) => d.receive(ms);
 * await d.submit({ op: "write", key: "x", value: "1" });
 * ```
 */
export class PbftDriver {
  readonly node: PbftNode;
  readonly state = new PbftKvState();
  readonly #o: PbftDriverOptions;
  readonly #client: string;
  #t = 0;
  /** Operations not sent yet (they wait for an outstanding request to end). */
  #queue: Op[] = [];
  #outstanding = new Map<number, Outstanding>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #running = false;
  #stopped = false;
  #idle: PromiseWithResolvers<void> | undefined;
  #listeners = new Set<(c: LeaderChange) => void>();
  #last: LeaderChange = { leader: null, epoch: -1 };
  #equivocatedAt: number | undefined;
  #silent = false;
  /** Sequence numbers executed, for status. */
  executed = 0;
  /** Requests this node has sent as a client (each one signature, one or more operations). */
  requests = 0;

  constructor(o: PbftDriverOptions) {
    this.#o = o;
    this.#client = `${o.id}/${crypto.randomUUID().slice(0, 8)}`;
    this.node = createPbft({
      id: o.id,
      replicas: o.replicas,
      auth: o.auth,
      checkpointInterval: o.checkpointInterval ?? 1024,
      window: o.window,
      maxBatch: o.maxBatch,
      maxInflight: o.maxInflight,
      viewChangeTicks: o.viewChangeTicks ?? 40,
      retransmitTicks: o.retransmitTicks ?? 5,
      storage: o.storage.records(),
    });
  }

  /** Starts ticking and drains what a restart replays. */
  start(): void {
    const ms = this.#o.tickMs ?? 50;
    if (ms > 0) this.#timer = setInterval(() => this.tick(), ms);
    this.#kick();
  }

  /** Stops ticking; waiting requests fail with {@linkcode PbftTimeoutError}. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const w of this.#outstanding.values()) {
      for (const o of w.ops) {
        o.reject(
          new PbftTimeoutError(
            `pbft request ${this.#client}/${w.request.t}: the replica stopped before f + 1 results arrived`,
          ),
        );
      }
    }
    this.#outstanding.clear();
    for (const o of this.#queue.splice(0)) {
      o.reject(
        new PbftUnavailableError(
          `pbft replica ${this.#o.id} stopped before sending the operation`,
        ),
      );
    }
    this.#o.storage.close?.();
  }

  /** One tick: the core's timers, request retries and deadlines. */
  tick(): void {
    if (this.#stopped) return;
    this.node.tick();
    const now = Date.now();
    const timeoutMs = this.#o.requestTimeoutMs ?? 5000;
    for (const [t, w] of this.#outstanding) {
      if (now >= w.deadline) {
        this.#outstanding.delete(t);
        for (const o of w.ops) {
          o.reject(
            new PbftTimeoutError(
              `pbft request ${this.#client}/${t} got no f + 1 matching results within ${timeoutMs} ms (view ${this.node.view}, primary ${this.node.primary})`,
            ),
          );
        }
      } else if (now >= w.nextRetry) {
        w.nextRetry = now + (this.#o.retryMs ?? 1000);
        this.node.request(w.request, { retry: true });
      }
    }
    // Never sent: the ones before took all the time. It did not happen.
    while (
      this.#queue.length > 0 && now - this.#queue[0].queuedAt >= timeoutMs
    ) {
      this.#queue.shift()!.reject(
        new PbftUnavailableError(
          `pbft replica ${this.#o.id} could not send the operation within ${timeoutMs} ms: its earlier requests were not answered (view ${this.node.view}, primary ${this.node.primary})`,
        ),
      );
    }
    this.#flush();
    this.#kick();
    this.#notify();
  }

  /** Messages from the network. */
  receive(messages: PbftMessage[]): void {
    if (this.#stopped) return;
    for (const m of messages) this.node.step(m);
    this.#kick();
  }

  /**
   * Orders `op` through PBFT; resolves on f + 1 matching results. This
   * node keeps at most `maxOutstanding` requests outstanding as a client:
   * operations submitted meanwhile leave together in the next one (one
   * signature, one place in a batch, one list of results), so under load
   * its requests grow instead of multiplying. (A request overtaken by a
   * later one of the same node still runs, once, if it is among the node's
   * last 16; see kv_state.ts.)
   */
  submit(op: PbftKvOp): Promise<SubmitResult> {
    if (this.#stopped) {
      return Promise.reject(
        new PbftUnavailableError(`pbft replica ${this.#o.id} has stopped`),
      );
    }
    const { promise, resolve, reject } = Promise.withResolvers<SubmitResult>();
    this.#queue.push({ op, resolve, reject, queuedAt: Date.now() });
    this.#flush();
    this.#kick();
    return promise;
  }

  /** The current primary, or null during a view change. */
  leader(): string | null {
    return this.node.status().changing ? null : this.node.primary;
  }

  /** Whether this replica is the primary of an active view. */
  isLeader(): boolean {
    return this.leader() === this.#o.id;
  }

  /** Calls `fn` on every change of view or primary; returns the unsubscribe. */
  onLeaderChange(fn: (c: LeaderChange) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** The core's status. */
  status(): PbftStatus & { waiting: number; writes?: number } {
    return {
      ...this.node.status(),
      waiting: this.#queue.length +
        [...this.#outstanding.values()].reduce((n, w) => n + w.ops.length, 0),
    };
  }

  /** Resolves once no Ready is being handled (tests). */
  idle(): Promise<void> {
    if (!this.#running) return Promise.resolve();
    this.#idle ??= Promise.withResolvers<void>();
    return this.#idle.promise;
  }

  #notify(): void {
    const c: LeaderChange = { leader: this.leader(), epoch: this.node.view };
    if (c.leader === this.#last.leader && c.epoch === this.#last.epoch) return;
    this.#last = c;
    for (const fn of this.#listeners) fn(c);
  }

  #kick(): void {
    if (this.#running || this.#stopped) return;
    this.#running = true;
    this.#drain().then(
      () => {
        this.#running = false;
        this.#idle?.resolve();
        this.#idle = undefined;
        if (this.node.hasReady()) this.#kick();
        this.#notify();
      },
      (err) => {
        this.#running = false;
        this.stop();
        this.#o.onFatal?.(err);
      },
    );
  }

  async #drain(): Promise<void> {
    while (this.node.hasReady() && !this.#stopped) {
      const rd = this.node.ready();
      // Results of batches applied after an earlier save: no fsync to wait for.
      this.#send(rd.early);
      for (const rep of rd.replies) this.#onReply(rep);
      // Batches whose prepared certificate is durable already run ahead of
      // this Ready's fsync, and their results leave at once.
      let ahead = 0;
      if (!rd.compact && !rd.snapshot) {
        while (
          ahead < rd.executed.length && !rd.executed[ahead].afterPersist
        ) this.#apply(rd.executed[ahead++]);
        if (ahead > 0) {
          const now = this.node.takeEarly();
          this.#send(now.early);
          for (const rep of now.replies) this.#onReply(rep);
        }
      }
      await this.#o.storage.save(rd);
      if (this.#stopped) return;
      this.#send(rd.messages);
      if (rd.snapshot) this.state.restore(rd.snapshot.data);
      for (const e of rd.executed.slice(ahead)) this.#apply(e);
      // A retry: its proxy may lack the result itself, so send it whole.
      for (const r of rd.retried) {
        const result = this.state.lastReply(r.client, r.t);
        if (result !== undefined) this.#reply(r, result, true);
      }
    }
  }

  #apply(e: PbftReady["executed"][number]): void {
    for (const r of e.batch) {
      const result = this.state.execute(r);
      if (result !== undefined) this.#reply(r, result);
    }
    this.executed = e.seq;
    if (e.checkpoint) this.node.checkpoint(e.seq, this.state.serialize());
  }

  /** Sends the queued operations as this node's next requests, while fewer than `maxOutstanding` are. */
  #flush(): void {
    while (
      this.#outstanding.size < (this.#o.maxOutstanding ?? 4) &&
      this.#queue.length > 0 && !this.#stopped
    ) this.#sendNext();
  }

  #sendNext(): void {
    const ops: Op[] = [];
    /** Each operation's JSON: the request's op is their list. */
    const parts: string[] = [];
    let bytes = 0;
    while (this.#queue.length > 0 && ops.length < MAX_GROUP_OPS) {
      const json = JSON.stringify(this.#queue[0].op);
      if (ops.length > 0 && bytes + json.length > MAX_GROUP_BYTES) break;
      bytes += json.length;
      parts.push(json);
      ops.push(this.#queue.shift()!);
    }
    // Signed with this node's key: the replicas check it is this node's.
    const t = ++this.#t;
    const request = this.node.ownRequest(
      this.#client,
      t,
      `[${parts.join(",")}]`,
    );
    this.requests++;
    const now = Date.now();
    this.#outstanding.set(t, {
      request,
      ops,
      replies: new Map(),
      results: new Map(),
      deadline: now + (this.#o.requestTimeoutMs ?? 5000),
      nextRetry: now + (this.#o.retryMs ?? 1000),
    });
    this.node.request(request);
  }

  #reply(r: PbftRequest, result: string, full = false): void {
    const slash = r.client.lastIndexOf("/");
    if (slash <= 0) return;
    this.node.reply(r.client.slice(0, slash), r.client, r.t, result, { full });
  }

  /**
   * Resolves a request once f + 1 replicas sent the same result digest and
   * the result itself is known (from this replica, or a retry's answer):
   * as good as f + 1 matching results, at the cost of one digest.
   */
  #onReply(rep: PbftReady["replies"][number]): void {
    const w = this.#outstanding.get(rep.t);
    if (rep.client !== this.#client || !w) return;
    w.replies.set(rep.from, { digest: rep.digest, view: rep.view });
    if (rep.result !== undefined) w.results.set(rep.digest, rep.result);
    const result = w.results.get(rep.digest);
    if (result === undefined) return;
    const matching = [...w.replies].filter(([, r]) => r.digest === rep.digest);
    if (matching.length < this.node.f + 1) return;
    this.#outstanding.delete(rep.t);
    const view = Math.max(...matching.map(([, r]) => r.view));
    const ids = matching.map(([id]) => id);
    const answers = JSON.parse(result) as PbftKvAnswer[];
    w.ops.forEach((o, i) =>
      o.resolve({
        result: Array.isArray(answers) && answers[i] !== undefined
          ? fullResult(o.op, answers[i])
          : {
            error:
              `pbft: the replicas answered a request of ${w.ops.length} operations without a result for operation ${i}`,
          },
        view,
        matching: ids,
      })
    );
    this.#flush();
  }

  #send(messages: PbftMessage[]): void {
    const byPeer = new Map<string, PbftMessage[]>();
    for (const m0 of messages) {
      const m = this.#o.byzantine ? this.#misbehave(m0) : m0;
      if (!m) continue;
      let list = byPeer.get(m.to);
      if (!list) byPeer.set(m.to, list = []);
      list.push(m);
    }
    for (const [to, ms] of byPeer) this.#o.send(to, ms);
  }

  /** The test-only Byzantine build: equivocate as primary, then go silent. */
  #misbehave(m: PbftMessage): PbftMessage | undefined {
    const b = this.#o.byzantine!;
    if (
      this.#equivocatedAt !== undefined &&
      Date.now() - this.#equivocatedAt >= b.silentAfterMs
    ) {
      if (!this.#silent) b.onMisbehave?.("went silent");
      this.#silent = true;
      return undefined;
    }
    const p = m.payload;
    const victims = this.#o.replicas.filter((r) => r !== this.#o.id);
    if (p.type !== "pre-prepare" || victims.indexOf(m.to) % 2 === 1) return m;
    if (this.#equivocatedAt === undefined) {
      this.#equivocatedAt = Date.now();
      b.onMisbehave?.(
        `sent conflicting pre-prepares for view ${p.view} seq ${p.seq}`,
      );
    }
    // A request of its own (signed: honest replicas take it), so the two
    // halves really get different valid batches.
    const batch = [...p.batch].reverse().concat(
      signRequest(this.#o.auth, {
        client: `${this.#o.id}/byzantine`,
        t: p.seq,
        op: JSON.stringify({
          op: "write",
          key: "byzantine",
          value: `${p.seq}`,
        }),
      }),
    );
    const payload = {
      ...p,
      batch,
      digest: batchDigest(this.#o.auth, batch),
    };
    return {
      ...m,
      payload,
      mac: this.#o.auth.mac(m.to, macInput(m.from, m.to, payload)),
    };
  }
}
