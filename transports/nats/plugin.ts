/**
 * The `transports/nats` plugin: provides `transport:nats`, a
 * `NatsTransport` (see `transport.ts`).
 *
 * Config (under `pluginConfig["nats"]`): `servers` (default `NATS_URL`,
 * else `nats://127.0.0.1:4222`), `mode` (`jetstream` | `core`), `prefix`,
 * `maxMessageBytes`, `partitions` (equal on every node), `ackWaitMs`,
 * `retryBaseMs`, `retryMaxMs`, `startFrom`, `maxMsgs`, `storage`,
 * `replicas`, `duplicateWindowMs`, `groupInactiveMs`, `connectTimeoutMs`.
 *
 * @module
 */
import { z } from "zod";
import { type Plugin, transportPlugin } from "../../core/plugin.ts";
import { connectNats } from "./transport.ts";

const ms = z.number().int().positive().max(3_600_000);
const url = z.string().regex(
  /^(nats|tls|wss?):\/\/[^\s,]+$/,
  "expected a nats://, tls://, ws:// or wss:// URL",
);

/** Schema of the plugin's config. */
export const natsConfig = z.strictObject({
  servers: z.union([
    z.string().regex(
      /^(nats|tls|wss?):\/\/[^\s,]+(,(nats|tls|wss?):\/\/[^\s,]+)*$/,
      "expected nats://host:port[,nats://host:port...]",
    ),
    z.array(url).min(1),
  ]).optional(),
  mode: z.enum(["jetstream", "core"]).default("jetstream"),
  prefix: z.string().regex(
    /^([A-Za-z0-9_-]+\.){0,8}$/,
    "expected up to 8 segments of A-Z a-z 0-9 _ -, each followed by '.' (or empty)",
  ).default("plexus."),
  maxMessageBytes: z.number().int().positive().max(64 * 1024 * 1024)
    .default(1_000_000),
  partitions: z.number().int().min(1).max(256).default(8),
  ackWaitMs: ms.default(30_000),
  retryBaseMs: ms.default(1000),
  retryMaxMs: ms.default(60_000),
  startFrom: z.union([
    z.enum(["new", "all"]),
    z.strictObject({ sequence: z.number().int().positive() }),
    z.strictObject({
      time: z.union([
        z.number().int().nonnegative(),
        z.iso.datetime({ offset: true }),
      ]),
    }),
  ]).default("new"),
  maxMsgs: z.number().int().nonnegative().default(1_000_000),
  storage: z.enum(["file", "memory"]).default("file"),
  replicas: z.number().int().min(1).max(5).default(1),
  duplicateWindowMs: ms.default(120_000),
  groupInactiveMs: z.number().int().nonnegative().default(0),
  connectTimeoutMs: ms.default(5000),
});

/** Config of the plugin after defaults. */
export type NatsConfig = z.infer<typeof natsConfig>;

/** The nats plugin (`builtin:transports/nats`). */
const natsPlugin: Plugin<NatsConfig> = transportPlugin({
  name: "nats",
  config: natsConfig,
  permissions: { net: true, env: ["NATS_URL"] },
  connect: (options, node) =>
    connectNats({
      ...options,
      servers: typeof options.servers === "string"
        ? options.servers.split(",")
        : options.servers ?? Deno.env.get("NATS_URL") ??
          "nats://127.0.0.1:4222",
      name: `${node.id}-${crypto.randomUUID().slice(0, 8)}`,
      nodeId: node.id,
    }),
  probe: { name: "rtt", run: (transport) => transport.nc.rtt() },
  logFields: (config) => ({ prefix: config.prefix, mode: config.mode }),
});

export default natsPlugin;
