/**
 * `transports/redis-streams`: the Transport contract on Redis Streams.
 *
 * The default export is the plugin (`builtin:transports/redis-streams`,
 * `--transport redis-streams`), which provides `transport:redis-streams`.
 * The wire layout is in docs/wire-format.md.
 *
 * @example Usage
 * ```ts ignore
 * import { connectRedisStreams } from "./mod.ts";
 * const t = await connectRedisStreams({ url: Deno.env.get("REDIS_URL") });
 * await t.publish("orders", envelope, { key: "customer-7" });
 * await t.close();
 * ```
 *
 * @module
 */
export { default } from "./plugin.ts";
export { type RedisStreamsConfig, redisStreamsConfig } from "./plugin.ts";
export {
  connectRedisStreams,
  type RedisStreamsOptions,
  type RedisStreamsTransport,
} from "./transport.ts";
export {
  decodeDeadLetter,
  decodeFields,
  dlqKey,
  encodeFields,
  partitionKey,
  partitionOf,
  streamKey,
} from "./wire.ts";
