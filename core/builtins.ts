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
  "examples/hello": () => import("../plugins/examples/hello.ts"),
  "consensus/kv-lease": () => import("../consensus/kv-lease/mod.ts"),
  "consensus/raft": () => import("../consensus/raft/plugin.ts"),
  "consensus/gossip": () => import("../consensus/gossip/plugin.ts"),
  "balancers/round-robin": () => import("../plugins/balancers/round_robin.ts"),
  "balancers/random": () => import("../plugins/balancers/random.ts"),
  "balancers/smooth-weighted": () =>
    import("../plugins/balancers/smooth_weighted.ts"),
  "balancers/least-connections": () =>
    import("../plugins/balancers/least_connections.ts"),
  "balancers/p2c-ewma": () => import("../plugins/balancers/p2c_ewma.ts"),
  "balancers/consistent-hash": () =>
    import("../plugins/balancers/consistent_hash.ts"),
  "transports/kafka": () => import("../transports/kafka/mod.ts"),
  "transports/redis-streams": () =>
    import("../transports/redis-streams/mod.ts"),
  "transports/websocket-mesh": () =>
    import("../transports/websocket/mesh_plugin.ts"),
};

/** Built-in names under a folder, e.g. `builtinNames("transports")`. */
export function builtinNames(folder: string): string[] {
  return Object.keys(BUILTINS)
    .filter((k) => k.startsWith(folder + "/"))
    .map((k) => k.slice(folder.length + 1));
}
