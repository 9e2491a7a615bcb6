/**
 * The sagas plugin (`builtin:sagas`, capability `extension:sagas`): durable
 * sagas in the shared KV, driven by the node that leads (fenced by the
 * consensus plugin's epoch when it offers one), with `saga.*` events on the
 * node's emitter, and `/api/v1/sagas`. See docs/sagas.md.
 *
 * @example Usage
 * ```ts ignore
 * const sagas = ctx.kernel.get<SagaService>("extension:sagas");
 * const id = await sagas.start({ name: "order", steps: [
 *   { id: "reserve", run: { kind: "task", type: "stock.reserve" },
 *     compensate: { kind: "task", type: "stock.release" } },
 * ] });
 * ```
 *
 * @module
 */
import { definePlugin, z } from "../../core/plugin.ts";
import type { Consensus } from "../../core/consensus.ts";
import type { NodeEvents } from "../../core/events.ts";
import type { FenceToken } from "../../core/state/fence.ts";
import { VERSION } from "../../core/version.ts";
import { gatewayPresenceKey } from "../../core/state/keys.ts";
import type { TaskService } from "../../core/tasks.ts";
import { createSagaService, type SagaNode } from "./service.ts";
import { SAGA_EVENT_SCHEMAS, sagaEvents } from "./events.ts";
import { sagaRoutes } from "./http.ts";

export type {
  DeadLetter,
  ListOptions,
  SagaDef,
  SagaFunction,
  SagaFunctionContext,
  SagaService,
  SagaState,
  SagaStatus,
  StartOptions,
  StepState,
} from "./service.ts";
export { SagaDefinitionError } from "./service.ts";
export { SAGA_EVENT_SCHEMAS } from "./events.ts";

const configSchema = z.strictObject({
  tickMs: z.number().int().min(1).max(10_000).default(50)
    .describe(
      "How often the leader sweeps due retries and sagas other nodes started, and task steps are polled, ms",
    ),
  checkTaskTypes: z.boolean().default(true)
    .describe(
      "Refuse definitions naming a task type no handler on this node registered",
    ),
  retention: z.strictObject({
    maxAgeMs: z.number().int().positive().default(7 * 24 * 3_600_000)
      .describe(
        "Finished sagas (and their dead letters) older than this are deleted",
      ),
    everyMs: z.number().int().positive().default(60_000)
      .describe("How often the leader deletes them"),
  }).default({ maxAgeMs: 7 * 24 * 3_600_000, everyMs: 60_000 })
    .describe("Retention of finished sagas"),
  checkCapabilities: z.boolean().default(true)
    .describe(
      "Refuse definitions naming a capability no connected agent offers (any node's)",
    ),
});

/**
 * Capabilities agents offer now: those connected to this node, and every
 * connected agent's `tasks.{capability}` channels in the gateway's presence
 * records (any node's).
 */
async function knownCapabilities(
  kv: Deno.Kv,
  tasks: TaskService,
): Promise<string[]> {
  const out = new Set(Object.keys(tasks.capabilities()));
  for await (
    const e of kv.list<{ connected?: boolean; channels?: string[] }>({
      prefix: gatewayPresenceKey(),
    })
  ) {
    if (!e.value?.connected) continue;
    for (const ch of e.value.channels ?? []) {
      if (ch.startsWith("tasks.")) out.add(ch.slice("tasks.".length));
    }
  }
  return [...out];
}

/** The plugin. */
export default definePlugin({
  manifest: {
    name: "sagas",
    version: VERSION,
    kind: "extension",
    api: "^1",
    provides: ["extension:sagas"],
    requires: ["state:kv", "tasks:local"],
    config: configSchema,
  },
  setup(ctx) {
    const kv = ctx.kernel.get("state:kv");
    const tasks = ctx.kernel.get("tasks:local");
    const consensus = () =>
      ctx.kernel.has("consensus:*")
        ? ctx.kernel.get<Consensus & { fence?: () => FenceToken }>(
          "consensus:*",
        )
        : undefined;
    const events = ctx.kernel.has("events:local")
      ? ctx.kernel.get<NodeEvents>("events:local")
      : undefined;
    const transitions = ctx.metrics.counter(
      "plexus_sagas_transitions_total",
      "Saga transitions this node wrote, by the saga's status after",
    );
    const sagas: SagaNode = createSagaService({
      kv,
      tasks,
      tickMs: ctx.config.tickMs,
      leads: () => consensus()?.isLeader() ?? true,
      fence: () => consensus()?.fence?.(),
      taskTypes: () => ctx.config.checkTaskTypes ? tasks.types() : undefined,
      capabilities: async () =>
        ctx.config.checkCapabilities
          ? await knownCapabilities(kv, tasks)
          : undefined,
      onTransition: (t) => {
        transitions.inc({ status: t.state.status });
        if (!events?.listening) return;
        for (const e of sagaEvents(t)) {
          const schema = SAGA_EVENT_SCHEMAS[e.type];
          const data = schema.data.safeParse(e.data);
          if (data.success) events.emitChecked(e.type, schema.version, e.data);
          else ctx.log.warn("saga event dropped", { type: e.type });
        }
      },
      onError: (err) =>
        ctx.log.warn("saga driver", {
          error: (err as Error)?.message ?? String(err),
        }),
    });
    sagaRoutes(ctx.api("sagas"), sagas);
    const inflight = ctx.metrics.gauge(
      "plexus_sagas_inflight",
      "Saga steps and compensations this node is carrying out now",
      () => inflight.set(sagas.inflight()),
    );
    const { retention } = ctx.config;
    const trim = setInterval(() => {
      if (!(consensus()?.isLeader() ?? true)) return;
      sagas.store.trim(Date.now() - retention.maxAgeMs).then((n) => {
        if (n > 0) ctx.log.info("saga retention", { deleted: n });
      }).catch((err) =>
        ctx.log.warn("saga retention failed", { error: err?.message })
      );
    }, retention.everyMs);
    Deno.unrefTimer(trim);
    return Promise.resolve({
      api: sagas,
      async stop() {
        clearInterval(trim);
        await sagas.stop();
      },
    });
  },
});
