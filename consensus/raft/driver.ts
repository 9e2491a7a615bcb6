/**
 * Runs the deterministic Raft core ({@linkcode RaftNode}) for real: ticks it
 * on a timer, feeds it messages from the network, and drains its
 * {@linkcode Ready}s in order — persist (one write and one fsync per Ready,
 * however many proposals it batches), only then send, apply to the
 * replicated {@linkcode KvMachine}, serve ReadIndex reads, advance.
 *
 * Proposals made while a Ready is being persisted wait in the core and leave
 * together in the next one: that is the group commit. A proposal's entry
 * carries `{id, c}`; whichever node proposed it (a follower's proposal is
 * forwarded to the leader by the core) resolves its promise when it applies
 * that entry. A proposal still waiting when a leader of a newer term is
 * known is proposed again, with the same id: the one sent to the old leader
 * may be lost with it. Should both copies commit, the state machine applies
 * the first and skips the other.
 *
 * @module
 */
import { createRaft, type RaftNode, type RaftStatus } from "./core.ts";
import type { LeaderChange } from "../../core/consensus.ts";
import {
  ConsensusTimeoutError,
  ConsensusUnavailableError,
} from "../_shared/errors.ts";
import { timed } from "../../core/observe/otel.ts";
import { type KvCommand, KvMachine, type KvResult } from "./kv_machine.ts";
import type {
  ConfChange,
  Entry,
  Message,
  PersistedState,
  ReadState,
  Ready,
  Snapshot,
} from "./types.ts";

/** What the driver needs from durable storage ({@linkcode FileStorage} or a test double). */
export interface DriverStorage {
  state(): PersistedState;
  /** Durably persists a Ready's snapshot, entries and hard state. */
  save(rd: Ready): Promise<void> | void;
  /** Replaces everything up to `snapshot.index` with the snapshot. */
  compact?(snapshot: Snapshot): Promise<void> | void;
  close?(): void;
}

/** Options of {@linkcode RaftDriver}. */
export interface RaftDriverOptions {
  /** This node's id. */
  id: string;
  /** Voters of a fresh cluster (ignored once the log or a snapshot names them). */
  voters: string[];
  storage: DriverStorage;
  /** Hands messages for one peer to the network (best effort; Raft retries). */
  send: (to: string, messages: Message[]) => void;
  /** Milliseconds per tick; 0 means the caller calls {@linkcode RaftDriver.tick}. @default {50} */
  tickMs?: number;
  /** Election timeout in ticks (random in [n, 2n)). @default {10} */
  electionTick?: number;
  /** Heartbeat interval in ticks. @default {2} */
  heartbeatTick?: number;
  /** @default {Math.random} */
  random?: () => number;
  /** Ticks a proposal or read may wait before failing with an unknown outcome. @default {100} */
  requestTimeoutTicks?: number;
  /** Snapshot and rewrite the log every this many applied entries. @default {20000} */
  compactEvery?: number;
  /**
   * BROKEN ON PURPOSE, for tests of the linearizability checker only: serve
   * reads from the local state machine without ReadIndex (stale reads).
   * @default {false}
   */
  unsafeLocalReads?: boolean;
  /** Called when persisting fails; the driver has stopped. */
  onFatal?: (error: unknown) => void;
}

/**
 * A proposal or read that could not be placed (no leader known, transfer
 * under way): it did not happen; retry.
 *
 * @example Usage
 * ```ts
 * import { RaftDriver, RaftUnavailableError } from "./driver.ts";
 * import { MemoryStorage } from "./storage.ts";
 * const d = new RaftDriver({ id: "a", voters: ["a", "b", "c"], storage: new MemoryStorage(), send: () => {}, tickMs: 0 });
 * d.start();
 * const err = await d.propose({ op: "write", key: "x", value: "1" }).catch((e) => e);
 * err instanceof RaftUnavailableError; // true: no leader yet
 * d.stop();
 * ```
 */
export class RaftUnavailableError extends ConsensusUnavailableError {
  override name = "RaftUnavailableError";
}

/**
 * A proposal or read that was placed but not answered (in time, or before
 * the node stopped): its outcome is unknown — a write may still commit.
 *
 * @example Usage
 * ```ts
 * import { RaftTimeoutError } from "./driver.ts";
 * const err = new RaftTimeoutError("raft proposal a/1 not applied within 100 ticks");
 * err.name; // "RaftTimeoutError"
 * ```
 */
export class RaftTimeoutError extends ConsensusTimeoutError {
  override name = "RaftTimeoutError";
}

/** What a committed write returned, and the log index it committed at. */
export interface ProposeResult extends KvResult {
  index: number;
}

/** A linearizable read's answer and the applied index it was served at. */
export interface ReadResult {
  value: string | null;
  index: number;
}

interface Waiter<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
  deadline: number;
}

interface PendingProposal extends Waiter<ProposeResult> {
  /** The entry's data, to propose again to a new leader. */
  data: string;
  /** The term in which it was last proposed. */
  term: number;
}

interface PendingRead extends Waiter<ReadResult> {
  key: string;
  index?: number;
  /** The term in which it was last asked. */
  term: number;
}

/**
 * One Raft node with its KV state machine.
 *
 * @example A single-node cluster in memory
 * ```ts
 * import { RaftDriver } from "./driver.ts";
 * import { MemoryStorage } from "./storage.ts";
 * const d = new RaftDriver({
 *   id: "a", voters: ["a"], storage: new MemoryStorage(), send: () => {}, tickMs: 0,
 * });
 * d.start();
 * while (!d.isLeader()) d.tick();
 * await d.propose({ op: "write", key: "x", value: "1" });
 * (await d.read("x")).value; // "1"
 * d.stop();
 * ```
 */
export class RaftDriver {
  /** The core, for status and tests. */
  node!: RaftNode;
  /** The replicated state machine. */
  readonly machine: KvMachine = new KvMachine();
  readonly id: string;
  readonly #o: Required<Omit<RaftDriverOptions, "onFatal" | "random">> & {
    random?: () => number;
    onFatal?: (e: unknown) => void;
  };
  #applied = 0;
  #ticks = 0;
  #seq = 0;
  /** Proposal ids count on their own, so the state machine sees no gaps. */
  #proposalSeq = 0;
  /** The term whose leader has every waiting proposal (0: none yet). */
  #routedTerm = 0;
  #proposals = new Map<string, PendingProposal>();
  #reads = new Map<string, PendingRead>();
  #draining = false;
  #stopped = false;
  #timer?: ReturnType<typeof setInterval>;
  #listeners = new Set<(c: LeaderChange) => void>();
  #lead = "";
  #term = 0;
  #lastHeard = new Map<string, number>();
  #compacting = false;
  readonly #prefix: string;

  constructor(options: RaftDriverOptions) {
    this.id = options.id;
    this.#o = {
      tickMs: 50,
      electionTick: 10,
      heartbeatTick: 2,
      requestTimeoutTicks: 100,
      compactEvery: 20_000,
      unsafeLocalReads: false,
      ...options,
    };
    // A restart must not reuse a request id of an earlier life.
    this.#prefix = `${options.id}/${crypto.randomUUID().slice(0, 8)}/`;
  }

  /** Loads the persisted state, replays the log into the state machine and starts ticking. */
  start(): void {
    const st = this.#o.storage.state();
    this.node = createRaft({
      id: this.id,
      peers: this.#o.voters,
      electionTick: this.#o.electionTick,
      heartbeatTick: this.#o.heartbeatTick,
      random: this.#o.random,
      storage: st,
    });
    if (st.snapshot) {
      this.machine.restore(st.snapshot.data);
      this.#applied = st.snapshot.index;
    }
    this.#term = this.node.term;
    if (this.#o.tickMs > 0) {
      this.#timer = setInterval(() => this.tick(), this.#o.tickMs);
    }
    this.#kick();
  }

  /** Advances the logical clock one tick (and expires overdue requests). */
  tick(): void {
    if (this.#stopped) return;
    this.#ticks++;
    this.node.tick();
    this.#expire();
    this.#kick();
  }

  /** Feeds messages that arrived from the network. */
  receive(messages: Message[]): void {
    if (this.#stopped) return;
    const now = Date.now();
    for (const m of messages) {
      if (m.to !== this.id) continue;
      this.#lastHeard.set(m.from, now);
      this.node.step(m);
    }
    this.#kick();
  }

  /** Commits `cmd` through the log and resolves with its result once applied here. */
  propose(cmd: KvCommand): Promise<ProposeResult> {
    if (this.#stopped) {
      return Promise.reject(new RaftUnavailableError("raft node stopped"));
    }
    const id = this.#prefix + (this.#proposalSeq + 1);
    const data = JSON.stringify({ id, c: cmd });
    if (!this.node.propose(data)) {
      return Promise.reject(this.#unavailable("proposal"));
    }
    this.#proposalSeq++;
    const p = Promise.withResolvers<ProposeResult>();
    this.#proposals.set(id, {
      resolve: p.resolve,
      reject: p.reject,
      deadline: this.#ticks + this.#o.requestTimeoutTicks,
      data,
      term: this.node.term,
    });
    this.#kick();
    // OTel on: a span from proposal to applied here.
    return timed("raft.propose", {
      "raft.node": this.id,
      "raft.op": cmd.op,
      "raft.term": this.node.term,
      "raft.proposal": id,
    }, p.promise);
  }

  /** A linearizable read of `key` (ReadIndex: a quorum confirms the leader first). */
  read(key: string): Promise<ReadResult> {
    if (this.#stopped) {
      return Promise.reject(new RaftUnavailableError("raft node stopped"));
    }
    if (this.#o.unsafeLocalReads) {
      return Promise.resolve({
        value: this.machine.get(key),
        index: this.#applied,
      });
    }
    const ctx = this.#prefix + "r" + ++this.#seq;
    if (!this.node.readIndex(ctx)) {
      return Promise.reject(this.#unavailable("read"));
    }
    const p = Promise.withResolvers<ReadResult>();
    this.#reads.set(ctx, {
      key,
      term: this.node.term,
      resolve: p.resolve,
      reject: p.reject,
      deadline: this.#ticks + this.#o.requestTimeoutTicks,
    });
    this.#kick();
    return p.promise;
  }

  /**
   * Proposes a membership change on the leader; returns the index of its
   * entry, or undefined when refused (not the leader, a change pending, no
   * entry of this term committed yet, or the change is invalid).
   */
  proposeConfChange(cc: ConfChange): number | undefined {
    if (this.#stopped || !this.isLeader()) return undefined;
    if (!this.node.proposeConfChange(cc)) return undefined;
    this.#kick();
    return this.node.log.lastIndex();
  }

  /** The leader's id as this node knows it, or "". */
  leader(): string {
    return this.node.lead;
  }

  /** Whether this node leads. */
  isLeader(): boolean {
    return this.node.role === "leader";
  }

  /** The core's status plus what the driver applied. */
  status(): RaftStatus & { applied: number } {
    return { ...this.node.status(), applied: this.#applied };
  }

  /** Whether a drain of Readys is scheduled or running (simulations flush until idle). */
  get busy(): boolean {
    return this.#draining;
  }

  /** The index the state machine has applied. */
  get applied(): number {
    return this.#applied;
  }

  /** Wall-clock ms of the last message from `peer`. */
  lastHeard(peer: string): number | undefined {
    return this.#lastHeard.get(peer);
  }

  /** Calls `fn` on each change of leader or term this node sees; returns the unsubscribe. */
  onLeaderChange(fn: (c: LeaderChange) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** Stops ticking and fails what is pending; the storage is closed. */
  stop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    clearInterval(this.#timer);
    // A proposal in the log may still commit elsewhere: its outcome is unknown.
    const unknown = new RaftTimeoutError(
      "raft node stopped before answering; the proposal may still commit",
    );
    for (const w of this.#proposals.values()) w.reject(unknown);
    const err = new RaftUnavailableError("raft node stopped");
    for (const w of this.#reads.values()) w.reject(err);
    this.#proposals.clear();
    this.#reads.clear();
    this.#o.storage.close?.();
  }

  #unavailable(what: string): RaftUnavailableError {
    return new RaftUnavailableError(
      `raft ${what} not accepted by ${this.id}: ${
        this.node.lead ? "leadership transfer under way" : "no leader known"
      } (term ${this.node.term}); retry`,
    );
  }

  #kick(): void {
    if (this.#draining || this.#stopped) return;
    this.#draining = true;
    queueMicrotask(() => this.#drain());
  }

  async #drain(): Promise<void> {
    try {
      while (!this.#stopped) {
        this.#reroute();
        if (!this.node.hasReady()) break;
        const rd = this.node.ready();
        await this.#o.storage.save(rd);
        if (this.#stopped) return;
        this.#send(rd.messages);
        if (rd.snapshot) {
          this.machine.restore(rd.snapshot.data);
          this.#applied = rd.snapshot.index;
        }
        for (const e of rd.committed) this.#apply(e);
        for (const r of rd.readStates) this.#readState(r);
        this.node.advance(rd);
        this.#serveReads();
        this.#noteLeader();
        await this.#maybeCompact();
      }
      this.#noteLeader();
    } catch (err) {
      this.stop();
      this.#o.onFatal?.(err);
    } finally {
      this.#draining = false;
    }
  }

  #send(messages: Message[]): void {
    if (messages.length === 0) return;
    const by = new Map<string, Message[]>();
    for (const m of messages) {
      const list = by.get(m.to);
      if (list) list.push(m);
      else by.set(m.to, [m]);
    }
    for (const [to, list] of by) this.#o.send(to, list);
  }

  #apply(e: Entry): void {
    if (e.index <= this.#applied) return;
    this.#applied = e.index;
    if (e.type !== "normal" || e.data === "") return;
    let parsed: { id: string; c: KvCommand };
    try {
      parsed = JSON.parse(e.data);
    } catch {
      return; // not ours: every replica skips it alike
    }
    const result = this.machine.applyProposal(parsed.id, parsed.c);
    const w = this.#proposals.get(parsed.id);
    if (!w) return;
    this.#proposals.delete(parsed.id);
    if (result) w.resolve({ ...result, index: e.index });
    else {
      // The copy applied first came in a snapshot, or this one is below
      // its session's watermark (see AppliedProposals).
      w.reject(
        new RaftTimeoutError(
          `raft proposal ${parsed.id} was skipped at ${e.index}: a copy of it was applied earlier, or it came too late to tell; its outcome is unknown`,
        ),
      );
    }
  }

  /**
   * Proposes again (and asks again for read indexes) what waits since an
   * older term, once this term's leader is known: the old leader may have
   * lost it (stopped, cut off, deposed).
   */
  #reroute(): void {
    const term = this.node.term;
    if (term === this.#routedTerm || this.node.lead === "") return;
    let all = true;
    for (const w of this.#proposals.values()) {
      if (w.term >= term) continue;
      if (this.node.propose(w.data)) w.term = term;
      else all = false; // a transfer under way: again on the next drain
    }
    for (const [ctx, w] of this.#reads) {
      if (w.index !== undefined || w.term >= term) continue;
      if (this.node.readIndex(ctx)) w.term = term;
      else all = false;
    }
    if (all) this.#routedTerm = term;
  }

  #readState(r: ReadState): void {
    const w = this.#reads.get(r.context);
    // A read asked again may be confirmed twice; either index is safe.
    if (w && w.index === undefined) w.index = r.index;
  }

  #serveReads(): void {
    for (const [ctx, w] of this.#reads) {
      if (w.index !== undefined && w.index <= this.#applied) {
        this.#reads.delete(ctx);
        w.resolve({ value: this.machine.get(w.key), index: this.#applied });
      }
    }
  }

  #expire(): void {
    const now = this.#ticks;
    for (const [id, w] of this.#proposals) {
      if (w.deadline <= now) {
        this.#proposals.delete(id);
        w.reject(
          new RaftTimeoutError(
            `raft proposal ${id} not applied within ${this.#o.requestTimeoutTicks} ticks; it may still commit`,
          ),
        );
      }
    }
    for (const [ctx, w] of this.#reads) {
      if (w.deadline <= now) {
        this.#reads.delete(ctx);
        w.reject(
          new RaftTimeoutError(
            `raft read ${ctx} not confirmed within ${this.#o.requestTimeoutTicks} ticks`,
          ),
        );
      }
    }
  }

  #noteLeader(): void {
    const lead = this.node.lead;
    const term = this.node.term;
    if (lead === this.#lead && (term === this.#term || lead === "")) return;
    this.#lead = lead;
    this.#term = term;
    const change: LeaderChange = { leader: lead || null, epoch: term };
    for (const fn of this.#listeners) fn(change);
  }

  async #maybeCompact(): Promise<void> {
    const snapIndex = this.node.snapshot()?.index ?? 0;
    if (
      this.#compacting || !this.#o.storage.compact ||
      this.#applied - snapIndex < this.#o.compactEvery
    ) return;
    this.#compacting = true;
    try {
      const snap = this.node.compact(this.#applied, this.machine.snapshot());
      await this.#o.storage.compact(snap);
    } finally {
      this.#compacting = false;
    }
  }
}
