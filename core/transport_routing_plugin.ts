/**
 * The plugin that puts {@linkcode routedTransport} in a node: with several
 * `--transport`s (or any routing rule) the node registers it, it requires
 * `transport:NAME` of each and provides `transport:routed`, the one
 * transport consumers of a multi-transport node use (docs/transports.md).
 * A rule naming a transport that is not loaded, or a guarantee its transport
 * cannot give, fails its setup with a ConfigError (the CLI exits 2).
 *
 * @module
 */
import type { Config } from "./config.ts";
import type { Plugin } from "./plugin.ts";
import type { Transport } from "./transport.ts";
import { routedTransport } from "./transport_routing.ts";

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
      ctx.log.info("transport routing on", {
        transports: names,
        rules: routing.rules.length,
      });
      return Promise.resolve({ api: transport, stop: () => transport.close() });
    },
  };
}
