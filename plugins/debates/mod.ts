/**
 * The debates plugin (`builtin:debates`, capability `extension:debates`):
 * live multi-agent debates run as sagas on `extension:sagas`, with
 * `debate.*` events on the node's emitter (stored and streamed by
 * `builtin:events` when loaded) and analytics in `/metrics`.
 *
 * - `POST /api/v1/debates` (`tasks:write`)
 *   `{topic, participants, rounds, turnTimeoutMs?, consensus, moderator?}`
 *   → 201 the debate; 400 `bad_debate` naming the field.
 * - `GET /api/v1/debates?status=&limit=&cursor=` (`tasks:read`): a page,
 *   newest first.
 * - `GET /api/v1/debates/{id}` (`tasks:read`): turns, timings, stances and
 *   consensus per round.
 * - `POST /api/v1/debates/{id}/cancel` (`tasks:write`).
 *
 * A participant is an enrolled agent's id (asked on its backend channel
 * `tasks.debate`) or a capability (an agent that handles
 * `tasks.{capability}`, connected here or, when none is, to another node).
 * An agent connected to another node is asked through that node
 * (`POST /api/v1/debates/ask`, node-signed). See docs/debates.md.
 *
 * @example Load it
 * ```sh ignore
 * deno task start --plugin builtin:sagas --plugin builtin:events --plugin builtin:debates
 * ```
 *
 * @module
 */
import type { Context } from "hono";
import { definePlugin, PlexusError, z } from "../../core/plugin.ts";
import type { NodeEvents } from "../../core/events.ts";
import { plexusErrorResponse } from "../../core/http/errors.ts";
import { VERSION } from "../../core/version.ts";
import type { AgentGateway } from "../../gateway/gateway.ts";
import { createPresence } from "../../gateway/presence.ts";
import { createAgentAsker } from "./asker.ts";
import type { SagaService } from "../sagas/mod.ts";
import { DebateInputError, parseDebateInput } from "./input.ts";
import {
  createDebateStore,
  type DebateRecord,
  type DebateStatus,
  type DebateView,
  FINISHED_STATUSES,
  type Participant,
} from "./store.ts";
import { createDebateEngine, parseRoundSagaId, roundSagaId } from "./engine.ts";
import { DEBATE_EVENT_SCHEMAS, type DebateEventType } from "./events.ts";

export { DEBATE_EVENT_SCHEMAS } from "./events.ts";
export type { DebateRequest, TranscriptTurn } from "./engine.ts";
export type {
  DebateRecord,
  DebateStatus,
  DebateView,
  RoundRecord,
  Turn,
} from "./store.ts";

export { DEBATE_CHANNEL } from "./asker.ts";

const STATUSES: readonly DebateStatus[] = [
  "running",
  "consensus",
  "no-consensus",
  "failed",
  "cancelled",
];

const configSchema = z.strictObject({
  transcriptRounds: z.number().int().min(1).max(50).default(10)
    .describe("Rounds of transcript sent with each question"),
});

/** What `kernel.get("extension:debates")` returns. */
export interface DebatesApi {
  /** Starts a debate from a `POST /api/v1/debates` body; throws DebateInputError. */
  start(body: unknown, by?: string): Promise<DebateRecord>;
  /** The debate, with its turns and rounds. */
  get(id: string): Promise<DebateView | null>;
}

/** The plugin. */
export default definePlugin({
  manifest: {
    name: "debates",
    version: VERSION,
    kind: "extension",
    api: "^1",
    provides: ["extension:debates"],
    requires: ["extension:sagas", "gateway:agents", "state:kv"],
    config: configSchema,
  },
  setup(ctx) {
    const sagas = ctx.kernel.get<SagaService>("extension:sagas");
    const gateway = ctx.kernel.get<AgentGateway>("gateway:agents");
    const events = ctx.kernel.has("events:local")
      ? ctx.kernel.get<NodeEvents>("events:local")
      : undefined;

    const started = ctx.metrics.counter(
      "plexus_debates_started_total",
      "Debates started through this node",
    );
    const finished = ctx.metrics.counter(
      "plexus_debates_finished_total",
      "Debates this node finished, by status (consensus, no-consensus, failed, cancelled)",
    );
    const roundsToConsensus = ctx.metrics.histogram(
      "plexus_debates_rounds_to_consensus",
      "Rounds a debate took to reach consensus",
      [1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 50],
    );
    const turns = ctx.metrics.counter(
      "plexus_debates_turns_total",
      "Turns recorded by this node, by outcome (answered, silent): participation",
    );
    const turnLatency = ctx.metrics.histogram(
      "plexus_debates_turn_latency_seconds",
      "Time an agent took to answer a turn, by agent",
      [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    );

    const publish = (type: DebateEventType, data: unknown) => {
      if (!events?.listening) return;
      const schema = DEBATE_EVENT_SCHEMAS[type];
      const parsed = schema.data.safeParse(data);
      if (parsed.success) {
        events.emitChecked(type, schema.version, parsed.data);
      } else {
        ctx.log.warn("debate event dropped", {
          type,
          error: parsed.error.issues[0]?.message,
        });
      }
    };

    const kv = ctx.kernel.get("state:kv");
    const asker = createAgentAsker({
      gateway,
      presence: createPresence(kv),
      nodeId: ctx.node.id,
      nodeFetch: ctx.nodeFetch,
    });
    const store = createDebateStore(kv, ctx.kv.prefix);
    const startRound = async (d: DebateRecord, round: number) => {
      await sagas.start(engine.definition(d, round), {
        id: roundSagaId(d, round),
      });
    };
    const engine = createDebateEngine({
      startRound,
      store,
      ask: asker.ask,
      publish,
      nodeId: ctx.node.id,
      transcriptRounds: ctx.config.transcriptRounds,
      onTurn: (t) => {
        turns.inc({ outcome: t.status });
        if (t.status === "answered" && t.agent) {
          turnLatency.observe(t.latencyMs / 1000, { agent: t.agent });
        }
      },
      onFinished: (d) => {
        finished.inc({ status: d.status });
        if (d.status === "consensus" && d.result) {
          roundsToConsensus.observe(d.result.round);
        }
      },
    });
    for (const [name, fn] of Object.entries(engine.functions)) {
      sagas.registerFunction(name, fn);
    }

    /** An agent id enrolled here, else a capability some connected agent offers. */
    const resolve = async (
      ref: string,
      field: string,
    ): Promise<Participant> => {
      if (await gateway.get(ref)) return { ref, kind: "agent" };
      if (
        (gateway.capabilities()[ref] ?? []).length > 0 ||
        (await asker.offering(`tasks.${ref}`)).length > 0
      ) return { ref, kind: "capability" };
      throw new DebateInputError(
        field,
        `unknown participant '${ref}': no agent with this id is enrolled and no connected agent offers it as a capability`,
      );
    };

    const start = async (body: unknown, by?: string) => {
      const input = parseDebateInput(body);
      const participants = await Promise.all(
        input.participants.map((ref, i) => resolve(ref, `participants[${i}]`)),
      );
      const moderator = input.moderator
        ? await resolve(input.moderator, "moderator")
        : undefined;
      // One agent in two slots would speak twice a round; a capability may repeat.
      participants.forEach((p, i) => {
        const first = participants.findIndex((q) => q.ref === p.ref);
        if (p.kind === "agent" && first < i) {
          throw new DebateInputError(
            `participants[${i}]`,
            `agent '${p.ref}' is participants[${first}] already`,
          );
        }
      });
      const id = crypto.randomUUID();
      const now = Date.now();
      const debate: DebateRecord = {
        id,
        topic: input.topic,
        participants,
        ...(moderator ? { moderator } : {}),
        rounds: input.rounds,
        turnTimeoutMs: input.turnTimeoutMs,
        consensus: input.consensus,
        status: "running",
        saga: `debate-${id}`,
        ...(by ? { by } : {}),
        createdAt: now,
        updatedAt: now,
        roundsRun: 0,
      };
      sagas.validate(engine.definition(debate, 1));
      await store.create(debate);
      publish("debate.started", {
        debateId: id,
        topic: debate.topic.slice(0, 200),
        participants: participants.map((p) => p.ref),
        rounds: debate.rounds,
        method: debate.consensus.method,
      });
      try {
        await startRound(debate, 1);
      } catch (err) {
        await store.finish(id, "failed", `the saga did not start: ${err}`);
        throw err;
      }
      started.inc();
      return debate;
    };

    /**
     * A running debate whose round's saga ended without finishing it is
     * marked failed: on that saga's event (`sagaId`), and on read (the saga
     * of the round in progress, else of the last one).
     */
    const reconcile = async (
      d: DebateRecord,
      sagaId?: string,
    ): Promise<DebateRecord> => {
      if (FINISHED_STATUSES.has(d.status)) return d;
      const ids = sagaId ? [sagaId] : [
        roundSagaId(d, d.roundsRun + 1),
        ...d.roundsRun > 0 ? [roundSagaId(d, d.roundsRun)] : [],
      ];
      let ended: { id: string; status: string; reason?: string } | undefined;
      for (const id of ids) {
        const saga = await sagas.get(id);
        if (!saga) continue;
        if (saga.status === "running" || saga.status === "completed") return d;
        ended = { id, status: saga.status, reason: saga.reason };
        break;
      }
      if (!ended) return d;
      const failed = await store.finish(
        d.id,
        "failed",
        `saga ${ended.id} ended ${ended.status}${
          ended.reason ? `: ${ended.reason}` : ""
        }`,
      );
      if (!failed) return (await store.get(d.id)) ?? d;
      publish("debate.finished", {
        debateId: d.id,
        status: "failed",
        roundsRun: failed.roundsRun,
      });
      finished.inc({ status: "failed" });
      return failed;
    };

    const answer = async (fn: () => Promise<Response>): Promise<Response> => {
      try {
        return await fn();
      } catch (err) {
        if (err instanceof PlexusError) return plexusErrorResponse(err);
        throw err;
      }
    };
    const notFound = (id: string) =>
      new PlexusError("not_found", `no debate '${id}'`, { status: 404 });
    const principal = (c: Context) =>
      (c.var as { principal?: { sub?: string } }).principal?.sub;

    const routes = ctx.api("debates");
    routes
      .post("/", "tasks:write", (c) =>
        answer(async () => {
          let body: unknown;
          try {
            body = await c.req.json();
          } catch (err) {
            throw new DebateInputError(
              "(body)",
              `not JSON: ${(err as Error).message}`,
            );
          }
          return c.json(await start(body, principal(c)), 201);
        }))
      .get("/", "tasks:read", (c) =>
        answer(async () => {
          const status = c.req.query("status");
          if (status !== undefined && !STATUSES.includes(status as never)) {
            throw new DebateInputError(
              "status",
              `expected one of ${STATUSES.join(", ")}, got '${status}'`,
            );
          }
          const limitText = c.req.query("limit") ?? "50";
          const limit = Number(limitText);
          if (!Number.isInteger(limit) || limit < 1 || limit > 500) {
            throw new DebateInputError(
              "limit",
              `expected an integer from 1 to 500, got '${limitText}'`,
            );
          }
          const cursor = c.req.query("cursor");
          try {
            const page = await store.list({
              status: status as DebateStatus | undefined,
              limit,
              ...(cursor ? { cursor } : {}),
            });
            return c.json(page);
          } catch (err) {
            if (cursor && err instanceof TypeError) {
              throw new DebateInputError(
                "cursor",
                `not a cursor from this list: ${err.message}`,
              );
            }
            throw err;
          }
        }))
      .get("/:id", "tasks:read", (c) =>
        answer(async () => {
          const id = c.req.param("id");
          const d = await store.get(id);
          if (!d) throw notFound(id);
          await reconcile(d);
          return c.json(await store.view(id));
        }))
      .post("/:id/cancel", "tasks:write", (c) =>
        answer(async () => {
          const id = c.req.param("id");
          const d = await store.get(id);
          if (!d) throw notFound(id);
          const cancelled = await store.finish(id, "cancelled");
          if (!cancelled) {
            throw new PlexusError(
              "conflict",
              `debate '${id}' is ${d.status} already`,
              { status: 409 },
            );
          }
          await sagas.cancel(
            roundSagaId(cancelled, cancelled.roundsRun + 1),
            "debate cancelled by request",
          );
          publish("debate.finished", {
            debateId: id,
            status: "cancelled",
            roundsRun: cancelled.roundsRun,
          });
          finished.inc({ status: "cancelled" });
          return c.json(cancelled);
        }));

    const askSchema = z.strictObject({
      agent: z.string().min(1).max(256),
      channel: z.string().regex(/^tasks\.[A-Za-z0-9_.-]{1,64}$/),
      request: z.unknown(),
      timeoutMs: z.number().int().min(1).max(600_000),
    });
    // Another node asks an agent connected here, for a turn it runs.
    routes.post("/ask", "node", (c) =>
      answer(async () => {
        const body = askSchema.safeParse(await c.req.json().catch(() => null));
        if (!body.success) {
          throw new PlexusError(
            "bad_request",
            `not an ask: ${body.error.issues[0]?.message}`,
            { status: 400 },
          );
        }
        const { agent, channel, request, timeoutMs } = body.data;
        try {
          return c.json({
            answer: await asker.askHere(agent, channel, request, timeoutMs),
          });
        } catch (err) {
          return c.json({
            error: {
              code: "agent_unavailable",
              message: (err as Error).message,
            },
          }, 502);
        }
      }));

    const api: DebatesApi = { start, get: (id) => store.view(id) };
    // A debate's saga that ends compensated (a step failed all its retries,
    // or it was cancelled through the sagas API) fails the debate at once.
    const offSagaEvents = events?.listen((e) => {
      if (e.type !== "saga.compensated" && e.type !== "saga.failed") return;
      const sagaId = (e.data as { sagaId?: unknown } | null)?.sagaId;
      const of = typeof sagaId === "string" ? parseRoundSagaId(sagaId) : null;
      if (!of) return;
      store.get(of.debate)
        .then((d) => d && reconcile(d, sagaId as string))
        .catch((err) =>
          ctx.log.warn("debate not reconciled with its saga", {
            saga: sagaId,
            error: (err as Error)?.message ?? String(err),
          })
        );
    });
    return Promise.resolve({
      api,
      stop() {
        offSagaEvents?.();
        return Promise.resolve();
      },
    });
  },
});
