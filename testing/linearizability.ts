/**
 * A linearizability checker for histories of concurrent clients.
 *
 * It is the Wing–Gong search with Lowe's memoization, as Porcupine
 * (anishathalye/porcupine, `checker.go`) does it: the call and return events
 * of every operation, sorted by time, form a doubly linked list; the search
 * walks it, "lifts" an operation out of the list when the model accepts it
 * as the next one to take effect, and backtracks (unlifts) when it meets a
 * return event whose operation has not taken effect yet. A cache of
 * (set of linearized operations, model state) pairs already explored prunes
 * the search (Lowe, "Testing for linearizability", 2017), and the history is
 * split into independent partitions first (per key for a key-value store:
 * linearizability is compositional), each checked on its own.
 *
 * - An operation that never returned (a crashed or timed-out client) has
 *   return time `Infinity` and output `undefined`: it may have taken effect
 *   at any time after its call, or never. The model must accept any output
 *   for it, and the search does not require it to be linearized.
 * - Events at the same instant count as concurrent (calls sort before
 *   returns), as in Porcupine.
 * - A deadline (`timeoutMs`, checked every 1024 search steps) turns an
 *   unfinished search into `"unknown"`: the problem is NP-complete, and a
 *   pathological history would otherwise run for ever.
 * - On `"illegal"`, {@linkcode checkDetailed} re-runs the failing partition
 *   keeping, for every operation, the longest linearizable prefix that
 *   contains it (Porcupine's partial linearizations), and explains the
 *   longest one: what took effect, in which order, the state after each, and
 *   which operations could not come next.
 *
 * Beyond Porcupine (the tests check each against a brute-force search on
 * thousands of small random histories):
 * - read-only operations (`Model.readOnly`: reads, failed cas) are never
 *   backtracked over — if one fits now it could go first in any order that
 *   works (8x fewer steps on a 12-client history);
 * - the cache holds nodes whose search failed, and a failed node also
 *   covers nodes with the same returned operations and state but more
 *   pending operations linearized (those need not have happened);
 * - pending operations that would not change the state are not lifted
 *   (pending read-only ones are dropped up front), nor is an overwriting
 *   one (`Model.overwrites`: a blind write) right after another pending one
 *   — any order that works still works without the skipped lifts;
 * - with pending operations, Porcupine's candidate order and one that tries
 *   pending operations last run interleaved, the first to finish answering;
 * - an operation with an unknown output that returns after every call (how
 *   Porcupine's harness closes crashed operations, at the end of the
 *   history) is taken as pending: nothing starts after it, so it may go
 *   last, unseen — on Porcupine's Jepsen etcd histories this turns the
 *   slowest (800 ms) into milliseconds (`bench/peers/porcupine.ts`).
 *
 * Some histories still take exponential time (the problem is NP-complete;
 * many overlapping pending cas operations, say): the deadline is the
 * answer to that.
 *
 * @module
 */

/** One operation of a client, from its call to its return. */
export interface Operation<I, O> {
  /** Which client (process) ran it; a client runs one operation at a time. */
  clientId: number;
  /** What was asked, e.g. `{ op: "write", key: "x", value: 1 }`. */
  input: I;
  /** When the client called it (any monotonic time unit). */
  call: number;
  /** What came back; `undefined` when unknown (the client never got it). */
  output: O | undefined;
  /** When it returned; `Infinity` if it never did. */
  return: number;
}

/**
 * A sequential specification: the state machine a linearizable history must
 * be explainable by.
 */
export interface Model<S, I, O> {
  /** The initial state. */
  init(): S;
  /**
   * Whether `input` may take effect in `state` and produce `output`, and
   * the state after it. `output` is `undefined` for an operation whose
   * result is unknown: accept it (any output is possible). Must not mutate
   * `state`.
   */
  step(state: S, input: I, output: O | undefined): [ok: boolean, next: S];
  /**
   * Whether this operation, whenever `step` accepts it, leaves the state as
   * it was (a read; a cas that failed). The search then never backtracks
   * over it: if it fits now, it could go first in any order that works
   * (an exchange argument; not in Porcupine). Answering `true` for an
   * operation that can change the state makes the checker unsound.
   * @default every operation may change the state
   */
  readOnly?(input: I, output: O | undefined): boolean;
  /**
   * Whether this operation is accepted in every state and leaves one that
   * does not depend on the state before (a blind write). Used for pending
   * operations: one of these right after another pending one makes that
   * one pointless, so the search does not try it there. Answering `true`
   * wrongly makes the checker unsound.
   * @default no operation overwrites
   */
  overwrites?(input: I, output: O | undefined): boolean;
  /** State equality for the cache. @default `Object.is` */
  equal?(a: S, b: S): boolean;
  /**
   * Splits a history into parts that can be checked independently (each
   * part starts from `init()`). @default the whole history is one part
   */
  partition?(history: Operation<I, O>[]): Operation<I, O>[][];
  /** A short text for an operation, e.g. `read(x) -> 1`. */
  describeOperation?(input: I, output: O | undefined): string;
  /** A short text for a state. @default `JSON.stringify` */
  describeState?(state: S): string;
}

/** The answer of a check. `"unknown"`: the deadline passed first. */
export type CheckResult = "ok" | "illegal" | "unknown";

/** Options of {@linkcode check} and {@linkcode checkDetailed}. */
export interface CheckOptions {
  /**
   * Give up with `"unknown"` after this long (measured with `now`).
   * @default Infinity
   */
  timeoutMs?: number;
  /**
   * The clock the deadline is measured on, in milliseconds; inject a fake
   * one to make timeouts deterministic in tests.
   * @default performance.now
   */
  now?: () => number;
}

/** Why a history is not linearizable: one partition explained. */
export interface IllegalDiagnostic<I, O> {
  /** Index of the failing partition (in the model's partition order). */
  partition: number;
  /** How many partitions the history has. */
  partitions: number;
  /** The failing partition's operations (indices below point here). */
  operations: Operation<I, O>[];
  /** The longest linearizable prefix found, in the order it took effect. */
  longest: Operation<I, O>[];
  /** Model state after each operation of `longest`, described. */
  states: string[];
  /**
   * The returned operations that could have come next after `longest`
   * (called before the earliest return still outstanding), none of which
   * the model accepts there. Pending ones are left out: they need not
   * happen.
   */
  stuck: Operation<I, O>[];
  /**
   * Porcupine's partial linearizations: for each operation, the longest
   * linearizable prefix containing it, deduplicated; indices into
   * `operations`. Absent if the re-run for the diagnostic hit the deadline.
   */
  partialLinearizations?: number[][];
  /** All of the above as readable text. */
  text: string;
}

/** The result of {@linkcode checkDetailed}. */
export interface CheckReport<I, O> {
  /** The answer. */
  result: CheckResult;
  /** How many partitions the history has. */
  partitions: number;
  /** How many of them were fully decided before the answer. */
  decided: number;
  /** Search steps taken, over all partitions (a machine-independent cost). */
  steps: number;
  /** On `"illegal"`: which partition fails and why. */
  illegal?: IllegalDiagnostic<I, O>;
  /**
   * On `"ok"`: for each partition, an order in which its operations can
   * take effect (pending operations that need not are left out).
   */
  linearizations?: Operation<I, O>[][];
}

/** How many operations of the longest prefix the diagnostic text shows. */
const PREFIX_LINES = 40;
/** Search steps between two looks at the clock. */
const CLOCK_EVERY = 1024;
const NIL = -1;

/** Raised inside the search when the deadline has passed. */
class DeadlineExceeded extends Error {
  override name = "DeadlineExceeded";
}

interface SingleResult {
  ok: boolean;
  /** For each operation, the longest linearizable prefix containing it. */
  longest?: (number[] | undefined)[];
  /** The full linearization when `ok` (pending operations may be absent). */
  order?: number[];
}

/** Deadline bookkeeping shared by the partitions of one check. */
interface Budget {
  deadline: number;
  now: () => number;
  steps: number;
}

/**
 * Searches one partition. Pending operations make the best order of trying
 * candidates depend on the history: lifting them as soon as they are called
 * (Porcupine's order) wins when their effects are soon observed (random
 * crash-heavy histories: 2-6x fewer steps); trying them after the returned
 * ones, so that failed nodes with fewer of them cover the ones with more,
 * wins when many never took effect (Jepsen etcd logs 000 and 002 from
 * Porcupine's test data: 160x fewer). Neither wins everywhere (on lossy
 * register histories each alone took 7-17x the steps of the two together),
 * so with pending operations both searches run interleaved, 1024 steps at
 * a time, and the first to finish answers.
 */
function searchPartition<S, I, O>(
  model: Model<S, I, O>,
  ops: Operation<I, O>[],
  budget: Budget,
  computePartial: boolean,
): SingleResult {
  // An unknown-outcome operation that returns after every call is pending
  // in all but name: nothing starts after it, so where it lands in an order
  // is unconstrained, and one that "never happened" can go last (the model
  // accepts an unknown output in any state; its effect is then seen by no
  // one). Porcupine's harness closes crashed operations at the end of the
  // history like that; as pending ones, the search may leave them out.
  let lastCall = -Infinity;
  for (const op of ops) if (op.call > lastCall) lastCall = op.call;
  const pending = (op: Operation<I, O>) =>
    op.return === Infinity ||
    (op.output === undefined && op.return >= lastCall);
  // Pending read-only operations never matter (they need not happen, and
  // change nothing if they do); left in, every scan would walk past them.
  const kept = ops.flatMap((op, i) =>
    pending(op) && model.readOnly?.(op.input, op.output) ? [] : [i]
  );
  const sub = kept.map((i) => {
    const op = ops[i];
    return op.return !== Infinity && pending(op)
      ? { ...op, return: Infinity }
      : op;
  });
  const same = kept.length === ops.length &&
    sub.every((op, i) => op === ops[i]);
  const searches = [checkSingle(model, sub, budget, computePartial, false)];
  if (sub.some((op) => op.return === Infinity)) {
    searches.push(checkSingle(model, sub, budget, computePartial, true));
  }
  for (;;) {
    for (const search of searches) {
      const step = search.next();
      if (!step.done) continue;
      const result = same ? step.value : renumber(step.value, kept, ops.length);
      return result.order
        ? { ...result, order: closeOrder(ops, result.order) }
        : result;
    }
    if (budget.now() > budget.deadline) throw new DeadlineExceeded();
  }
}

/**
 * A linearization with every returned operation in it: the ones the search
 * took as pending (unknown outcome, returning after every call) and left
 * out go last, where nothing sees them.
 */
function closeOrder<I, O>(ops: Operation<I, O>[], order: number[]): number[] {
  const placed = new Set(order);
  const left = ops.flatMap((op, i) =>
    op.return !== Infinity && !placed.has(i) ? [i] : []
  );
  return left.length === 0 ? order : [...order, ...left];
}

/** Maps a result on `kept` operations back to indices of all `n`. */
function renumber(
  result: SingleResult,
  kept: number[],
  n: number,
): SingleResult {
  const mapped = new Map<number[], number[]>();
  const map = (seq: number[]) => {
    let m = mapped.get(seq);
    if (!m) mapped.set(seq, m = seq.map((k) => kept[k]));
    return m;
  };
  let longest: (number[] | undefined)[] | undefined;
  if (result.longest) {
    longest = new Array(n);
    result.longest.forEach((seq, k) => {
      if (seq) longest![kept[k]] = map(seq);
    });
  }
  return {
    ok: result.ok,
    longest,
    order: result.order && map(result.order),
  };
}

/**
 * The search on one partition (Porcupine's `checkSingle`), yielding every
 * 1024 steps. Operation `i` has its call event at index `2i` and its return
 * event at `2i + 1`; the list head is `2n`.
 */
function* checkSingle<S, I, O>(
  model: Model<S, I, O>,
  ops: Operation<I, O>[],
  budget: Budget,
  computePartial: boolean,
  pendingLast: boolean,
): Generator<void, SingleResult> {
  const n = ops.length;
  const head = 2 * n;
  const time = new Float64Array(2 * n);
  for (let i = 0; i < n; i++) {
    time[2 * i] = ops[i].call;
    time[2 * i + 1] = ops[i].return;
  }
  const sorted = Array.from({ length: 2 * n }, (_, e) => e);
  // By time; at the same instant calls first (the two overlap), then by id.
  sorted.sort((a, b) => time[a] - time[b] || (a & 1) - (b & 1) || a - b);
  const next = new Int32Array(2 * n + 1);
  const prev = new Int32Array(2 * n + 1);
  let last = head;
  for (const e of sorted) {
    next[last] = e;
    prev[e] = last;
    last = e;
  }
  next[last] = NIL;
  prev[head] = NIL;

  const equal = model.equal ?? Object.is;
  const words = new Uint32Array((n + 31) >>> 5);
  // Operations that never returned: a set of them linearized is never
  // better than a subset of it (the rest may simply not have happened).
  const pendingMask = new Uint32Array(words.length);
  const never = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (ops[i].return !== Infinity) continue;
    pendingMask[i >>> 5] |= 1 << (i & 31);
    never[i] = 1;
  }
  // Zobrist hashing: the hash of the linearized set (its returned
  // operations only, so that sets differing in pending ones meet in one
  // bucket) is the XOR of its members' random keys, updated in O(1) per
  // lift/unlift; the cache compares words only within a bucket.
  const zobrist = new Int32Array(n);
  let seed = 0x9e3779b9 ^ n;
  for (let i = 0; i < n; i++) {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    zobrist[i] = ops[i].return === Infinity ? 0 : t ^ (t >>> 14);
  }
  let hash = 0;
  // Lowe's cache, of nodes whose search failed: (linearized set, state).
  const failed = new FailedNodes<S>(words.length, pendingMask, equal);
  const callStack: number[] = [];
  const stateStack: S[] = [];
  const longest: (number[] | undefined)[] | undefined = computePartial
    ? new Array(n)
    : undefined;

  // For each lifted operation, whether it is read-only: if the search
  // fails after lifting one, it fails without it too (it could have gone
  // first in any order that works), so backtracking goes past it instead of
  // trying the alternatives to it.
  const readOnly = new Uint8Array(n);
  if (model.readOnly) {
    for (let i = 0; i < n; i++) {
      readOnly[i] = model.readOnly(ops[i].input, ops[i].output) ? 1 : 0;
    }
  }
  const unchanged: number[] = [];
  const overwrites = new Uint8Array(n);
  if (model.overwrites) {
    for (let i = 0; i < n; i++) {
      overwrites[i] = model.overwrites(ops[i].input, ops[i].output) ? 1 : 0;
    }
  }
  // With `pendingLast`, candidates are scanned twice: returned operations
  // (pass 0), then pending ones (pass 1).
  const pending = pendingLast ? never : new Uint8Array(n);
  let pass = 0;

  let state = model.init();
  let entry = next[head];
  let sinceClock = 0;
  while (next[head] !== NIL) {
    if (++sinceClock === CLOCK_EVERY) {
      budget.steps += sinceClock;
      sinceClock = 0;
      yield;
    }
    if ((entry & 1) === 0) {
      const op = entry >>> 1;
      if (pending[op] !== pass) {
        entry = next[entry];
        continue;
      }
      const [ok, newState] = model.step(state, ops[op].input, ops[op].output);
      // A pending operation that would change nothing is never needed: any
      // order that works still works without it. Nor is an overwriting one
      // (a blind write) right after another pending one: that one could as
      // well not have happened, and the parent tries the write alone.
      if (
        ok &&
        !(never[op] === 1 &&
          (equal(newState, state) ||
            (overwrites[op] === 1 && callStack.length > 0 &&
              never[callStack[callStack.length - 1] >>> 1] === 1)))
      ) {
        const word = op >>> 5;
        const bit = 1 << (op & 31);
        words[word] |= bit;
        const newHash = hash ^ zobrist[op];
        if (!failed.covers(newHash, words, newState, never[op] === 1)) {
          callStack.push(entry);
          stateStack.push(state);
          unchanged.push(readOnly[op]);
          state = newState;
          hash = newHash;
          lift(next, prev, entry);
          entry = next[head];
          pass = 0;
          continue;
        }
        words[word] &= ~bit;
      }
      entry = next[entry];
    } else {
      // The first outstanding return: its operation had to take effect by
      // now. If it never returned, only pending operations are left, and
      // they need not take effect at all.
      if (pass === 0) {
        if (time[entry] === Infinity) break;
        if (pendingLast) {
          pass = 1;
          entry = next[head];
          continue;
        }
      }
      if (callStack.length === 0) {
        budget.steps += sinceClock;
        return { ok: false, longest };
      }
      if (longest) recordPrefix(longest, callStack);
      let again: number;
      do {
        failed.add(
          hash,
          words,
          state,
          never[callStack[callStack.length - 1] >>> 1] === 1,
        );
        entry = callStack.pop()!;
        state = stateStack.pop()!;
        again = unchanged.pop()!;
        const op = entry >>> 1;
        words[op >>> 5] &= ~(1 << (op & 31));
        hash ^= zobrist[op];
        unlift(next, prev, entry);
      } while (again === 1 && callStack.length > 0);
      if (again === 1) {
        budget.steps += sinceClock;
        return { ok: false, longest };
      }
      pass = pending[entry >>> 1];
      entry = next[entry];
    }
  }
  budget.steps += sinceClock;
  const order = callStack.map((e) => e >>> 1);
  if (longest) longest.fill(order);
  return { ok: true, longest, order };
}

/**
 * The nodes whose search failed, grouped by the hash of their returned
 * operations and then by state (primitive states directly, others in one
 * group compared with `equal`). A node is covered by a failed one with the
 * same returned operations linearized, an equal state, and a subset of its
 * pending ones; adding a node drops the ones it covers.
 */
class FailedNodes<S> {
  #groups = new Map<number, Map<unknown, FailedNode<S>[]>>();
  #pendingMask: Uint32Array;
  #equal: (a: S, b: S) => boolean;
  #length: number;

  constructor(
    length: number,
    pendingMask: Uint32Array,
    equal: (a: S, b: S) => boolean,
  ) {
    this.#length = length;
    this.#pendingMask = pendingMask;
    this.#equal = equal;
  }

  covers(
    hash: number,
    words: Uint32Array,
    state: S,
    restricted: boolean,
  ): boolean {
    const group = this.#groups.get(hash)?.get(groupKey(state));
    if (!group) return false;
    for (const f of group) {
      if (this.#covering(f, words, state, restricted)) return true;
    }
    return false;
  }

  add(hash: number, words: Uint32Array, state: S, restricted: boolean): void {
    let byState = this.#groups.get(hash);
    if (!byState) this.#groups.set(hash, byState = new Map());
    const key = groupKey(state);
    const node = { words: words.slice(), state, restricted };
    const group = byState.get(key);
    if (!group) {
      byState.set(key, [node]);
      return;
    }
    // Keep the group an antichain: drop what the new node covers.
    let kept = 0;
    for (const f of group) {
      if (!this.#covering(node, f.words, f.state, f.restricted)) {
        group[kept++] = f;
      }
    }
    group.length = kept;
    group.push(node);
  }

  /**
   * Whether failed node `f` covers the node given: the same returned
   * operations linearized, `f`'s pending ones a subset of its, an equal
   * state, and no fewer next steps allowed at `f`.
   */
  #covering(
    f: FailedNode<S>,
    words: Uint32Array,
    state: S,
    restricted: boolean,
  ): boolean {
    if (f.restricted && !restricted) return false;
    const fw = f.words;
    for (let i = 0; i < this.#length; i++) {
      if (
        ((fw[i] ^ words[i]) & ~this.#pendingMask[i]) !== 0 ||
        (fw[i] & ~words[i]) !== 0
      ) {
        return false;
      }
    }
    return this.#equal(f.state, state);
  }
}

interface FailedNode<S> {
  words: Uint32Array;
  state: S;
  /** Its last lift was pending: overwriting pending ones may not follow. */
  restricted: boolean;
}

const OBJECT_STATE = Symbol("object state");
function groupKey(state: unknown): unknown {
  return state !== null &&
      (typeof state === "object" || typeof state === "function")
    ? OBJECT_STATE
    : state;
}

/** Takes call event `e` and its return `e + 1` out of the list. */
function lift(next: Int32Array, prev: Int32Array, e: number): void {
  next[prev[e]] = next[e];
  prev[next[e]] = prev[e];
  const r = e + 1;
  next[prev[r]] = next[r];
  if (next[r] !== NIL) prev[next[r]] = prev[r];
}

/** Puts them back (their own links were left untouched by `lift`). */
function unlift(next: Int32Array, prev: Int32Array, e: number): void {
  const r = e + 1;
  next[prev[r]] = r;
  if (next[r] !== NIL) prev[next[r]] = r;
  next[prev[e]] = e;
  prev[next[e]] = e;
}

function recordPrefix(
  longest: (number[] | undefined)[],
  callStack: number[],
): void {
  let seq: number[] | undefined;
  for (const e of callStack) {
    const op = e >>> 1;
    const best = longest[op];
    if (best === undefined || callStack.length > best.length) {
      seq ??= callStack.map((c) => c >>> 1);
      longest[op] = seq;
    }
  }
}

function validate<I, O>(history: Operation<I, O>[]): void {
  history.forEach((op, i) => {
    if (!Number.isFinite(op.call)) {
      throw new RangeError(
        `Cannot check history: operation ${i} has call time ${op.call}, expected a finite number`,
      );
    }
    if (Number.isNaN(op.return) || op.return < op.call) {
      throw new RangeError(
        `Cannot check history: operation ${i} returns at ${op.return}, before its call at ${op.call}`,
      );
    }
  });
}

/**
 * Checks whether `history` is linearizable with respect to `model`.
 *
 * @example A write, then a read that sees it
 * ```ts
 * import { check, kvModel } from "./linearizability.ts";
 * const result = check(kvModel(), [
 *   { clientId: 0, input: { op: "write", key: "x", value: 1 }, output: { ok: true }, call: 0, return: 10 },
 *   { clientId: 1, input: { op: "read", key: "x" }, output: { value: 1 }, call: 5, return: 15 },
 * ]);
 * if (result !== "ok") throw new Error(result);
 * ```
 */
export function check<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  options: CheckOptions = {},
): CheckResult {
  return run(model, history, options, false).result;
}

/**
 * Like {@linkcode check}, but also says, when the history is not
 * linearizable, which partition fails and why (see
 * {@linkcode IllegalDiagnostic}; `report.illegal.text` is readable).
 *
 * @example A read that misses a write which completed before it started
 * ```ts
 * import { checkDetailed, kvModel } from "./linearizability.ts";
 * const report = checkDetailed(kvModel(), [
 *   { clientId: 0, input: { op: "write", key: "x", value: 1 }, output: { ok: true }, call: 0, return: 10 },
 *   { clientId: 1, input: { op: "read", key: "x" }, output: { value: null }, call: 20, return: 30 },
 * ]);
 * if (report.result !== "illegal") throw new Error(report.result);
 * // "... then none of these can take effect (state 1):
 * //   client 1: read(x) -> null  [t 20..30]  (rejected by the model)"
 * if (!report.illegal!.text.includes("read(x) -> null")) throw new Error(report.illegal!.text);
 * ```
 */
export function checkDetailed<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  options: CheckOptions = {},
): CheckReport<I, O> {
  return run(model, history, options, true);
}

function run<S, I, O>(
  model: Model<S, I, O>,
  history: Operation<I, O>[],
  options: CheckOptions,
  explain: boolean,
): CheckReport<I, O> {
  validate(history);
  const now = options.now ?? (() => performance.now());
  const timeoutMs = options.timeoutMs ?? Infinity;
  if (!(timeoutMs >= 0)) {
    throw new RangeError(
      `Cannot check history: timeoutMs must be >= 0, got ${timeoutMs}`,
    );
  }
  const budget: Budget = { deadline: now() + timeoutMs, now, steps: 0 };
  const parts = model.partition ? model.partition(history) : [history];
  // Small partitions first: an illegal one is then found sooner.
  const order = parts.map((_, i) => i).sort((a, b) =>
    parts[a].length - parts[b].length
  );
  let decided = 0;
  const linearizations: Operation<I, O>[][] = new Array(parts.length);
  for (const p of order) {
    let single: SingleResult;
    try {
      single = searchPartition(model, parts[p], budget, false);
    } catch (e) {
      if (!(e instanceof DeadlineExceeded)) throw e;
      return {
        result: "unknown",
        partitions: parts.length,
        decided,
        steps: budget.steps,
      };
    }
    decided++;
    if (single.ok) {
      if (explain) linearizations[p] = single.order!.map((i) => parts[p][i]);
      continue;
    }
    const report: CheckReport<I, O> = {
      result: "illegal",
      partitions: parts.length,
      decided,
      steps: budget.steps,
    };
    if (explain) {
      report.illegal = diagnose(model, parts, p, budget);
      report.steps = budget.steps;
    }
    return report;
  }
  return {
    result: "ok",
    partitions: parts.length,
    decided,
    steps: budget.steps,
    ...(explain ? { linearizations } : {}),
  };
}

/** Re-runs partition `p` with partial linearizations and explains it. */
function diagnose<S, I, O>(
  model: Model<S, I, O>,
  parts: Operation<I, O>[][],
  p: number,
  budget: Budget,
): IllegalDiagnostic<I, O> {
  const ops = parts[p];
  let partials: number[][] | undefined;
  try {
    const { longest } = searchPartition(model, ops, budget, true);
    const unique = new Set<number[]>();
    for (const seq of longest!) if (seq) unique.add(seq);
    partials = [...unique].sort((a, b) => b.length - a.length);
  } catch (e) {
    // The verdict stands; only the explanation is cut short.
    if (!(e instanceof DeadlineExceeded)) throw e;
  }
  const best = partials?.[0] ?? [];
  const describeState = model.describeState ??
    ((s: S) => JSON.stringify(s) ?? String(s));
  const states: string[] = [];
  let state = model.init();
  for (const i of best) {
    state = model.step(state, ops[i].input, ops[i].output)[1];
    states.push(describeState(state));
  }
  const taken = new Set(best);
  const rest = ops.map((_, i) => i).filter((i) => !taken.has(i));
  const firstReturn = rest.reduce(
    (t, i) => Math.min(t, ops[i].return),
    Infinity,
  );
  const stuck = rest.filter((i) =>
    ops[i].call <= firstReturn && ops[i].return !== Infinity
  );
  const lines = [
    `not linearizable: partition ${
      p + 1
    } of ${parts.length} (${ops.length} operations)`,
  ];
  if (!partials) {
    lines.push("(the deadline passed before the longest prefix was found)");
  }
  lines.push(
    `longest linearizable prefix: ${best.length} of ${ops.length} operations`,
  );
  const width = String(best.length).length;
  // The end of the prefix is where it goes wrong; the start is in `longest`.
  const shown = Math.max(0, best.length - PREFIX_LINES);
  if (shown > 0) lines.push(`  ... ${shown} earlier operation(s)`);
  best.forEach((i, k) => {
    if (k < shown) return;
    lines.push(
      `  ${String(k + 1).padStart(width)}. ${
        describeOp(model, ops[i])
      }  => state ${states[k]}`,
    );
  });
  lines.push(
    `then none of these can take effect (state ${
      best.length ? states[states.length - 1] : describeState(model.init())
    }):`,
  );
  for (const i of stuck) {
    const [ok] = model.step(state, ops[i].input, ops[i].output);
    lines.push(
      `  ${describeOp(model, ops[i])}  ${
        ok ? "(accepted, but no continuation works)" : "(rejected by the model)"
      }`,
    );
    // What it had to come after: often the write a stale read missed.
    let before = -1;
    ops.forEach((op, j) => {
      if (
        op.return < ops[i].call &&
        (before < 0 || op.return > ops[before].return)
      ) {
        before = j;
      }
    });
    if (before >= 0) {
      lines.push(
        `    called after this returned: ${describeOp(model, ops[before])}`,
      );
    }
  }
  lines.push(
    `${rest.length} operation(s) never linearized; ${
      partials?.length ?? 0
    } distinct partial linearization(s)`,
  );
  return {
    partition: p,
    partitions: parts.length,
    operations: ops,
    longest: best.map((i) => ops[i]),
    states,
    stuck: stuck.map((i) => ops[i]),
    partialLinearizations: partials,
    text: lines.join("\n"),
  };
}

function describeOp<S, I, O>(
  model: Model<S, I, O>,
  op: Operation<I, O>,
): string {
  const what = model.describeOperation
    ? model.describeOperation(op.input, op.output)
    : `${JSON.stringify(op.input)} -> ${
      op.output === undefined ? "?" : JSON.stringify(op.output)
    }`;
  const end = op.return === Infinity ? "∞" : String(op.return);
  return `client ${op.clientId}: ${what}  [t ${op.call}..${end}]`;
}

/** A value in the key-value model; keys start out `null`. */
export type KvValue = string | number | boolean | null;

/** An operation on the key-value model. */
export type KvInput =
  | { op: "read"; key: string }
  | { op: "write"; key: string; value: KvValue }
  | { op: "cas"; key: string; expected: KvValue; value: KvValue };

/**
 * What a key-value operation returned: `{ value }` for a read, `{ ok }` for
 * a write (always `true`) or a cas (whether it swapped). A write or cas that
 * definitely failed never took effect: leave it out of the history
 * ({@linkcode HistoryRecorder.fail}).
 */
export type KvOutput = { value: KvValue } | { ok: boolean };

/**
 * A linearizable key-value store of registers with `read`, `write` and
 * `cas` (compare-and-set: succeeds iff the current value equals
 * `expected`), partitioned per key. An unknown output (`undefined`) is
 * accepted: a read may have seen anything, a write or cas applies as it
 * would have.
 *
 * @example
 * ```ts
 * import { kvModel } from "./linearizability.ts";
 * const model = kvModel();
 * const [ok, next] = model.step(null, { op: "cas", key: "x", expected: null, value: 1 }, { ok: true });
 * if (!ok || next !== 1) throw new Error("cas from the initial null should swap");
 * ```
 */
export function kvModel(): Model<KvValue, KvInput, KvOutput> {
  return {
    init: () => null,
    overwrites: (input) => input.op === "write",
    readOnly: (input, output) =>
      input.op === "read" ||
      (input.op === "cas" && output !== undefined && "ok" in output &&
        !output.ok),
    step(state, input, output) {
      switch (input.op) {
        case "read":
          return [
            output === undefined ||
            ("value" in output && output.value === state),
            state,
          ];
        case "write":
          return [true, input.value];
        case "cas": {
          const swaps = state === input.expected;
          if (output !== undefined && "ok" in output && output.ok !== swaps) {
            return [false, state];
          }
          return [true, swaps ? input.value : state];
        }
      }
    },
    partition(history) {
      const byKey = new Map<string, Operation<KvInput, KvOutput>[]>();
      for (const op of history) {
        const part = byKey.get(op.input.key);
        if (part) part.push(op);
        else byKey.set(op.input.key, [op]);
      }
      return [...byKey.values()];
    },
    describeOperation(input, output) {
      const v = (x: KvValue) => JSON.stringify(x);
      const out = output === undefined
        ? "?"
        : "value" in output
        ? v(output.value)
        : output.ok
        ? "ok"
        : "failed";
      switch (input.op) {
        case "read":
          return `read(${input.key}) -> ${out}`;
        case "write":
          return `write(${input.key}, ${v(input.value)}) -> ${out}`;
        case "cas":
          return `cas(${input.key}, ${v(input.expected)} => ${
            v(input.value)
          }) -> ${out}`;
      }
    },
    describeState: (s) => JSON.stringify(s),
  };
}

/**
 * Records a history as clients run: call `call` when a client sends an
 * operation and `ret` when the answer arrives. Operations never returned
 * stay pending (return `Infinity`, output unknown); ones known not to have
 * taken effect are dropped with `fail`; one the client gave up on (timed
 * out) is `abandon`ed, stays pending, and frees the client for its next.
 *
 * @example
 * ```ts
 * import { check, HistoryRecorder, kvModel } from "./linearizability.ts";
 * import type { KvInput, KvOutput } from "./linearizability.ts";
 * const rec = new HistoryRecorder<KvInput, KvOutput>();
 * const w = rec.call(1, { op: "write", key: "x", value: 7 }, 0);
 * const r = rec.call(2, { op: "read", key: "x" }, 1);
 * rec.ret(w, { ok: true }, 5);
 * rec.ret(r, { value: 7 }, 6);
 * rec.call(3, { op: "write", key: "x", value: 8 }, 7); // never answered
 * if (check(kvModel(), rec.history()) !== "ok") throw new Error("not linearizable");
 * ```
 */
export class HistoryRecorder<I, O> {
  #ops: (Operation<I, O> | undefined)[] = [];
  #open = new Map<number, number>();

  /** Starts an operation of `clientId` at time `now`; returns its id. */
  call(clientId: number, input: I, now: number): number {
    for (const [id, client] of this.#open) {
      if (client === clientId) {
        throw new Error(
          `Cannot record call: client ${clientId} still has operation ${id} open`,
        );
      }
    }
    const id = this.#ops.length;
    this.#ops.push({
      clientId,
      input,
      call: now,
      output: undefined,
      return: Infinity,
    });
    this.#open.set(id, clientId);
    return id;
  }

  /** Records that operation `id` returned `output` at time `now`. */
  ret(id: number, output: O, now: number): void {
    const op = this.#open.has(id) ? this.#ops[id] : undefined;
    if (op !== undefined && now < op.call) {
      throw new RangeError(
        `Cannot record return of operation ${id}: time ${now} is before its call at ${op.call}`,
      );
    }
    this.#take(id, "return");
    op!.output = output;
    op!.return = now;
  }

  /** Drops operation `id`: it definitely did not take effect. */
  fail(id: number): void {
    this.#take(id, "failure");
    this.#ops[id] = undefined;
  }

  /**
   * Gives up on operation `id` (e.g. its client timed out): it stays
   * pending, and its client may start another operation.
   */
  abandon(id: number): void {
    this.#take(id, "abandonment");
  }

  /** The operations recorded so far, in call order. */
  history(): Operation<I, O>[] {
    return this.#ops.filter((op): op is Operation<I, O> => op !== undefined)
      .map((op) => ({ ...op }));
  }

  #take(id: number, what: string): Operation<I, O> {
    const op = this.#ops[id];
    if (op === undefined || !this.#open.has(id)) {
      throw new Error(
        `Cannot record ${what} of operation ${id}: it is not open (unknown, already returned or dropped)`,
      );
    }
    this.#open.delete(id);
    return op;
  }
}
