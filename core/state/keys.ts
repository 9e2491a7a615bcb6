/**
 * Every Deno KV key layout Plexus uses lives here, so the keyspace can be
 * read in one place. Later modules add their prefixes to this file.
 *
 * @module
 */

/** Root prefix for plugin-private keyspaces: `["plugins", name, ...]`. */
export const PLUGINS_PREFIX = "plugins";
/** Kernel bookkeeping: `["kernel", ...]`. */
export const KERNEL_PREFIX = "kernel";

/** The prefix of plugin `name`'s private keyspace. */
export function pluginPrefix(name: string): Deno.KvKey {
  return [PLUGINS_PREFIX, name];
}

/** Key the health check reads to prove KV answers. */
export const HEALTH_PROBE_KEY: Deno.KvKey = [KERNEL_PREFIX, "health-probe"];
