/**
 * The event bus plugin (`builtin:events`, capability `events:bus`): keeps
 * every event the node emits, and those plugins publish, in an ordered,
 * durable store in Deno KV; offers replay, content-filtered subscriptions
 * with durable cursors, and `GET /api/v1/events` (SSE and WebSocket).
 * See docs/events.md.
 *
 * @example Usage
 * ```ts ignore
 * const bus = ctx.kernel.get<EventBus>("events:bus");
 * await bus.subscribe('type == "task.failed"', (e) => alert(e), { name: "alerts" });
 * ```
 *
 * @module
 */
import { definePlugin, z } from "../../core/plugin.ts";
import type { Consensus } from "../../core/consensus.ts";
import type { NodeEvents } from "../../core/events.ts";
import { VERSION } from "../../core/version.ts";
import { createEventBus, type EventBus } from "./bus.ts";
import { eventRoutes } from "./http.ts";
import { type Mirror, startMirror } from "./mirror.ts";
import type { Transport } from "../../core/transport.ts";

export type { EventBus, EventSubscription, SubscribeOptions } from "./bus.ts";
export type { StoredEvent } from "./store.ts";
export type { Filter } from "./filter.ts";

const configSchema = z.strictObject({
  retention: z.strictObject({
    maxAgeMs: z.number().int().positive().default(7 * 24 * 3_600_000)
      .describe("Events older than this are removed (whole batches)"),
    maxCount: z.number().int().positive().default(1_000_000)
      .describe("Events kept per stream at most"),
    everyMs: z.number().int().positive().default(60_000)
      .describe("How often the leader (every node without consensus) trims"),
  }).default({
    maxAgeMs: 7 * 24 * 3_600_000,
    maxCount: 1_000_000,
    everyMs: 60_000,
  })
    .describe("Retention of the event store"),
  maxClientBufferBytes: z.number().int().positive().default(1 << 20)
    .describe("Unsent bytes an SSE/WebSocket client may hold"),
  slowClientMs: z.number().int().positive().default(5000)
    .describe(
      "How long a client may stay over its buffer before it is dropped",
    ),
  heartbeatMs: z.number().int().positive().default(15_000)
    .describe("SSE comment period that keeps idle streams open"),
  mirror: z.strictObject({
    enabled: z.boolean().default(true)
      .describe("Mirror the store to a durable transport when one is loaded"),
    transport: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/).optional()
      .describe("Which transport (its name); any durable one by default"),
    prefix: z.string().regex(/^[a-z0-9][a-z0-9_-]*$/).default("events")
      .describe("Topic prefix: events go to {prefix}.{type}"),
    checkMs: z.number().int().positive().default(1000)
      .describe("How often leadership and the transport are looked at"),
  }).default({ enabled: true, prefix: "events", checkMs: 1000 })
    .describe("Mirroring to a durable transport (run by the leader)"),
});

/** The plugin. */
export default definePlugin({
  manifest: {
    name: "events",
    version: VERSION,
    kind: "extension",
    api: "^1",
    provides: ["events:bus"],
    requires: ["events:local", "state:kv"],
    config: configSchema,
  },
  setup(ctx) {
    const kv = ctx.kernel.get("state:kv");
    const appended = ctx.metrics.counter(
      "plexus_events_appended_total",
      "Events stored by this node, by stream",
    );
    const failed = ctx.metrics.counter(
      "plexus_events_append_failures_total",
      "Events this node could not store, by reason",
    );
    const clients = ctx.metrics.gauge(
      "plexus_events_clients",
      "SSE and WebSocket event clients connected to this node",
    );
    const dropped = ctx.metrics.counter(
      "plexus_events_clients_dropped_total",
      "Event clients dropped for falling behind",
    );
    const bus: EventBus = createEventBus(kv, {
      events: ctx.kernel.get<NodeEvents>("events:local"),
      onError: (err, event) => {
        failed.inc({ reason: (err as Error)?.name ?? "Error" });
        ctx.log.warn("event not stored", {
          type: event.type,
          error: (err as Error)?.message ?? String(err),
        });
      },
    });
    bus.transform((e) => {
      appended.inc({ stream: e.stream });
      return e;
    });
    let connected = 0;
    const http = eventRoutes(ctx.api("events"), bus, {
      maxClientBufferBytes: ctx.config.maxClientBufferBytes,
      slowClientMs: ctx.config.slowClientMs,
      heartbeatMs: ctx.config.heartbeatMs,
      onClient: (change) => {
        if (change === "dropped") dropped.inc();
        else clients.set(connected += change === "open" ? 1 : -1);
      },
    });
    const leads = () =>
      ctx.kernel.has("consensus:*")
        ? ctx.kernel.get<Consensus>("consensus:*").isLeader()
        : true;
    const { retention } = ctx.config;
    const trim = setInterval(() => {
      if (!leads()) return;
      bus.store.trim(retention).then((r) => {
        if (r.events > 0) ctx.log.info("event retention", { ...r });
      }).catch((err) =>
        ctx.log.warn("event retention failed", { error: err?.message })
      );
    }, retention.everyMs);
    Deno.unrefTimer(trim);
    const mirrored = ctx.metrics.gauge(
      "plexus_events_mirrored",
      "Events this node published to the durable transport",
      () => {
        mirrored.set(mirror?.published ?? 0);
        active.set(mirror?.active ? 1 : 0);
      },
    );
    const active = ctx.metrics.gauge(
      "plexus_events_mirror_active",
      "1 while this node mirrors the event store to a durable transport",
    );
    const { mirror: m } = ctx.config;
    const capability = `transport:${m.transport ?? "*"}`;
    const mirror: Mirror | undefined = m.enabled
      ? startMirror(bus, {
        prefix: m.prefix,
        transport: () =>
          ctx.kernel.has(capability)
            ? ctx.kernel.get<Transport>(capability)
            : undefined,
        leads,
        checkMs: m.checkMs,
        onError: (err) =>
          ctx.log.warn("event mirror: publish failed, retrying", {
            error: (err as Error)?.message ?? String(err),
          }),
      })
      : undefined;
    return Promise.resolve({
      api: bus,
      drain() {
        http.closeAll();
        return Promise.resolve();
      },
      async stop() {
        clearInterval(trim);
        await mirror?.stop();
        http.closeAll();
        await bus.close();
      },
    });
  },
});
