/**
 * The `transports/redis-streams` plugin: provides `transport:redis-streams`,
 * a `RedisStreamsTransport` (see `transport.ts`).
 *
 * Config (under `pluginConfig["redis-streams"]`): `url` (default `REDIS_URL`,
 * else `redis://127.0.0.1:6379`), `prefix`, `maxLen`, `maxMessageBytes`,
 * `ackWaitMs`, `claimIntervalMs`, `blockMs`, `retryBaseMs`, `retryMaxMs`,
 * `startFrom`, `connectTimeoutMs`, `partitions` (streams per topic for keyed
 * messages; equal on every node).
 *
 * @module
 */
import { z } from "zod";
import { type Plugin, transportPlugin } from "../../core/plugin.ts";
import { connectRedisStreams } from "./transport.ts";

const ms = z.number().int().positive().max(3_600_000);

/** Schema of the plugin's config. */
export const redisStreamsConfig = z.strictObject({
  url: z.string().regex(/^rediss?:\/\//, "expected a redis:// or rediss:// URL")
    .optional(),
  prefix: z.string().min(1).max(100).default("plexus:"),
  maxLen: z.number().int().nonnegative().default(100_000),
  maxMessageBytes: z.number().int().positive().max(512 * 1024 * 1024).default(
    1024 * 1024,
  ),
  ackWaitMs: ms.default(30_000),
  claimIntervalMs: ms.default(1000),
  blockMs: ms.default(1000),
  retryBaseMs: ms.default(1000),
  retryMaxMs: ms.default(60_000),
  startFrom: z.enum(["new", "all"]).default("new"),
  connectTimeoutMs: ms.default(5000),
  partitions: z.number().int().min(1).max(1024).default(8),
});

/** Config of the plugin after defaults. */
export type RedisStreamsConfig = z.infer<typeof redisStreamsConfig>;

/** The redis-streams plugin (`builtin:transports/redis-streams`). */
const redisStreams: Plugin<RedisStreamsConfig> = transportPlugin({
  name: "redis-streams",
  config: redisStreamsConfig,
  permissions: { net: true, env: ["REDIS_URL"] },
  connect: (options, node) =>
    connectRedisStreams({
      ...options,
      url: options.url ?? Deno.env.get("REDIS_URL") ??
        "redis://127.0.0.1:6379",
      // Stable across restarts: a restarted node reuses its consumers.
      consumerName: node.id,
    }),
  probe: { name: "ping", run: (transport) => transport.redis.ping() },
  logFields: (config) => ({ prefix: config.prefix }),
});

export default redisStreams;
