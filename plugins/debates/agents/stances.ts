/**
 * Demo debate agents on the SDK: deterministic and rule based (the same
 * transcript always gets the same answer), each with a stance rule, so a
 * test or the README can show a debate reaching consensus.
 *
 * | stance            | position each round                                                                  |
 * | ----------------- | ------------------------------------------------------------------------------------ |
 * | `for`             | `for`                                                                                |
 * | `against`         | `against`                                                                            |
 * | `follow-majority` | round 1 `undecided`; then the position most held in the last round (tie: the alphabetically first) |
 * | `stubborn`        | `for` or `against` picked from the topic's text, never changed                       |
 * | `silent`          | never answers (the node records it silent when `turnTimeoutMs` passes)               |
 *
 * As moderator (`role: "moderator"`) any of them answers a one-line summary
 * of the round's tally.
 *
 * @example Run one
 * ```ts ignore
 * const agent = new AgentClient({ url, id: key.id, privateKey: seed });
 * await serveDebates(agent, "follow-majority");
 * await agent.connect();
 * ```
 *
 * @module
 */
import type { AgentClient, Subscription } from "../../../sdk/client.ts";
import type { DebateRequest } from "../engine.ts";

/** The stance rules. */
export const STANCES = [
  "for",
  "against",
  "follow-majority",
  "stubborn",
  "silent",
] as const;

/** One stance rule. */
export type Stance = typeof STANCES[number];

/** A participant's answer. */
export interface DebateAnswer {
  position: string;
  argument: string;
  confidence: number;
}

const NONE = new Set(["undecided", "abstain"]);

/** The most held position of the last round before `round` (tie: alphabetically first). */
function lastMajority(req: DebateRequest): string | undefined {
  const counts = new Map<string, number>();
  for (const t of req.transcript) {
    if (t.round !== req.round - 1 || t.status !== "answered") continue;
    if (!t.position || NONE.has(t.position)) continue;
    counts.set(t.position, (counts.get(t.position) ?? 0) + 1);
  }
  return [...counts].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))[0]
    ?.[0];
}

/** `for` or `against`, from the topic's text (the same topic, the same pick). */
function fromTopic(topic: string): "for" | "against" {
  let h = 0;
  for (const ch of topic) h = (h * 31 + ch.codePointAt(0)!) >>> 0;
  return h % 2 === 0 ? "for" : "against";
}

/**
 * The answer of `stance` to a participant's question; undefined for
 * `silent`.
 *
 * @example Usage
 * ```ts
 * import { decide } from "./stances.ts";
 * import assert from "node:assert/strict";
 * const req = {
 *   debateId: "d1", topic: "Tabs?", role: "participant" as const, round: 2, rounds: 3,
 *   slot: 2, participant: "debate", participants: ["a", "b", "c"],
 *   consensus: { method: "majority" as const }, summaries: [],
 *   transcript: [
 *     { round: 1, slot: 0, participant: "a", status: "answered" as const, position: "for" },
 *     { round: 1, slot: 1, participant: "b", status: "answered" as const, position: "for" },
 *     { round: 1, slot: 2, participant: "c", status: "answered" as const, position: "against" },
 *   ],
 * };
 * assert.equal(decide("follow-majority", req)?.position, "for");
 * assert.equal(decide("silent", req), undefined);
 * ```
 */
export function decide(
  stance: Stance,
  req: DebateRequest,
): DebateAnswer | undefined {
  switch (stance) {
    case "for":
    case "against":
      return {
        position: stance,
        argument: `I am ${stance} "${req.topic}", as I was from the start.`,
        confidence: 0.9,
      };
    case "stubborn": {
      const position = fromTopic(req.topic);
      return {
        position,
        argument: `Nothing said so far moves me: ${position}.`,
        confidence: 1,
      };
    }
    case "follow-majority": {
      const position = lastMajority(req);
      return position
        ? {
          position,
          argument: `Most of us said ${position} in round ${
            req.round - 1
          }; I follow.`,
          confidence: 0.6,
        }
        : {
          position: "undecided",
          argument: "I wait to hear the others.",
          confidence: 0.2,
        };
    }
    case "silent":
      return undefined;
  }
}

/**
 * The moderator's summary of the round just played: the tally.
 *
 * @example Usage
 * ```ts ignore
 * summarise(req); // "Round 2: 2 for, 1 against."
 * ```
 */
export function summarise(req: DebateRequest): string {
  const counts = new Map<string, number>();
  let silent = 0;
  for (const t of req.transcript) {
    if (t.round !== req.round) continue;
    if (t.status !== "answered") silent++;
    else counts.set(t.position!, (counts.get(t.position!) ?? 0) + 1);
  }
  const parts = [...counts].sort((a, b) =>
    b[1] - a[1] || a[0].localeCompare(b[0])
  ).map(([p, n]) => `${n} ${p}`);
  if (silent) parts.push(`${silent} silent`);
  return `Round ${req.round}: ${parts.join(", ") || "nobody spoke"}.`;
}

/** Options of {@linkcode serveDebates}. */
export interface ServeDebatesOptions {
  /** The backend channel to answer on. @default {"tasks.debate"} */
  channel?: string;
  /** Waits this long before answering, ms (to watch a debate, or to be killed mid-turn). @default {0} */
  thinkMs?: number;
  /** Told about every question, before the answer. */
  onQuestion?: (req: DebateRequest) => void;
}

/**
 * Answers debate questions on `agent` with `stance`. Resolves once the node
 * confirmed the subscription.
 *
 * @example Usage
 * ```ts ignore
 * await serveDebates(agent, "for", { thinkMs: 200 });
 * ```
 */
export function serveDebates(
  agent: AgentClient,
  stance: Stance,
  options: ServeDebatesOptions = {},
): Promise<Subscription> {
  return agent.handle(options.channel ?? "tasks.debate", async (m) => {
    const req = m.payload as DebateRequest;
    options.onQuestion?.(req);
    if (stance === "silent") return await new Promise(() => {});
    if (options.thinkMs) {
      await new Promise((r) => setTimeout(r, options.thinkMs));
    }
    if (req.role === "moderator") return { summary: summarise(req) };
    return decide(stance, req);
  });
}
