/**
 * The stance tally of one round and whether it reaches consensus: pure, so
 * every node computes the same result from the same recorded turns.
 *
 * - A position is a short lowercase word or phrase (`for`, `against`);
 *   `undecided` (and `abstain`) count as no position.
 * - Shares are of **all** participants: a silent participant counts against
 *   every position, so a crash never makes consensus easier.
 * - `majority`: one position held by more than half. `unanimous`: every
 *   participant answered and holds the same position. `threshold`: one
 *   position held by at least `threshold` (0–1] of the participants.
 *
 * @module
 */

/** How consensus is decided. */
export interface ConsensusRule {
  method: "majority" | "unanimous" | "threshold";
  /** For `threshold`: the share of participants needed, (0, 1]. */
  threshold?: number;
}

/** What one participant did in a round, as far as the tally cares. */
export interface TallyTurn {
  status: "answered" | "silent";
  position?: string;
  confidence?: number;
}

/** Positions that count as holding none. */
export const NO_POSITION: ReadonlySet<string> = new Set([
  "undecided",
  "abstain",
]);

/** The tally of one round. */
export interface RoundTally {
  /** position → how many held it and their mean confidence. */
  positions: Record<string, { count: number; confidence: number }>;
  /** Participants who answered (with or without a position). */
  answered: number;
  /** Participants who were silent (timeout, crash, bad answer). */
  silent: number;
  /** The leading position (ties: the alphabetically first), if any. */
  leading?: string;
  /** The leading position's share of all participants, 0–1. */
  share: number;
  /** Whether the rule is met this round. */
  reached: boolean;
}

/**
 * Tallies `turns` (one per participant) under `rule`.
 *
 * @example Usage
 * ```ts
 * import { tallyRound } from "./tally.ts";
 * import assert from "node:assert/strict";
 * const t = tallyRound([
 *   { status: "answered", position: "for", confidence: 0.9 },
 *   { status: "answered", position: "for", confidence: 0.5 },
 *   { status: "silent" },
 * ], { method: "majority" });
 * assert.equal(t.leading, "for");
 * assert.equal(t.reached, true);
 * assert.equal(tallyRound([{ status: "answered", position: "for" }, { status: "silent" }], { method: "unanimous" }).reached, false);
 * ```
 */
export function tallyRound(
  turns: readonly TallyTurn[],
  rule: ConsensusRule,
): RoundTally {
  const sums = new Map<string, { count: number; confidence: number }>();
  let answered = 0;
  for (const t of turns) {
    if (t.status !== "answered") continue;
    answered++;
    const p = t.position;
    if (p === undefined || NO_POSITION.has(p)) continue;
    const s = sums.get(p) ?? { count: 0, confidence: 0 };
    s.count++;
    s.confidence += t.confidence ?? 0;
    sums.set(p, s);
  }
  const positions: RoundTally["positions"] = {};
  for (const p of [...sums.keys()].sort()) {
    const s = sums.get(p)!;
    positions[p] = {
      count: s.count,
      confidence: Math.round((s.confidence / s.count) * 1000) / 1000,
    };
  }
  let leading: string | undefined;
  for (const [p, s] of Object.entries(positions)) {
    if (leading === undefined || s.count > positions[leading].count) {
      leading = p;
    }
  }
  const n = turns.length;
  const top = leading === undefined ? 0 : positions[leading].count;
  const tied = Object.values(positions).filter((s) => s.count === top).length >
    1;
  const share = n === 0 ? 0 : top / n;
  const reached = top > 0 && !tied && (
    rule.method === "majority"
      ? top * 2 > n
      : rule.method === "unanimous"
      ? top === n
      : share >= (rule.threshold ?? 1)
  );
  return {
    positions,
    answered,
    silent: n - answered,
    ...(leading !== undefined ? { leading } : {}),
    share: Math.round(share * 1000) / 1000,
    reached,
  };
}
