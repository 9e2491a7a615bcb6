/**
 * ReadIndex bookkeeping (Raft thesis §6.4): a read waits until a quorum has
 * acknowledged the leader's heartbeat carrying the read's context.
 *
 * @module
 */

/** One pending read: the commit index when it arrived and who asked. */
export interface PendingRead {
  index: number;
  from: string;
  context: string;
  acks: Set<string>;
}

/**
 * Pending ReadIndex requests in arrival order. A quorum of acks for one
 * request also confirms every earlier one.
 *
 * @example Usage
 * ```ts
 * import { ReadOnly } from "./read_only.ts";
 * const ro = new ReadOnly();
 * ro.add(7, "2", "r1");
 * ro.recvAck("1", "r1");
 * ro.recvAck("3", "r1")?.size; // 2
 * ro.advance("r1").map((r) => r.index); // [7]
 * ```
 */
export class ReadOnly {
  #pending = new Map<string, PendingRead>();
  #queue: string[] = [];

  /** Queues a read (a repeated context is ignored). */
  add(index: number, from: string, context: string): void {
    if (this.#pending.has(context)) return;
    this.#pending.set(context, { index, from, context, acks: new Set() });
    this.#queue.push(context);
  }

  /** Records an ack for `context`; returns the acks so far, or undefined if unknown. */
  recvAck(from: string, context: string): Set<string> | undefined {
    const p = this.#pending.get(context);
    if (!p) return undefined;
    p.acks.add(from);
    return p.acks;
  }

  /** Removes and returns every read up to and including `context`. */
  advance(context: string): PendingRead[] {
    const at = this.#queue.indexOf(context);
    if (at < 0) return [];
    const done = this.#queue.splice(0, at + 1).map((c) =>
      this.#pending.get(c)!
    );
    for (const d of done) this.#pending.delete(d.context);
    return done;
  }

  /** The newest pending context, to piggyback on heartbeats. */
  lastPending(): string | undefined {
    return this.#queue.at(-1);
  }

  /** Drops every pending read (on losing leadership). */
  reset(): void {
    this.#pending.clear();
    this.#queue = [];
  }
}
