/**
 * A debate as sagas, one per round: the definition (a parallel group of
 * `debate.turn` steps, one per participant, then `debate.moderate` when
 * there is a moderator, then `debate.tally`) and the three saga functions.
 * The tally of round _n_ starts the saga of round _n_ + 1 (idempotently, by
 * its id `{debate.saga}-r{n+1}`), so a saga's state stays small whatever the
 * number of rounds (the saga engine keeps a saga in one KV value).
 *
 * - `debate.turn` asks the participant's agent with the transcript so far
 *   (a sealed gateway request, `turnTimeoutMs`) and records the turn once
 *   (first write wins, so a step re-run after a crash or on another node
 *   does not record twice). A timeout, a crash or a bad answer records the
 *   participant as silent for that turn and the step **succeeds**: the
 *   debate goes on.
 * - `debate.moderate` asks the moderator for a summary of the round; its
 *   failure is recorded and changes nothing else.
 * - `debate.tally` tallies the round's turns, records the round and, on
 *   consensus or after the last round, finishes the debate; otherwise it
 *   starts the next round's saga before it returns (run again after a
 *   crash, it finds the round recorded and only makes sure of that start).
 * - Once a debate is finished (consensus, no consensus, cancelled) every
 *   remaining step is a no-op, so the saga completes quickly.
 *
 * The saga engine persists after every step and resumes on the leader, so
 * any node continues a debate a dead node was running.
 *
 * @module
 */
import type {
  DebateRecord,
  DebateStore,
  Moderation,
  Participant,
  RoundRecord,
  Turn,
} from "./store.ts";
import { tallyRound } from "./tally.ts";
import type { DebateEventData, DebateEventType } from "./events.ts";

/** Names of the saga functions. */
export const DEBATE_FUNCTIONS = {
  turn: "debate.turn",
  moderate: "debate.moderate",
  tally: "debate.tally",
} as const;

/** Slot number of the moderator in {@linkcode DebateEngineDeps.ask}. */
export const MODERATOR_SLOT = -1;

/**
 * An ask that failed; `agent` is the one asked, when there was one. The
 * turn is recorded silent with the message as its reason.
 *
 * @example Usage
 * ```ts
 * import { DebateAskError } from "./engine.ts";
 * const err = new DebateAskError("timeout: no answer in 5000 ms", "did:key:z6Mk…");
 * err.agent; // "did:key:z6Mk…"
 * ```
 */
export class DebateAskError extends Error {
  override name = "DebateAskError";
  /** The agent asked. */
  readonly agent?: string;
  /** `agent` is the one asked, when one was found. */
  constructor(message: string, agent?: string, options?: ErrorOptions) {
    super(message, options);
    this.agent = agent;
  }
}

/** One turn as agents see it in the transcript. */
export interface TranscriptTurn {
  round: number;
  /** Participant slot (index in `participants`). */
  slot: number;
  participant: string;
  status: "answered" | "silent";
  position?: string;
  argument?: string;
  confidence?: number;
}

/** What a participant (or the moderator) is asked on `tasks.debate` or `tasks.{capability}`. */
export interface DebateRequest {
  debateId: string;
  topic: string;
  /** `participant`: answer `{position, argument, confidence}`; `moderator`: answer `{summary}`. */
  role: "participant" | "moderator";
  round: number;
  rounds: number;
  /** The asked participant's slot (-1 for the moderator) and name. */
  slot: number;
  participant: string;
  participants: string[];
  consensus: DebateRecord["consensus"];
  /** Turns of the earlier rounds (for the moderator: this round's too), oldest first. */
  transcript: TranscriptTurn[];
  /** The moderator's summaries of earlier rounds. */
  summaries: { round: number; summary: string }[];
}

/** What the engine needs. */
export interface DebateEngineDeps {
  store: DebateStore;
  /** Asks the agent behind `participant` (slot -1: the moderator); throws a {@linkcode DebateAskError}. */
  ask(
    participant: Participant,
    slot: number,
    request: DebateRequest,
    timeoutMs: number,
  ): Promise<{ agent: string; answer: unknown }>;
  /** Publishes a debate event (never throws). */
  publish<K extends DebateEventType>(type: K, data: DebateEventData<K>): void;
  /** This node's id, recorded with each turn. */
  nodeId: string;
  /** Rounds of transcript sent with each question. @default {10} */
  transcriptRounds?: number;
  /** A question's JSON is kept under this many bytes by dropping its oldest rounds. @default {524288} */
  maxRequestBytes?: number;
  /** Told about every turn recorded (metrics). */
  onTurn?(turn: Turn): void;
  /** Told about every debate this node finished (metrics). */
  onFinished?(debate: DebateRecord): void;
  /**
   * Starts the saga of `round` of `debate` (the definition from
   * {@linkcode DebateEngine.definition}, the id from {@linkcode roundSagaId});
   * starting an id again must start nothing.
   */
  startRound(debate: DebateRecord, round: number): Promise<void>;
  /** Wall clock. @default {Date.now} */
  now?: () => number;
}

/** Input of the `debate.turn` step. */
export interface TurnInput {
  debate: string;
  round: number;
  participant: number;
}

/** Input of the `debate.moderate` and `debate.tally` steps. */
export interface RoundInput {
  debate: string;
  round: number;
}

/** The engine: the saga functions and the definition of a debate's saga. */
export interface DebateEngine {
  /** Saga function name → implementation. */
  functions: Record<
    typeof DEBATE_FUNCTIONS[keyof typeof DEBATE_FUNCTIONS],
    (input: unknown) => Promise<unknown>
  >;
  /** The saga definition (JSON) that runs `round` of `debate`. */
  definition(debate: DebateRecord, round: number): unknown;
}

/**
 * The id of the saga running `round` of `debate`.
 *
 * @example Usage
 * ```ts
 * import { roundSagaId } from "./engine.ts";
 * roundSagaId({ saga: "debate-d1" }, 2); // "debate-d1-r2"
 * ```
 */
export function roundSagaId(debate: { saga: string }, round: number): string {
  return `${debate.saga}-r${round}`;
}

/**
 * The debate id and round of a round's saga id, or null for another saga.
 *
 * @example Usage
 * ```ts
 * import { parseRoundSagaId } from "./engine.ts";
 * parseRoundSagaId("debate-6f1c-r3"); // { debate: "6f1c", round: 3 }
 * parseRoundSagaId("order-1"); // null
 * ```
 */
export function parseRoundSagaId(
  sagaId: string,
): { debate: string; round: number } | null {
  const m = /^debate-(.+)-r([1-9][0-9]*)$/.exec(sagaId);
  return m ? { debate: m[1], round: Number(m[2]) } : null;
}

const cut = (s: string, n: number) => s.length > n ? s.slice(0, n) : s;

/**
 * Checks a participant's answer: `{position, argument, confidence}`; the
 * position lower-cased, the argument cut to 2,000 characters.
 *
 * @example Usage
 * ```ts
 * import { parseAnswer } from "./engine.ts";
 * import assert from "node:assert/strict";
 * assert.equal(parseAnswer({ position: " For ", confidence: 1 }).position, "for");
 * assert.throws(() => parseAnswer({ position: "for", confidence: 2 }), /confidence must be a number in \[0, 1\], got 2/);
 * ```
 */
export function parseAnswer(
  answer: unknown,
): { position: string; argument: string; confidence: number } {
  const a = answer as Record<string, unknown> | null;
  if (!a || typeof a !== "object") {
    throw new Error("the answer is not an object");
  }
  const position = typeof a.position === "string"
    ? a.position.trim().toLowerCase()
    : "";
  if (!/^[a-z0-9][a-z0-9 _.-]{0,63}$/.test(position)) {
    throw new Error(
      `position must be a word or short phrase (1-64 letters, digits, ' ', '_', '.', '-'), got ${
        JSON.stringify(a.position)?.slice(0, 80)
      }`,
    );
  }
  const confidence = a.confidence;
  if (
    typeof confidence !== "number" || !(confidence >= 0 && confidence <= 1)
  ) {
    throw new Error(
      `confidence must be a number in [0, 1], got ${
        JSON.stringify(confidence)
      }`,
    );
  }
  const argument = typeof a.argument === "string" ? cut(a.argument, 2000) : "";
  return { position, argument, confidence };
}

/**
 * Creates the engine.
 *
 * @example Usage
 * ```ts ignore
 * const engine = createDebateEngine({ store, ask, publish, nodeId: ctx.node.id, startRound });
 * for (const [name, fn] of Object.entries(engine.functions)) sagas.registerFunction(name, fn);
 * await sagas.start(engine.definition(debate, 1), { id: roundSagaId(debate, 1) });
 * ```
 */
export function createDebateEngine(deps: DebateEngineDeps): DebateEngine {
  const { store } = deps;
  const now = deps.now ?? Date.now;
  const window = deps.transcriptRounds ?? 10;
  const maxRequestBytes = deps.maxRequestBytes ?? 512 * 1024;

  const load = async (id: string): Promise<DebateRecord> => {
    const d = await store.get(id);
    if (!d) throw new Error(`debate '${id}' is not in the store`);
    return d;
  };

  const transcriptOf = (d: DebateRecord, turns: Turn[]): TranscriptTurn[] =>
    turns.map((t) => ({
      round: t.round,
      slot: t.participant,
      participant: d.participants[t.participant]?.ref ?? t.ref,
      status: t.status,
      ...(t.status === "answered"
        ? {
          position: t.position,
          argument: t.argument,
          confidence: t.confidence,
        }
        : {}),
    }));

  const request = async (
    d: DebateRecord,
    round: number,
    slot: number,
    role: DebateRequest["role"],
  ): Promise<DebateRequest> => {
    const from = Math.max(1, round - window);
    const last = role === "moderator" ? round : round - 1;
    const [turns, rounds] = await Promise.all([
      store.turns(d.id, from, last),
      store.rounds(d.id, from, round - 1),
    ]);
    const req: DebateRequest = {
      debateId: d.id,
      topic: d.topic,
      role,
      round,
      rounds: d.rounds,
      slot,
      participant: slot === MODERATOR_SLOT
        ? d.moderator!.ref
        : d.participants[slot].ref,
      participants: d.participants.map((p) => p.ref),
      consensus: d.consensus,
      transcript: transcriptOf(d, turns),
      summaries: rounds.flatMap((r) =>
        r.summary ? [{ round: r.round, summary: r.summary }] : []
      ),
    };
    // Keep the question under the gateway's message size: oldest rounds go first.
    while (
      req.transcript.some((t) => t.round < last) &&
      new TextEncoder().encode(JSON.stringify(req)).length > maxRequestBytes
    ) {
      const oldest = req.transcript[0].round;
      req.transcript = req.transcript.filter((t) => t.round !== oldest);
      req.summaries = req.summaries.filter((x) => x.round !== oldest);
    }
    return req;
  };

  /**
   * A recorded turn's event. Told by every run of the turn's step, not only
   * the one that recorded it: that one may have died before telling it
   * (events are at least once; a consumer dedupes by debate, round and
   * participant).
   */
  const tellTurn = (d: DebateRecord, kept: Turn) => {
    const participant = d.participants[kept.participant].ref;
    if (kept.status === "answered") {
      deps.publish("debate.turn", {
        debateId: d.id,
        round: kept.round,
        participant,
        agent: kept.agent!,
        position: kept.position!,
        confidence: kept.confidence!,
        argument: cut(kept.argument ?? "", 1000),
        latencyMs: kept.latencyMs,
      });
    } else {
      deps.publish("debate.turn.skipped", {
        debateId: d.id,
        round: kept.round,
        participant,
        ...(kept.agent ? { agent: kept.agent } : {}),
        reason: kept.reason ?? "silent",
      });
    }
  };

  const turn = async (raw: unknown) => {
    const { debate: id, round, participant: slot } = raw as TurnInput;
    const d = await load(id);
    if (d.status !== "running") return { skipped: d.status };
    const recorded = await store.turn(id, round, slot);
    if (recorded) {
      tellTurn(d, recorded);
      return { status: recorded.status, again: true };
    }
    const p = d.participants[slot];
    const startedAt = now();
    const t0 = performance.now();
    let t: Turn;
    try {
      const { agent, answer } = await deps.ask(
        p,
        slot,
        await request(d, round, slot, "participant"),
        d.turnTimeoutMs,
      );
      const base = { round, participant: slot, ref: p.ref, agent, startedAt };
      try {
        t = {
          ...base,
          status: "answered",
          ...parseAnswer(answer),
          latencyMs: performance.now() - t0,
          node: deps.nodeId,
        };
      } catch (err) {
        t = {
          ...base,
          status: "silent",
          reason: `bad answer: ${(err as Error).message}`,
          latencyMs: performance.now() - t0,
          node: deps.nodeId,
        };
      }
    } catch (err) {
      t = {
        round,
        participant: slot,
        ref: p.ref,
        ...(err instanceof DebateAskError && err.agent
          ? { agent: err.agent }
          : {}),
        status: "silent",
        reason: cut((err as Error)?.message ?? String(err), 1000),
        startedAt,
        latencyMs: performance.now() - t0,
        node: deps.nodeId,
      };
    }
    t.latencyMs = Math.round(t.latencyMs * 100) / 100;
    // Cancelled (or finished) while the agent thought: nothing to record.
    const after = await load(id);
    if (after.status !== "running") return { skipped: after.status };
    const { turn: kept, written } = await store.recordTurn(id, t);
    if (written) deps.onTurn?.(kept);
    tellTurn(d, kept);
    return { status: kept.status, ...(written ? {} : { again: true }) };
  };

  const moderate = async (raw: unknown) => {
    const { debate: id, round } = raw as RoundInput;
    const d = await load(id);
    if (d.status !== "running" || !d.moderator) return { skipped: d.status };
    if (await store.moderation(id, round)) return { again: true };
    const startedAt = now();
    const t0 = performance.now();
    let m: Moderation;
    try {
      const { agent, answer } = await deps.ask(
        d.moderator,
        MODERATOR_SLOT,
        await request(d, round, MODERATOR_SLOT, "moderator"),
        d.turnTimeoutMs,
      );
      const summary = (answer as { summary?: unknown } | null)?.summary;
      m = typeof summary === "string" && summary.trim()
        ? {
          round,
          agent,
          summary: cut(summary.trim(), 2000),
          startedAt,
          latencyMs: 0,
        }
        : {
          round,
          agent,
          error: "bad answer: no summary text",
          startedAt,
          latencyMs: 0,
        };
    } catch (err) {
      m = {
        round,
        ...(err instanceof DebateAskError && err.agent
          ? { agent: err.agent }
          : {}),
        error: cut((err as Error)?.message ?? String(err), 1000),
        startedAt,
        latencyMs: 0,
      };
    }
    m.latencyMs = Math.round((performance.now() - t0) * 100) / 100;
    const kept = await store.recordModeration(id, m);
    return { summarised: kept.summary !== undefined };
  };

  /**
   * The events of a recorded round: its tally, the consensus, and the end
   * when this round ended the debate.
   */
  const announce = (d: DebateRecord, record: RoundRecord) => {
    const result = record.tally;
    deps.publish("debate.round.completed", {
      debateId: d.id,
      round: record.round,
      tally: Object.fromEntries(
        Object.entries(result.positions).map(([p, s]) => [p, s.count]),
      ),
      answered: result.answered,
      silent: result.silent,
      reached: result.reached,
      ...(record.summary ? { summary: cut(record.summary, 1000) } : {}),
    });
    if (result.reached) {
      deps.publish("debate.consensus", {
        debateId: d.id,
        round: record.round,
        position: result.leading!,
        share: result.share,
      });
    }
    if (d.status !== "running" && d.finishedAt === record.completedAt) {
      deps.publish("debate.finished", {
        debateId: d.id,
        status: d.status,
        roundsRun: d.roundsRun,
        ...(d.result ? { position: d.result.position } : {}),
      });
    }
  };

  const tally = async (raw: unknown) => {
    const { debate: id, round } = raw as RoundInput;
    const d = await load(id);
    /** The next round's saga, unless the debate is over. */
    const next = async (cur: DebateRecord) => {
      if (cur.status === "running" && round < cur.rounds) {
        await deps.startRound(cur, round + 1);
      }
    };
    // Recorded by a run before this one, which may have died before telling
    // it or starting the next round: both again (events are at least once).
    const recorded = await store.round(id, round);
    if (recorded) {
      const cur = await load(id);
      announce(cur, recorded);
      await next(cur);
      return { again: true };
    }
    if (d.status !== "running") return { skipped: d.status };
    const [turns, moderation] = await Promise.all([
      store.turns(id, round, round),
      d.moderator ? store.moderation(id, round) : Promise.resolve(null),
    ]);
    const bySlot = new Map(turns.map((t) => [t.participant, t]));
    const result = tallyRound(
      d.participants.map((_, i) => bySlot.get(i) ?? { status: "silent" }),
      d.consensus,
    );
    const record: RoundRecord = {
      round,
      tally: result,
      ...(moderation?.summary ? { summary: moderation.summary } : {}),
      ...(moderation?.error ? { moderatorError: moderation.error } : {}),
      completedAt: now(),
    };
    const status = result.reached
      ? "consensus"
      : round >= d.rounds
      ? "no-consensus"
      : "running";
    const { debate: after, written } = await store.recordRound(
      id,
      record,
      (cur) =>
        cur.status !== "running" ? null : {
          ...cur,
          roundsRun: round,
          status,
          updatedAt: record.completedAt,
          ...(status === "running" ? {} : { finishedAt: record.completedAt }),
          ...(result.reached
            ? {
              result: {
                position: result.leading!,
                round,
                share: result.share,
              },
            }
            : {}),
        },
    );
    if (!written) {
      const cur = await load(id);
      const rec = await store.round(id, round);
      if (rec) announce(cur, rec);
      await next(cur);
      return { again: true };
    }
    announce(after, record);
    if (after.status !== "running") deps.onFinished?.(after);
    await next(after);
    return { status: after.status, reached: result.reached };
  };

  const step = (
    id: string,
    name: string,
    input: unknown,
    timeoutMs: number,
  ) => ({
    id,
    run: { kind: "function", name, input },
    timeoutMs,
    retry: { maxAttempts: 5, backoffMs: 200, maxBackoffMs: 5000 },
  });

  return {
    functions: {
      [DEBATE_FUNCTIONS.turn]: turn,
      [DEBATE_FUNCTIONS.moderate]: moderate,
      [DEBATE_FUNCTIONS.tally]: tally,
    },
    definition(d, round) {
      // The step outlives the agent's deadline by enough for the KV writes.
      const askMs = d.turnTimeoutMs + 15_000;
      const steps: unknown[] = [{
        parallel: d.participants.map((_, participant) =>
          step(`p${participant}`, DEBATE_FUNCTIONS.turn, {
            debate: d.id,
            round,
            participant,
          }, askMs)
        ),
      }];
      if (d.moderator) {
        steps.push(
          step("moderator", DEBATE_FUNCTIONS.moderate, {
            debate: d.id,
            round,
          }, askMs),
        );
      }
      // Starting the next round's saga is part of the tally: more time.
      steps.push(
        step("tally", DEBATE_FUNCTIONS.tally, { debate: d.id, round }, 30_000),
      );
      return { name: "debate.round", steps };
    },
  };
}
