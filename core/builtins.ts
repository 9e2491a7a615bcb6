/**
 * Plugins shipped with Plexus, by `builtin:` name. Each entry imports its
 * module lazily with a literal specifier so `deno bundle` and `deno compile`
 * include it. Transports, consensus plugins and balancers register here as
 * they land (`transports/NAME`, `consensus/NAME`, `balancers/NAME`).
 *
 * @module
 */

/** `builtin:` name → lazy module import. */
export const BUILTINS: Record<string, () => Promise<{ default: unknown }>> = {
  "examples/hello": () =>
    import("../plugins/examples/mod.ts").then((m) => ({ default: m.hello })),
  "consensus/kv-lease": () => import("../consensus/kv-lease/mod.ts"),
  "consensus/raft": () => import("../consensus/raft/mod.ts"),
  "consensus/gossip": () => import("../consensus/gossip/mod.ts"),
  "balancers/round-robin": () =>
    import("../plugins/balancers/mod.ts").then((m) => ({
      default: m.roundRobinPlugin,
    })),
  "balancers/random": () =>
    import("../plugins/balancers/mod.ts").then((m) => ({
      default: m.randomPlugin,
    })),
  "balancers/smooth-weighted": () =>
    import("../plugins/balancers/mod.ts").then((m) => ({
      default: m.smoothWeightedPlugin,
    })),
  "balancers/least-connections": () =>
    import("../plugins/balancers/mod.ts").then((m) => ({
      default: m.leastConnectionsPlugin,
    })),
  "balancers/p2c-ewma": () =>
    import("../plugins/balancers/mod.ts").then((m) => ({
      default: m.p2cEwmaPlugin,
    })),
  "balancers/consistent-hash": () =>
    import("../plugins/balancers/mod.ts").then((m) => ({
      default: m.consistentHashPlugin,
    })),
  "transports/kafka": () => import("../transports/kafka/mod.ts"),
  "transports/redis-streams": () =>
    import("../transports/redis-streams/mod.ts"),
  "transports/websocket-mesh": () =>
    import("../transports/websocket-mesh/mod.ts"),
};

/** Built-in names under a folder, e.g. `builtinNames("transports")`. */
export function builtinNames(folder: string): string[] {
  return Object.keys(BUILTINS)
    .filter((k) => k.startsWith(folder + "/"))
    .map((k) => k.slice(folder.length + 1));
}
