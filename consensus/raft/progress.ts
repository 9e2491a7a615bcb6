/**
 * The leader's view of one follower: how far it matches, what to send next,
 * and the flow control that bounds messages in flight.
 *
 * @module
 */

/** How the leader is replicating to a follower. */
export type ProgressState = "probe" | "replicate" | "snapshot";

/**
 * A bounded window of in-flight appends, each remembered by its last index.
 *
 * @example Usage
 * ```ts
 * import { Inflights } from "./progress.ts";
 * const w = new Inflights(2);
 * w.add(5); w.add(9);
 * w.full(); // true
 * w.freeLE(5);
 * w.full(); // false
 * ```
 */
export class Inflights {
  #items: number[] = [];
  /** @param capacity the most appends in flight at once */
  constructor(readonly capacity: number) {}
  /** Records an append whose last entry is `index`. */
  add(index: number): void {
    this.#items.push(index);
  }
  /** Frees every append acknowledged up to `index`. */
  freeLE(index: number): void {
    let k = 0;
    while (k < this.#items.length && this.#items[k] <= index) k++;
    this.#items.splice(0, k);
  }
  /** Frees the oldest append (a heartbeat response shows the follower is alive). */
  freeFirst(): void {
    this.#items.shift();
  }
  /** True when no more appends may be sent. */
  full(): boolean {
    return this.#items.length >= this.capacity;
  }
  /** Appends in flight. */
  get count(): number {
    return this.#items.length;
  }
  /** Forgets every append in flight. */
  reset(): void {
    this.#items = [];
  }
}

/**
 * Figure 2's nextIndex/matchIndex for one follower, plus etcd's three states:
 * probe (one append at a time until the logs agree), replicate (pipelined
 * appends, at most `maxInflight` in flight) and snapshot (wait for it).
 *
 * @example Usage
 * ```ts
 * import { Progress } from "./progress.ts";
 * const pr = new Progress(11, 4);
 * pr.maybeUpdate(10); // true
 * pr.becomeReplicate();
 * pr.next; // 11
 * ```
 */
export class Progress {
  /** Highest index known to be replicated on the follower. */
  match = 0;
  /** Next index to send. */
  next: number;
  state: ProgressState = "probe";
  /** In probe state: an append is out and unanswered. */
  probeSent = false;
  /** In snapshot state: the index of the snapshot sent. */
  pendingSnapshot = 0;
  /** Heard from since the last CheckQuorum round. */
  recentActive = false;
  readonly inflights: Inflights;

  /**
   * @param next the first index to try
   * @param maxInflight appends in flight at most while replicating
   */
  constructor(next: number, maxInflight: number) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
  }

  /** Back to probing from just after the match (or the snapshot sent). */
  becomeProbe(): void {
    this.next = this.state === "snapshot"
      ? Math.max(this.match + 1, this.pendingSnapshot + 1)
      : this.match + 1;
    this.state = "probe";
    this.probeSent = false;
    this.pendingSnapshot = 0;
    this.inflights.reset();
  }

  /** Logs agree: pipeline appends from just after the match. */
  becomeReplicate(): void {
    this.state = "replicate";
    this.next = this.match + 1;
    this.probeSent = false;
    this.inflights.reset();
  }

  /** A snapshot at `index` is on its way. */
  becomeSnapshot(index: number): void {
    this.state = "snapshot";
    this.pendingSnapshot = index;
    this.probeSent = false;
    this.inflights.reset();
  }

  /** A successful append response up to `n`: true when the match moved. */
  maybeUpdate(n: number): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.probeSent = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /**
   * A rejected append at `rejected`; `hint` is where the logs may agree.
   * Returns false for a stale rejection.
   */
  maybeDecrTo(rejected: number, hint: number): boolean {
    if (this.state === "replicate") {
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, hint + 1), this.match + 1, 1);
    this.probeSent = false;
    return true;
  }

  /** Records an append ending at `last` (0 when it carried no entries). */
  sent(last: number): void {
    if (this.state === "replicate" && last > 0) {
      this.next = last + 1;
      this.inflights.add(last);
    } else if (this.state === "probe") {
      this.probeSent = true;
    }
  }

  /** True when nothing more should be sent for now. */
  isPaused(): boolean {
    switch (this.state) {
      case "probe":
        return this.probeSent;
      case "replicate":
        return this.inflights.full();
      default:
        return true;
    }
  }
}
