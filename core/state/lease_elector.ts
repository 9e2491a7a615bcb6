/**
 * A leader elector on Deno KV leases, after Kubernetes client-go's
 * `leaderelection`, plus fencing.
 *
 * Keys (see `core/state/keys.ts`):
 * - `electionKey(name)` → {@linkcode ElectionRecord}
 *   `{holder, nonce, epoch, leaseMs, acquiredAt, renewedAt}`. Every write
 *   (acquire or renew) carries a fresh `nonce`, so a commit whose result is
 *   lost (it threw) is settled by re-reading: our nonce there means it
 *   applied. `(holder, epoch)` names a term; the wall times are informational.
 * - `electionEpochKey(name)` → {@linkcode EpochRecord} `{epoch, holder, nonce}`,
 *   written in the same atomic commit as an acquisition and never on renewal.
 *   Its versionstamp is the fence (see `fence.ts`), and its `epoch` survives
 *   a released (deleted) lease record, so epochs never repeat.
 *
 * Rules:
 * - Acquire when the record is absent, or when its versionstamp has not
 *   changed for a full lease on this node's own monotonic clock, timed from
 *   the moment the read *returned* (later, hence safe). The lease waited is
 *   the longer of ours and the record's `leaseMs`, so a holder configured
 *   with a longer lease is respected. Commit with checks on both keys;
 *   `epoch` = old epoch + 1.
 * - Renew every retry period (jittered up to +20%) with a check on the last
 *   known versionstamp.
 * - Lead (`isLeader()`) only until the start of the last successful renew (or
 *   acquisition) plus the renew deadline; then step down, whatever the KV
 *   call in flight does. A takeover needs a full lease after the record last
 *   changed, and lease > renew deadline, so leader work stops before anyone
 *   else may start, unless clock *rates* differ by more than
 *   leaseMs / renewDeadlineMs (Kubernetes documents the same limit). Fencing
 *   holds even then.
 * - A term this instance held but stepped down from (deadline missed, or an
 *   acquisition whose success was learnt too late) is retaken at once with
 *   epoch + 1: nobody else acts on it. Recognising "ours" uses the
 *   acquisition nonces of this instance, not the node id, so a restarted
 *   process (or a second process wrongly given the same id) waits a full
 *   lease like anyone else.
 * - Every KV call retries "database is locked" and is cut off after
 *   `opTimeoutMs`; a cut-off call is treated like a thrown commit (it may
 *   still apply later), which the nonce and versionstamp checks make safe.
 * - `stop()` steps down first, then deletes the record with a check, so the
 *   next node takes over on its next poll instead of after a lease.
 *
 * Departures from the design guide: checking the lease record's versionstamp
 * in guarded writes would fail after every renew, hence the separate fencing
 * key; and a deposed leader does not resume its old term (it takes a new
 * epoch), which keeps "epochs strictly increase across leaders" true.
 *
 * @module
 */
import { type Clock, systemClock } from "../clock.ts";
import type { LeaderChange } from "../consensus.ts";
import { electionEpochKey, electionKey } from "./keys.ts";
import { retryLocked } from "./store.ts";
import {
  type Checkable,
  fenceCheck,
  type FenceToken,
  NotLeaderError,
} from "./fence.ts";

/** Kubernetes' default lease duration. */
export const DEFAULT_LEASE_MS = 15_000;
/** Kubernetes' default renew deadline. */
export const DEFAULT_RENEW_DEADLINE_MS = 10_000;
/** Kubernetes' default retry period. */
export const DEFAULT_RETRY_PERIOD_MS = 2_000;
/** Each wait between attempts is the retry period times 1 to 1 + this. */
export const RETRY_JITTER = 0.2;
/** How many of its own acquisition nonces an elector remembers. */
const REMEMBERED_ACQUISITIONS = 32;

/** The lease record at `electionKey(name)`. */
export interface ElectionRecord {
  /** Node id of the holder. */
  holder: string;
  /** Fresh on every write, to recognise one's own commit after an error. */
  nonce: string;
  /** The fencing token of the holder's term. */
  epoch: number;
  /** The holder's lease duration; candidates wait at least this long. */
  leaseMs: number;
  /** Wall-clock ms of the acquisition (informational). */
  acquiredAt: number;
  /** Wall-clock ms of the last renewal (informational). */
  renewedAt: number;
}

/** The fencing record at `electionEpochKey(name)`, written only on acquisition. */
export interface EpochRecord {
  /** The epoch of the latest acquisition. */
  epoch: number;
  /** Who acquired it. */
  holder: string;
  /** The acquisition's nonce (equal to the lease record's at that time). */
  nonce: string;
}

/** The three durations that define the lease. */
export interface LeaseDurations {
  /** How long a candidate must see the record unchanged before taking over. */
  leaseMs: number;
  /** How long after the start of its last successful renew a leader leads. */
  renewDeadlineMs: number;
  /** How often leaders renew and candidates poll (before jitter). */
  retryPeriodMs: number;
}

/** An atomic operation as the elector uses it (a subset of `Deno.AtomicOperation`). */
export interface ElectionAtomic {
  /** Commit only if each key still has the given versionstamp (null: absent). */
  check(...checks: Deno.AtomicCheck[]): ElectionAtomic;
  /** Write `value` at `key`. */
  set(key: Deno.KvKey, value: unknown): ElectionAtomic;
  /** Delete `key`. */
  delete(key: Deno.KvKey): ElectionAtomic;
  /** `{ok: false}` when a check failed; throws when the outcome is unknown. */
  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError>;
}

/** The part of `Deno.Kv` the elector uses, so tests can simulate it. */
export interface ElectionKv {
  /** A consistent snapshot of several keys. */
  getMany(
    keys: Deno.KvKey[],
    options?: { consistency?: Deno.KvConsistencyLevel },
  ): Promise<Deno.KvEntryMaybe<unknown>[]>;
  /** Starts an atomic operation. */
  atomic(): ElectionAtomic;
}

/** Options for {@linkcode LeaseElector}. */
export interface LeaseElectorOptions extends Partial<LeaseDurations> {
  /** The KV holding the election (the raw `Deno.Kv`, not a plugin's scoped view). */
  kv: ElectionKv;
  /** This node's id, written as `holder`. */
  nodeId: string;
  /** Election name; nodes with the same name compete. @default {"plexus"} */
  name?: string;
  /** Time source. @default {systemClock} */
  clock?: Clock;
  /** Longest wait for one KV call before its outcome counts as unknown. @default {retryPeriodMs} */
  opTimeoutMs?: number;
  /** Uniform [0, 1) source for jitter. @default {Math.random} */
  random?: () => number;
  /** Nonce source; must not repeat across processes. @default {crypto.randomUUID} */
  newNonce?: () => string;
  /** Told about KV errors the elector recovered from. */
  onError?: (error: unknown, during: string) => void;
}

/**
 * Throws a RangeError unless leaseMs > renewDeadlineMs > 1.2 × retryPeriodMs,
 * all positive.
 *
 * @example Usage
 * ```ts
 * import { validateLeaseDurations } from "./lease_elector.ts";
 * validateLeaseDurations({ leaseMs: 300, renewDeadlineMs: 200, retryPeriodMs: 50 });
 * ```
 */
export function validateLeaseDurations(d: LeaseDurations): void {
  for (
    const field of ["leaseMs", "renewDeadlineMs", "retryPeriodMs"] as const
  ) {
    const v = d[field];
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      throw new RangeError(
        `Cannot use lease durations: ${field} must be a positive number of ms, got ${v}`,
      );
    }
  }
  if (!(d.leaseMs > d.renewDeadlineMs)) {
    throw new RangeError(
      `Cannot use lease durations: leaseMs (${d.leaseMs}) must be greater than renewDeadlineMs (${d.renewDeadlineMs})`,
    );
  }
  if (!(d.renewDeadlineMs > 1.2 * d.retryPeriodMs)) {
    throw new RangeError(
      `Cannot use lease durations: renewDeadlineMs (${d.renewDeadlineMs}) must be greater than 1.2 × retryPeriodMs (${d.retryPeriodMs}), i.e. more than ${
        1.2 * d.retryPeriodMs
      }`,
    );
  }
}

interface Term {
  epoch: number;
  acquiredAt: number;
  /** Versionstamp of the lease record as last written or seen by us. */
  recordVs: string;
  /** Versionstamp of the fencing record written by our acquisition. */
  epochVs: string;
  /** Monotonic ms after which we must not act as leader. */
  deadline: number;
}

interface Snapshot {
  record: { versionstamp: string | null; value: ElectionRecord | null };
  fence: { versionstamp: string | null; value: EpochRecord | null };
}

const TIMED_OUT = Symbol("timed out");

/**
 * Campaigns for and holds the lease of one election.
 *
 * @example Usage
 * ```ts
 * import { LeaseElector } from "./lease_elector.ts";
 * const kv = await Deno.openKv(":memory:");
 * const elector = new LeaseElector({
 *   kv, nodeId: "n1", leaseMs: 300, renewDeadlineMs: 200, retryPeriodMs: 50,
 * });
 * const led = new Promise((resolve) => elector.onLeaderChange(resolve));
 * elector.start();
 * await led; // { leader: "n1", epoch: 1 }
 * elector.isLeader(); // true
 * await elector.stop(); // steps down and releases the lease
 * kv.close();
 * ```
 */
export class LeaseElector {
  /** The election's name. */
  readonly election: string;
  /** This node's id. */
  readonly nodeId: string;
  /** How long a record must stay unchanged before a takeover. */
  readonly leaseMs: number;
  /** How long after its last successful renew start this node leads. */
  readonly renewDeadlineMs: number;
  /** Renew and poll period, before jitter. */
  readonly retryPeriodMs: number;
  /** Longest wait for one KV call. */
  readonly opTimeoutMs: number;
  #kv: ElectionKv;
  #clock: Clock;
  #random: () => number;
  #newNonce: () => string;
  #onError?: (error: unknown, during: string) => void;
  #recordKey: Deno.KvKey;
  #epochKey: Deno.KvKey;
  #term: Term | null = null;
  #acquisitions: string[] = [];
  #observed: { versionstamp: string; at: number } | null = null;
  /** Monotonic ms at which the observed record's lease runs out, if known. */
  #expiresAt: number | null = null;
  #view: LeaderChange = { leader: null, epoch: 0 };
  #listeners = new Set<(change: LeaderChange) => void>();
  #loop: Promise<void> | null = null;
  #loopAbort: AbortController | null = null;
  #closing = false;
  #deadlineTimer: AbortController | null = null;

  /** Validates the options; call {@linkcode LeaseElector.start} to campaign. */
  constructor(options: LeaseElectorOptions) {
    const durations = {
      leaseMs: options.leaseMs ?? DEFAULT_LEASE_MS,
      renewDeadlineMs: options.renewDeadlineMs ?? DEFAULT_RENEW_DEADLINE_MS,
      retryPeriodMs: options.retryPeriodMs ?? DEFAULT_RETRY_PERIOD_MS,
    };
    validateLeaseDurations(durations);
    const opTimeoutMs = options.opTimeoutMs ?? durations.retryPeriodMs;
    if (!Number.isFinite(opTimeoutMs) || opTimeoutMs <= 0) {
      throw new RangeError(
        `Cannot use opTimeoutMs: expected a positive number of ms, got ${opTimeoutMs}`,
      );
    }
    if (!options.nodeId) {
      throw new TypeError(
        `Cannot start a lease elector without a node id (got ${
          JSON.stringify(options.nodeId)
        })`,
      );
    }
    this.election = options.name ?? "plexus";
    this.nodeId = options.nodeId;
    this.leaseMs = durations.leaseMs;
    this.renewDeadlineMs = durations.renewDeadlineMs;
    this.retryPeriodMs = durations.retryPeriodMs;
    this.opTimeoutMs = opTimeoutMs;
    this.#kv = options.kv;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
    this.#newNonce = options.newNonce ?? (() => crypto.randomUUID());
    this.#onError = options.onError;
    this.#recordKey = electionKey(this.election);
    this.#epochKey = electionEpochKey(this.election);
  }

  /** The leader as this node last saw it (a dead holder until someone takes over), or null. */
  leader(): string | null {
    this.#expireIfDue();
    return this.#view.leader;
  }

  /** Whether this node may do leader work now (before its renew deadline). */
  isLeader(): boolean {
    this.#expireIfDue();
    return this.#term !== null;
  }

  /** The highest epoch this node has seen; 0 before any. */
  epoch(): number {
    this.#expireIfDue();
    return this.#view.epoch;
  }

  /** Calls `fn` on every change of (leader, epoch) this node sees; returns the unsubscribe. */
  onLeaderChange(fn: (change: LeaderChange) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** This term's fence token; throws {@linkcode NotLeaderError} unless leading. */
  fence(): FenceToken {
    if (!this.isLeader()) {
      throw new NotLeaderError(
        `Node '${this.nodeId}' does not lead election '${this.election}' (leader: ${
          this.#view.leader ?? "none"
        }, epoch ${this.#view.epoch})`,
        this.#view.leader,
      );
    }
    const term = this.#term!;
    return {
      election: this.election,
      epoch: term.epoch,
      holder: this.nodeId,
      versionstamp: term.epochVs,
    };
  }

  /**
   * Adds the fence check to `op` (an atomic operation on the raw KV), so it
   * commits only while this term is the latest. Throws
   * {@linkcode NotLeaderError} unless leading.
   */
  guard<A extends Checkable<A>>(op: A): A {
    return op.check(fenceCheck(this.fence()));
  }

  /** Starts campaigning (idempotent). */
  start(): void {
    if (this.#loop) return;
    this.#closing = false;
    const abort = new AbortController();
    this.#loopAbort = abort;
    this.#loop = this.#run(abort.signal);
  }

  /**
   * Steps down at once, stops campaigning, then releases the lease if this
   * node holds it, so the next node need not wait a lease. Resolves early
   * when `signal` aborts (the lease then simply expires).
   */
  async stop(signal?: AbortSignal): Promise<void> {
    const loop = this.#loop;
    if (!loop) return;
    this.#closing = true;
    this.#loopAbort!.abort();
    this.#stepDown();
    const work = loop.then(() => this.#release());
    if (signal) await Promise.race([work, whenAborted(signal)]);
    else await work;
    this.#loop = null;
  }

  async #run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const started = this.#clock.mono();
      try {
        if (this.isLeader()) await this.#renew();
        else await this.#campaign();
      } catch (err) {
        this.#report(err, "read");
      }
      // Leaders renew every 1 to 1.2 periods; candidates poll every 0.8 to 1,
      // so one sees a renewal at most a period after it was written, and they
      // wake exactly when the lease they watch runs out.
      const period = this.retryPeriodMs *
        (this.#term
          ? 1 + RETRY_JITTER * this.#random()
          : 1 - RETRY_JITTER * this.#random());
      let wait = Math.max(0, started + period - this.#clock.mono());
      const expiry = this.#term ? null : this.#expiresAt;
      if (expiry !== null && expiry > this.#clock.mono()) {
        wait = Math.min(wait, expiry - this.#clock.mono());
      }
      try {
        await this.#clock.sleep(wait, signal);
      } catch {
        return;
      }
    }
  }

  async #campaign(): Promise<void> {
    const snap = await this.#read();
    const seenAt = this.#clock.mono();
    this.#observe(snap, seenAt);
    if (!this.#mayTakeOver(snap, seenAt)) return;
    const epoch = Math.max(
      snap.record.value?.epoch ?? 0,
      snap.fence.value?.epoch ?? 0,
    ) + 1;
    const nonce = this.#newNonce();
    this.#acquisitions.push(nonce);
    if (this.#acquisitions.length > REMEMBERED_ACQUISITIONS) {
      this.#acquisitions.shift();
    }
    const wall = this.#clock.now();
    const record: ElectionRecord = {
      holder: this.nodeId,
      nonce,
      epoch,
      leaseMs: this.leaseMs,
      acquiredAt: wall,
      renewedAt: wall,
    };
    const fence: EpochRecord = { epoch, holder: this.nodeId, nonce };
    const start = this.#clock.mono();
    let res: Deno.KvCommitResult | Deno.KvCommitError | undefined;
    try {
      res = await this.#call(() =>
        this.#kv.atomic()
          .check({
            key: this.#recordKey,
            versionstamp: snap.record.versionstamp,
          })
          .check({ key: this.#epochKey, versionstamp: snap.fence.versionstamp })
          .set(this.#recordKey, record)
          .set(this.#epochKey, fence)
          .commit()
      );
    } catch (err) {
      this.#report(err, "acquire");
    }
    if (res?.ok) {
      this.#begin(record, res.versionstamp, res.versionstamp, start);
      return;
    }
    // A failed check means someone moved first: read at once who it was.
    if (res) {
      this.#observe(await this.#read(), this.#clock.mono());
      return;
    }
    // Unknown outcome: the record says whether this attempt won.
    const again = await this.#read();
    if (
      again.record.value?.nonce === nonce && again.fence.value?.nonce === nonce
    ) {
      this.#begin(
        record,
        again.record.versionstamp!,
        again.fence.versionstamp!,
        start,
      );
    } else {
      this.#observe(again, this.#clock.mono());
    }
  }

  async #renew(): Promise<void> {
    const term = this.#term!;
    const nonce = this.#newNonce();
    const record: ElectionRecord = {
      holder: this.nodeId,
      nonce,
      epoch: term.epoch,
      leaseMs: this.leaseMs,
      acquiredAt: term.acquiredAt,
      renewedAt: this.#clock.now(),
    };
    const start = this.#clock.mono();
    let res: Deno.KvCommitResult | Deno.KvCommitError | undefined;
    try {
      res = await this.#call(() =>
        this.#kv.atomic()
          .check({ key: this.#recordKey, versionstamp: term.recordVs })
          .set(this.#recordKey, record)
          .commit()
      );
    } catch (err) {
      this.#report(err, "renew");
    }
    if (res?.ok) {
      this.#extend(term, res.versionstamp, start);
      return;
    }
    // The check failed or the outcome is unknown: the record says which.
    const snap = await this.#read();
    const seen = snap.record.value;
    if (seen?.holder === this.nodeId && seen.epoch === term.epoch) {
      // Still our term. Extend only if this very renew applied; an earlier
      // one that timed out and applied late proves nothing about now.
      if (seen.nonce === nonce) {
        this.#extend(term, snap.record.versionstamp!, start);
      } else term.recordVs = snap.record.versionstamp!;
      return;
    }
    if (this.#term === term) this.#stepDown();
    this.#observe(snap, this.#clock.mono());
  }

  async #release(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const snap = await this.#read();
        if (!this.#isOwn(snap)) return;
        const res = await this.#call(() =>
          this.#kv.atomic()
            .check({
              key: this.#recordKey,
              versionstamp: snap.record.versionstamp,
            })
            .delete(this.#recordKey)
            .commit()
        );
        if (res.ok) return;
      } catch (err) {
        this.#report(err, "release");
      }
    }
  }

  async #read(): Promise<Snapshot> {
    const [record, fence] = await this.#call(() =>
      this.#kv.getMany([this.#recordKey, this.#epochKey], {
        consistency: "strong",
      })
    );
    return {
      record: {
        versionstamp: record.versionstamp,
        value: parseRecord(record.value),
      },
      fence: {
        versionstamp: fence.versionstamp,
        value: parseEpochRecord(fence.value),
      },
    };
  }

  /** Runs one KV call: retries "database is locked", gives up after `opTimeoutMs`. */
  async #call<T>(fn: () => Promise<T>): Promise<T> {
    const op = retryLocked(fn);
    const timer = new AbortController();
    try {
      const result = await Promise.race([
        op,
        this.#clock.sleep(this.opTimeoutMs, timer.signal).then(() => TIMED_OUT),
      ]);
      if (result === TIMED_OUT) {
        op.catch(() => {}); // it may still finish; nobody waits for it
        throw new Error(
          `Deno KV did not answer within ${this.opTimeoutMs} ms (election '${this.election}'); the outcome is unknown`,
        );
      }
      return result as T;
    } finally {
      timer.abort();
    }
  }

  #observe(snap: Snapshot, seenAt: number): void {
    const { record, fence } = snap;
    if (record.versionstamp === null) this.#observed = null;
    else if (this.#observed?.versionstamp !== record.versionstamp) {
      this.#observed = { versionstamp: record.versionstamp, at: seenAt };
    }
    if (this.#term) return;
    const holder = record.value?.holder ?? null;
    this.#setView(
      holder === this.nodeId ? null : holder,
      Math.max(record.value?.epoch ?? 0, fence.value?.epoch ?? 0),
    );
  }

  #mayTakeOver(snap: Snapshot, seenAt: number): boolean {
    this.#expiresAt = null;
    if (snap.record.versionstamp === null) return true;
    if (this.#isOwn(snap)) return true;
    const lease = Math.max(this.leaseMs, snap.record.value?.leaseMs ?? 0);
    this.#expiresAt = this.#observed ? this.#observed.at + lease : null;
    return this.#observed !== null && seenAt - this.#observed.at >= lease;
  }

  /** Whether the lease record belongs to a term this instance acquired. */
  #isOwn(snap: Snapshot): boolean {
    const { record, fence } = snap;
    return record.value?.holder === this.nodeId && fence.value !== null &&
      fence.value.epoch === record.value.epoch &&
      this.#acquisitions.includes(fence.value.nonce);
  }

  #begin(
    record: ElectionRecord,
    recordVs: string,
    epochVs: string,
    start: number,
  ): void {
    const deadline = start + this.renewDeadlineMs;
    // Learnt too late to act on, or while stopping: the record stays ours
    // without belief; the next campaign (or the release) deals with it.
    if (this.#closing || this.#clock.mono() >= deadline) return;
    this.#term = {
      epoch: record.epoch,
      acquiredAt: record.acquiredAt,
      recordVs,
      epochVs,
      deadline,
    };
    this.#observed = { versionstamp: recordVs, at: this.#clock.mono() };
    this.#armDeadline();
    this.#setView(this.nodeId, record.epoch);
  }

  #extend(term: Term, versionstamp: string, start: number): void {
    term.recordVs = versionstamp;
    if (this.#term !== term) return;
    if (this.#clock.mono() >= term.deadline) {
      this.#stepDown();
      return;
    }
    term.deadline = Math.max(term.deadline, start + this.renewDeadlineMs);
    this.#armDeadline();
  }

  #armDeadline(): void {
    this.#deadlineTimer?.abort();
    const term = this.#term!;
    const timer = new AbortController();
    this.#deadlineTimer = timer;
    this.#clock.sleep(
      Math.max(0, term.deadline - this.#clock.mono()),
      timer.signal,
    ).then(() => {
      // Re-arming replaces the timer, so reaching here means the deadline passed.
      if (this.#deadlineTimer === timer && this.#term === term) {
        this.#stepDown();
      }
    }, () => {});
  }

  #expireIfDue(): void {
    if (this.#term && this.#clock.mono() >= this.#term.deadline) {
      this.#stepDown();
    }
  }

  #stepDown(): void {
    const term = this.#term;
    if (!term) return;
    this.#term = null;
    this.#deadlineTimer?.abort();
    this.#deadlineTimer = null;
    this.#setView(null, term.epoch);
  }

  #setView(leader: string | null, epoch: number): void {
    const next = { leader, epoch: Math.max(epoch, this.#view.epoch) };
    if (next.leader === this.#view.leader && next.epoch === this.#view.epoch) {
      return;
    }
    this.#view = next;
    for (const fn of [...this.#listeners]) {
      try {
        fn({ ...next });
      } catch (err) {
        this.#report(err, "listener");
      }
    }
  }

  #report(error: unknown, during: string): void {
    try {
      this.#onError?.(error, during);
    } catch {
      // An error reporter that throws must not stop the election.
    }
  }
}

function whenAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null;
}

function finite(v: unknown, fallback: number): number {
  return typeof v === "number" && Number.isFinite(v) ? v : fallback;
}

/** Reads a lease record leniently; null when it is not one. */
function parseRecord(v: unknown): ElectionRecord | null {
  if (!isObject(v) || typeof v.holder !== "string") return null;
  return {
    holder: v.holder,
    nonce: typeof v.nonce === "string" ? v.nonce : "",
    epoch: finite(v.epoch, 0),
    leaseMs: Math.max(0, finite(v.leaseMs, 0)),
    acquiredAt: finite(v.acquiredAt, 0),
    renewedAt: finite(v.renewedAt, 0),
  };
}

/** Reads a fencing record leniently; null when it is not one. */
function parseEpochRecord(v: unknown): EpochRecord | null {
  if (!isObject(v) || typeof v.epoch !== "number") return null;
  return {
    epoch: finite(v.epoch, 0),
    holder: typeof v.holder === "string" ? v.holder : "",
    nonce: typeof v.nonce === "string" ? v.nonce : "",
  };
}
