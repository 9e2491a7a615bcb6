/**
 * Packed storage of the durable queue's window mode ("segments"): the ready
 * messages one windowed enqueue commit stores are written as one KV value,
 * `["queue", q, "seg", segId]`, instead of a record each, and their life
 * on the happy path (claim → ack) is kept in one small value beside it,
 * `["queue", q, "segstate", segId]` ({@linkcode SegState}). A message that
 * leaves that path (nak, term, lease extension or expiry, cancel, an ack
 * with a result) is "exploded": written as an ordinary record, after which
 * the segment only counts it as settled. See docs/state.md "Segments".
 *
 * This module holds the pure parts: ids, the state and its transitions.
 *
 * @module
 */

/** Serialized bytes a segment's messages may take (KV's value limit is 64 KiB). */
export const SEGMENT_BYTES = 60 * 1024;

/** A claim of some of a segment's messages: one lease for all of them. */
export interface SegLease {
  /** The lease id every message of the claim carries. */
  id: string;
  until: number;
  consumer: string;
  /** Positions in the segment still held under this lease. */
  pos: number[];
}

/**
 * Where a segment's messages are. A position is ready when it is in no
 * lease, not `done` and not `out`; the segment (and this value) are
 * deleted by the commit that settles its last position.
 */
export interface SegState {
  /** Messages in the segment (set by the first claim). */
  n?: number;
  leases: SegLease[];
  /** Acked while packed. */
  done: number[];
  /** Exploded: the message has its own record now (cancelled, or left the happy path). */
  out: number[];
}

const PACKED_RE =
  /^([0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12})~(\d{1,4})$/;

/**
 * The id of message `i` of segment `segId`.
 *
 * @example
 * ```ts
 * import { packedId, segmentOf } from "./queue_segments.ts";
 * const id = packedId("0190a0b0-c0d0-7e00-8000-000000000001", 3);
 * if (segmentOf(id) !== "0190a0b0-c0d0-7e00-8000-000000000001") throw new Error();
 * ```
 */
export function packedId(segId: string, i: number): string {
  return `${segId}~${i}`;
}

/**
 * The segment a packed id names, or undefined for any other id. Ids of this
 * form are reserved: an enqueue may not choose one.
 *
 * @example
 * ```ts
 * import { segmentOf } from "./queue_segments.ts";
 * if (segmentOf("not-packed") !== undefined) throw new Error();
 * ```
 */
export function segmentOf(id: string): string | undefined {
  return PACKED_RE.exec(id)?.[1];
}

/**
 * The state of a segment nobody has claimed from yet.
 *
 * @example
 * ```ts
 * import { emptySegState } from "./queue_segments.ts";
 * if (emptySegState().leases.length !== 0) throw new Error();
 * ```
 */
export function emptySegState(): SegState {
  return { leases: [], done: [], out: [] };
}

/**
 * The lease holding position `pos`, if any.
 *
 * @example
 * ```ts
 * import { leaseOf } from "./queue_segments.ts";
 * const st = { leases: [{ id: "l", until: 1, consumer: "c", pos: [0, 1] }], done: [], out: [] };
 * if (leaseOf(st, 1)?.id !== "l") throw new Error();
 * ```
 */
export function leaseOf(st: SegState, pos: number): SegLease | undefined {
  return st.leases.find((l) => l.pos.includes(pos));
}

/**
 * Whether position `pos` is still ready (in no lease, neither done nor out).
 *
 * @example
 * ```ts
 * import { emptySegState, isReady } from "./queue_segments.ts";
 * if (!isReady(emptySegState(), 0)) throw new Error();
 * ```
 */
export function isReady(st: SegState, pos: number): boolean {
  return !st.done.includes(pos) && !st.out.includes(pos) &&
    leaseOf(st, pos) === undefined;
}

/**
 * `st` with `lease` added (its positions must be ready).
 *
 * @example
 * ```ts
 * import { emptySegState, withLease } from "./queue_segments.ts";
 * const st = withLease(emptySegState(), { id: "l", until: 1, consumer: "c", pos: [0] });
 * if (st.leases.length !== 1) throw new Error();
 * ```
 */
export function withLease(st: SegState, lease: SegLease): SegState {
  return { ...st, leases: [...st.leases, lease] };
}

/** What {@linkcode settlePositions} produced. */
export interface Settled {
  next: SegState;
  /** Leases left with no position: their index entries go. */
  emptied: SegLease[];
  /** Every one of the segment's `n` positions is settled: delete it. */
  finished: boolean;
}

/**
 * `st` with positions `pos` taken out of their leases and recorded as
 * `done` (acked packed) or `out` (exploded into records).
 *
 * @example
 * ```ts
 * import { settlePositions } from "./queue_segments.ts";
 * const st = { leases: [{ id: "l", until: 1, consumer: "c", pos: [0, 1] }], done: [], out: [] };
 * const r = settlePositions(st, [0, 1], "done", 2);
 * if (!r.finished || r.emptied.length !== 1) throw new Error();
 * ```
 */
export function settlePositions(
  st: SegState,
  pos: number[],
  how: "done" | "out",
  n: number,
): Settled {
  const gone = new Set(pos);
  const emptied: SegLease[] = [];
  const leases: SegLease[] = [];
  for (const l of st.leases) {
    const left = l.pos.filter((p) => !gone.has(p));
    if (left.length === 0) emptied.push(l);
    else leases.push(left.length === l.pos.length ? l : { ...l, pos: left });
  }
  const next: SegState = {
    ...st,
    leases,
    done: how === "done" ? [...st.done, ...pos] : st.done,
    out: how === "out" ? [...st.out, ...pos] : st.out,
  };
  return {
    next,
    emptied,
    finished: next.done.length + next.out.length >= n,
  };
}

/**
 * The lease index id of a segment's lease: `segId/leaseId`.
 *
 * @example
 * ```ts
 * import { leaseToken } from "./queue_segments.ts";
 * if (leaseToken("s", "l") !== "s/l") throw new Error();
 * ```
 */
export function leaseToken(segId: string, leaseId: string): string {
  return `${segId}/${leaseId}`;
}

/** The value of a packed claim's lease index entry. */
export interface SegLeaseRef {
  seg: string;
  lease: string;
}
