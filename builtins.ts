/**
 * The plugins shipped with Plexus, by `builtin:` name, as `main.ts` passes
 * them to the node. Each entry imports its folder's `mod.ts` with a literal
 * specifier, lazily: `deno bundle` and `deno compile` include every one, and
 * importing this file loads none (nor their drivers, ioredis, kafkajs, the NATS
 * and RabbitMQ clients).
 *
 * @module
 */
import type { PluginCatalog } from "./core/loader.ts";

/** `builtin:` name → the plugin, imported on first use. */
export const BUILTINS: PluginCatalog = {
  "gateway": async () => (await import("./gateway/mod.ts")).default,
  "dashboard": async () => (await import("./plugins/dashboard/mod.ts")).default,
  "prompts": async () => (await import("./plugins/prompts/mod.ts")).default,
  "events": async () => (await import("./plugins/events/mod.ts")).default,
  "sagas": async () => (await import("./plugins/sagas/mod.ts")).default,
  "debates": async () => (await import("./plugins/debates/mod.ts")).default,
  "examples/hello": async () =>
    (await import("./plugins/examples/mod.ts")).hello,
  "consensus/kv-lease": async () =>
    (await import("./consensus/kv-lease/mod.ts")).default,
  "consensus/raft": async () =>
    (await import("./consensus/raft/mod.ts")).default,
  "consensus/gossip": async () =>
    (await import("./consensus/gossip/mod.ts")).default,
  "consensus/pbft": async () =>
    (await import("./consensus/pbft/mod.ts")).default,
  "balancers/round-robin": async () =>
    (await import("./plugins/balancers/mod.ts")).roundRobinPlugin,
  "balancers/random": async () =>
    (await import("./plugins/balancers/mod.ts")).randomPlugin,
  "balancers/smooth-weighted": async () =>
    (await import("./plugins/balancers/mod.ts")).smoothWeightedPlugin,
  "balancers/least-connections": async () =>
    (await import("./plugins/balancers/mod.ts")).leastConnectionsPlugin,
  "balancers/p2c-ewma": async () =>
    (await import("./plugins/balancers/mod.ts")).p2cEwmaPlugin,
  "balancers/consistent-hash": async () =>
    (await import("./plugins/balancers/mod.ts")).consistentHashPlugin,
  "transports/kafka": async () =>
    (await import("./transports/kafka/mod.ts")).default,
  "transports/nats": async () =>
    (await import("./transports/nats/mod.ts")).default,
  "transports/rabbitmq": async () =>
    (await import("./transports/rabbitmq/mod.ts")).default,
  "transports/redis-streams": async () =>
    (await import("./transports/redis-streams/mod.ts")).default,
  "transports/websocket-mesh": async () =>
    (await import("./transports/websocket-mesh/mod.ts")).default,
};
