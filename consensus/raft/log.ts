/**
 * The Raft log as the core sees it: a snapshot offset, the entries after it,
 * and the commit, applied and stable watermarks.
 *
 * @module
 */
import type { Entry, Snapshot } from "./types.ts";

/** The result of {@linkcode RaftLog.maybeAppend}. */
export interface AppendResult {
  /** Index of the last entry the leader's message covers. */
  lastNew: number;
  /** First index (re)written, or 0 when every entry was already there. */
  from: number;
}

/**
 * The log with a snapshot offset: `entries[k]` has index
 * `snapIndex + 1 + k`. Entries above `stabled` are not yet persisted.
 *
 * @example Usage
 * ```ts
 * import { RaftLog } from "./log.ts";
 * const log = new RaftLog();
 * log.append([{ term: 1, index: 1, type: "normal", data: "a" }]);
 * log.lastIndex(); // 1
 * log.unstableEntries().length; // 1
 * ```
 */
export class RaftLog {
  /** Index of the last entry folded into the snapshot. */
  snapIndex = 0;
  /** Term of the entry at `snapIndex`. */
  snapTerm = 0;
  /** Entries after the snapshot. */
  entries: Entry[] = [];
  /** Highest index known to be committed. */
  committed = 0;
  /** Highest index handed to the application and acknowledged by `advance`. */
  applied = 0;
  /** Highest index known to be on stable storage. */
  stabled = 0;
  /** A received snapshot not yet persisted and applied. */
  unstableSnapshot?: Snapshot;

  /** Index of the first entry still in memory. */
  firstIndex(): number {
    return this.snapIndex + 1;
  }

  /** Index of the last entry (the snapshot's index when there is none). */
  lastIndex(): number {
    return this.snapIndex + this.entries.length;
  }

  /** Term of the last entry. */
  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** Term of the entry at `i`, or undefined when compacted away or beyond the end. */
  term(i: number): number | undefined {
    if (i === this.snapIndex) return this.snapTerm;
    if (i < this.snapIndex || i > this.lastIndex()) return undefined;
    return this.entries[i - this.snapIndex - 1].term;
  }

  /** True when the entry at `i` exists and has term `t`. */
  matchTerm(i: number, t: number): boolean {
    return this.term(i) === t;
  }

  /** The election restriction (§5.4.1): is a log ending at (index, term) at least as up to date? */
  isUpToDate(index: number, term: number): boolean {
    const lt = this.lastTerm();
    return term > lt || (term === lt && index >= this.lastIndex());
  }

  /** Entry at `i` (must be in memory). */
  entry(i: number): Entry {
    const e = this.entries[i - this.snapIndex - 1];
    if (!e || i <= this.snapIndex) {
      throw new RangeError(
        `Cannot read entry ${i}: the log holds ${this.firstIndex()}..${this.lastIndex()}`,
      );
    }
    return e;
  }

  /** Entries in [lo, hi), lo must be above the snapshot. */
  slice(lo: number, hi: number): Entry[] {
    if (lo <= this.snapIndex) {
      throw new RangeError(
        `Cannot slice from ${lo}: compacted up to ${this.snapIndex}`,
      );
    }
    return this.entries.slice(lo - this.snapIndex - 1, hi - this.snapIndex - 1);
  }

  /** Entries from `lo` on, at most `maxBytes` of data (always at least one). */
  entriesFrom(lo: number, maxBytes: number): Entry[] {
    const out: Entry[] = [];
    let size = 0;
    for (let i = lo; i <= this.lastIndex(); i++) {
      const e = this.entry(i);
      size += e.data.length + 24;
      if (out.length > 0 && size > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Appends entries, truncating any existing ones from `ents[0].index` on. */
  append(ents: Entry[]): void {
    if (ents.length === 0) return;
    const after = ents[0].index - 1;
    if (after < this.committed) {
      throw new Error(
        `Cannot truncate committed entries: append after ${after}, committed ${this.committed}`,
      );
    }
    this.entries.length = after - this.snapIndex;
    this.entries.push(...ents);
    this.stabled = Math.min(this.stabled, after);
  }

  /** Index of the first entry in `ents` that is missing or has another term, or 0. */
  findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * Largest index at or below `index` whose term is at most `term` (never
   * below the snapshot): where a leader with such a log should probe next.
   */
  findConflictByTerm(index: number, term: number): number {
    let i = Math.min(index, this.lastIndex());
    while (i > this.snapIndex) {
      if ((this.term(i) ?? 0) <= term) return i;
      i--;
    }
    return i;
  }

  /**
   * AppendEntries receiver rules 2–5: if the entry at `prevIndex` has
   * `prevTerm`, delete conflicting entries, append new ones, and advance the
   * commit index to min(leaderCommit, last new entry).
   */
  maybeAppend(
    prevIndex: number,
    prevTerm: number,
    leaderCommit: number,
    ents: Entry[],
  ): AppendResult | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    const lastNew = prevIndex + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) this.append(ents.slice(ci - prevIndex - 1));
    this.commitTo(Math.min(leaderCommit, lastNew));
    return { lastNew, from: ci };
  }

  /** Raises the commit index (never lowers it). */
  commitTo(c: number): void {
    if (c <= this.committed) return;
    if (c > this.lastIndex()) {
      throw new RangeError(
        `Cannot commit ${c}: the last index is ${this.lastIndex()}`,
      );
    }
    this.committed = c;
  }

  /** Commits `index` if its entry is of `term` (Figure 2: only current-term entries by counting). */
  maybeCommit(index: number, term: number): boolean {
    if (index > this.committed && this.term(index) === term) {
      this.commitTo(index);
      return true;
    }
    return false;
  }

  /** Replaces the whole log with a snapshot (Figure 13 rule 7). */
  restore(s: Snapshot): void {
    this.snapIndex = s.index;
    this.snapTerm = s.term;
    this.entries = [];
    this.committed = s.index;
    this.stabled = s.index;
    this.unstableSnapshot = s;
  }

  /** Drops entries up to `index` (already applied) into a snapshot offset. */
  compact(index: number): void {
    if (index <= this.snapIndex) return;
    if (index > this.applied) {
      throw new RangeError(
        `Cannot compact to ${index}: only ${this.applied} is applied`,
      );
    }
    this.snapTerm = this.term(index)!;
    this.entries = this.entries.slice(index - this.snapIndex);
    this.snapIndex = index;
  }

  /** Entries not yet on stable storage. */
  unstableEntries(): Entry[] {
    return this.entries.slice(Math.max(0, this.stabled - this.snapIndex));
  }

  /** Committed entries not yet applied. */
  nextCommitted(): Entry[] {
    const lo = Math.max(this.applied, this.snapIndex) + 1;
    if (lo > this.committed) return [];
    return this.slice(lo, this.committed + 1);
  }
}
