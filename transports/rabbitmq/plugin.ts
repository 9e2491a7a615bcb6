/**
 * The `transports/rabbitmq` plugin: provides `transport:rabbitmq`, a
 * `RabbitmqTransport` (see `transport.ts`).
 *
 * Config (under `pluginConfig["rabbitmq"]`): `url` (default `AMQP_URL`,
 * else `amqp://guest:guest@127.0.0.1:5672`), `prefix`, `maxMessageBytes`,
 * `partitions` (equal on every node), `queueType`, `retryBaseMs`,
 * `retryMaxMs`, `groupExpiresMs`, `connectTimeoutMs`.
 *
 * @module
 */
import { z } from "zod";
import { type Plugin, transportPlugin } from "../../core/plugin.ts";
import { connectRabbitmq } from "./transport.ts";

const ms = z.number().int().positive().max(3_600_000);

/**
 * Schema of the plugin's config.
 *
 * @example Usage
 * ```ts
 * import { rabbitmqConfig } from "./plugin.ts";
 * rabbitmqConfig.parse({ partitions: 8 }).queueType; // "classic"
 * ```
 */
export const rabbitmqConfig = z.strictObject({
  url: z.string().regex(
    /^amqps?:\/\/[^\s]+$/,
    "expected an amqp:// or amqps:// URL",
  ).optional(),
  prefix: z.string().regex(
    /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+){0,4}$/,
    "expected up to 5 dot-separated segments of A-Z a-z 0-9 _ - (not starting with amq.)",
  ).refine(
    (p) => !p.startsWith("amq."),
    "names starting with amq. are reserved by RabbitMQ",
  ).default("plexus"),
  maxMessageBytes: z.number().int().positive().max(64 * 1024 * 1024)
    .default(1_000_000),
  partitions: z.number().int().min(1).max(64).default(4),
  queueType: z.enum(["classic", "quorum"]).default("classic"),
  retryBaseMs: ms.default(1000),
  retryMaxMs: ms.default(60_000),
  groupExpiresMs: z.number().int().nonnegative().default(0),
  connectTimeoutMs: ms.default(5000),
});

/**
 * Config of the plugin after defaults.
 *
 * @example Usage
 * ```ts
 * import type { RabbitmqConfig } from "./plugin.ts";
 * const prefix: RabbitmqConfig["prefix"] = "plexus";
 * ```
 */
export type RabbitmqConfig = z.infer<typeof rabbitmqConfig>;

/**
 * The rabbitmq plugin (`builtin:transports/rabbitmq`).
 *
 * @example Usage
 * ```ts
 * import rabbitmqPlugin from "./plugin.ts";
 * rabbitmqPlugin.manifest.provides; // ["transport:rabbitmq"]
 * ```
 */
const rabbitmqPlugin: Plugin<RabbitmqConfig> = transportPlugin({
  name: "rabbitmq",
  config: rabbitmqConfig,
  permissions: { net: true, env: ["AMQP_URL"] },
  connect: (options, node) =>
    connectRabbitmq({
      ...options,
      url: options.url ?? Deno.env.get("AMQP_URL") ??
        "amqp://guest:guest@127.0.0.1:5672",
      name: `${node.id}-${crypto.randomUUID().slice(0, 8)}`,
    }),
  probe: { name: "declare", run: (transport) => transport.ping() },
  logFields: (config) => ({
    prefix: config.prefix,
    queueType: config.queueType,
  }),
});

export default rabbitmqPlugin;
