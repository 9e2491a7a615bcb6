/**
 * Which proposals the replicated state machine has applied, so that a
 * proposal re-sent to a new leader — and so possibly in the log twice —
 * takes effect once.
 *
 * A proposal id is `session/seq`: a session is one life of one proposer
 * (the driver's node id and a random tag), `seq` counts its proposals from 1.
 * Per session the table keeps a watermark `low` (every seq at or below it
 * has been applied, or never will be) and the applied seqs above it. The
 * table is changed only by applying committed entries in log order and is
 * part of the snapshot, so every replica skips exactly the same entries.
 *
 * @module
 */
import { deleteOldest } from "../../core/oldest.ts";

/** Options of {@linkcode AppliedProposals}. */
export interface AppliedProposalsOptions {
  /**
   * Applied seqs a session keeps above its watermark. Beyond that the
   * watermark moves up past the oldest gap: a proposal of that session still
   * missing below it is skipped when it arrives (never applied), so a copy
   * is never applied twice however late it commits.
   * @default {1024}
   */
  perSession?: number;
  /** Sessions kept; the one that applied least recently is forgotten first. @default {256} */
  sessions?: number;
}

interface Session {
  low: number;
  above: Set<number>;
}

/** A session's state in a snapshot: `[session, low, applied seqs above low]`. */
export type AppliedProposalsJson = [string, number, number[]][];

/**
 * A bounded, deterministic record of applied proposal ids.
 *
 * @example Usage
 * ```ts
 * import { AppliedProposals } from "./applied_proposals.ts";
 * const t = new AppliedProposals();
 * t.admit("n1/4f2a/1"); // true: apply it
 * t.admit("n1/4f2a/1"); // false: a copy of one applied already
 * const copy = new AppliedProposals();
 * copy.restore(t.toJSON());
 * copy.admit("n1/4f2a/1"); // false
 * ```
 */
export class AppliedProposals {
  #sessions = new Map<string, Session>();
  readonly #perSession: number;
  readonly #maxSessions: number;

  constructor(options: AppliedProposalsOptions = {}) {
    this.#perSession = options.perSession ?? 1024;
    this.#maxSessions = options.sessions ?? 256;
  }

  /**
   * Records proposal `id` as applied and returns true, or returns false when
   * it must be skipped: a copy was applied before, or it is below its
   * session's watermark.
   */
  admit(id: string): boolean {
    const [name, seq] = splitId(id);
    let s = this.#sessions.get(name);
    if (s && (seq <= s.low || s.above.has(seq))) return false;
    if (s) this.#sessions.delete(name); // re-inserted last: least recent first
    else s = { low: 0, above: new Set() };
    this.#sessions.set(name, s);
    s.above.add(seq);
    while (s.above.delete(s.low + 1)) s.low++;
    if (s.above.size > this.#perSession) {
      s.low = Math.min(...s.above);
      s.above.delete(s.low);
      while (s.above.delete(s.low + 1)) s.low++;
    }
    if (this.#sessions.size > this.#maxSessions) {
      deleteOldest(this.#sessions);
    }
    return true;
  }

  /** Number of sessions held. */
  get size(): number {
    return this.#sessions.size;
  }

  /** The table as JSON-ready data, for a snapshot. */
  toJSON(): AppliedProposalsJson {
    return [...this.#sessions].map(([name, s]) => [name, s.low, [...s.above]]);
  }

  /** Replaces the table with one from {@linkcode toJSON}. */
  restore(data: AppliedProposalsJson): void {
    this.#sessions = new Map(
      data.map(([name, low, above]) => [name, { low, above: new Set(above) }]),
    );
  }
}

/** `session/seq` → [session, seq]; an id of another shape is a session of one. */
function splitId(id: string): [string, number] {
  const cut = id.lastIndexOf("/");
  const seq = Number(id.slice(cut + 1));
  if (cut < 0 || !Number.isSafeInteger(seq) || seq < 1) return [id, 1];
  return [id.slice(0, cut), seq];
}
