/**
 * The plugin that puts {@linkcode routedTransport} in a node: with several
 * `--transport`s (or any routing rule) the node registers it, it requires
 * `transport:NAME` of each and provides `transport:routed`, the one
 * transport consumers of a multi-transport node use (docs/transports.md).
 * A rule naming a transport that is not loaded, or a guarantee its transport
 * cannot give, fails its setup with a ConfigError (the CLI exits 2).
 *
 * Routes (behind the node's auth chain): `GET /api/v1/transports` (the
 * transports, rules in force and bridges; `cluster:read`) and
 * `POST /api/v1/transports/bridge` `{family, to, topics?, groups?}` (starts a
 * bridge; `admin`).
 *
 * @module
 */
import { type Config, ConfigError } from "./config.ts";
import type { Plugin } from "./plugin.ts";
import type { Transport } from "./transport.ts";
import { type Bridge, routedTransport } from "./transport_routing.ts";
import { TransportError } from "./transport.ts";
import { errorResponse } from "./http/errors.ts";

/** The capability the routing facade provides. */
export const ROUTED_TRANSPORT = "transport:routed";

/**
 * Builds the routing plugin over the transports `names` (the first is the
 * default unless `routing.default` says otherwise).
 *
 * @example Usage
 * ```ts
 * import { transportRoutingPlugin } from "./transport_routing_plugin.ts";
 * const plugin = transportRoutingPlugin({ rules: [], dedupWindowMs: 600_000 }, ["kafka", "nats"]);
 * plugin.manifest.requires; // ["transport:kafka", "transport:nats"]
 * ```
 */
export function transportRoutingPlugin(
  routing: Config["routing"],
  names: string[],
): Plugin {
  return {
    manifest: {
      name: "transport-routing",
      version: "1.0.0",
      kind: "transport",
      api: "^1",
      provides: [ROUTED_TRANSPORT],
      requires: names.map((n) => `transport:${n}`),
    },
    setup(ctx) {
      const duplicates = ctx.metrics.counter(
        "plexus_routing_duplicates_total",
        "Deliveries acked without calling the handler: their message id was already handled",
      );
      const transport = routedTransport({
        transports: Object.fromEntries(
          names.map((n) => [n, ctx.kernel.get<Transport>(`transport:${n}`)]),
        ),
        rules: routing.rules,
        default: routing.default ?? names[0],
        defaultDelivery: routing.defaultDelivery,
        kv: ctx.kernel.get<Deno.Kv>("state:kv"),
        dedupWindowMs: routing.dedupWindowMs,
        // Each transport's own plugin closes it.
        closeTransports: false,
        onDuplicate: () => duplicates.inc(),
        onDropped: ({ topic, id, error }) =>
          ctx.log.warn("at-most-once handler failed; message dropped", {
            topic,
            id,
            error,
          }),
      });
      const view = (b: Bridge) => ({
        family: b.family,
        from: b.from,
        to: b.to,
        drains: b.drains,
        moved: b.moved,
      });
      ctx.api("transports")
        .get("/", "cluster:read", (c) =>
          c.json({
            transports: names.map((name) => ({
              name,
              caps: ctx.kernel.get<Transport>(`transport:${name}`).caps,
            })),
            rules: transport.rules,
            default: routing.default ?? names[0],
            bridges: transport.bridges().map(view),
          }))
        .post("/bridge", "admin", async (c) => {
          const body = await c.req.json().catch(() => undefined) as
            | Record<string, unknown>
            | undefined;
          const strings = (v: unknown) =>
            v === undefined ||
            (Array.isArray(v) && v.every((x) => typeof x === "string"));
          if (
            typeof body?.family !== "string" || typeof body.to !== "string" ||
            !strings(body.topics) || !strings(body.groups)
          ) {
            return errorResponse(
              400,
              "expected {family: string, to: string, topics?: string[], groups?: string[]}",
            );
          }
          try {
            const b = await transport.bridge(body.family, body.to, {
              topics: body.topics as string[] | undefined,
              groups: body.groups as string[] | undefined,
            });
            ctx.log.info("bridge started", view(b));
            return c.json(view(b), 201);
          } catch (err) {
            // A bad family, an unknown target or a guarantee it cannot give.
            if (
              err instanceof TypeError || err instanceof ConfigError ||
              (err instanceof TransportError &&
                err.code === "invalid_argument")
            ) {
              return errorResponse(400, (err as Error).message);
            }
            throw err;
          }
        });
      ctx.log.info("transport routing on", {
        transports: names,
        rules: routing.rules.length,
      });
      return Promise.resolve({ api: transport, stop: () => transport.close() });
    },
  };
}
