/**
 * Which other nodes have agents for which capabilities: every node's prompt
 * service writes `["nodes", nodeId] = {address, capabilities, at}` into the
 * plugin's KV keyspace every `intervalMs` (nodes sharing the KV see each
 * other), and reads the others' when no agent here offers a capability.
 * A record older than three intervals is a node gone.
 *
 * @example Usage
 * ```ts
 * import { createPromptCluster } from "./cluster.ts";
 * using kv = await Deno.openKv(":memory:");
 * const a = createPromptCluster(kv, { id: "a", address: "http://a" }, () => ["prompt"]);
 * const b = createPromptCluster(kv, { id: "b", address: "http://b" }, () => []);
 * await a.advertise();
 * (await b.nodesFor("prompt")).map((n) => n.id); // ["a"]
 * ```
 *
 * @module
 */

/** Another node of the cluster. */
export interface PromptNode {
  id: string;
  /** Its HTTP base URL. */
  address: string;
}

/** The advertisement. */
export interface PromptCluster {
  /** Writes this node's record now. */
  advertise(): Promise<void>;
  /** Other live nodes with an agent offering `capability`. */
  nodesFor(capability: string): Promise<PromptNode[]>;
  /** Starts writing every `intervalMs`. */
  start(): void;
  /** Stops and removes this node's record. */
  stop(): Promise<void>;
}

/** The KV calls the advertisement needs (a plugin's scoped `ctx.kv`). */
export interface ClusterKv {
  set(
    key: Deno.KvKey,
    value: unknown,
    options?: { expireIn?: number },
  ): Promise<unknown>;
  delete(key: Deno.KvKey): Promise<void>;
  list<T>(selector: { prefix: Deno.KvKey }): AsyncIterable<Deno.KvEntry<T>>;
}

interface NodeAd {
  address: string;
  capabilities: string[];
  at: number;
}

/** Creates the advertisement of node `self`, whose local capabilities `capabilities` lists. */
export function createPromptCluster(
  kv: ClusterKv,
  self: PromptNode,
  capabilities: () => string[],
  options: { intervalMs?: number; now?: () => number } = {},
): PromptCluster {
  const intervalMs = options.intervalMs ?? 2000;
  const now = options.now ?? Date.now;
  let timer: ReturnType<typeof setInterval> | undefined;
  /** The last read of every record, reused for a quarter interval. */
  let read: { at: number; ads: [string, NodeAd][] } | undefined;
  const advertise = async () => {
    await kv.set(
      ["nodes", self.id],
      {
        address: self.address,
        capabilities: capabilities(),
        at: now(),
      } satisfies NodeAd,
      { expireIn: intervalMs * 10 },
    );
  };
  return {
    advertise,
    async nodesFor(capability) {
      const load = async () => {
        const ads: [string, NodeAd][] = [];
        for await (const e of kv.list<NodeAd>({ prefix: ["nodes"] })) {
          ads.push([String(e.key[1]), e.value]);
        }
        return read = { at: now(), ads };
      };
      const pick = (r: NonNullable<typeof read>) => {
        const fresh = now() - intervalMs * 3;
        return r.ads
          .filter(([id, ad]) =>
            id !== self.id && ad.at >= fresh &&
            ad.capabilities.includes(capability)
          )
          .map(([id, ad]) => ({ id, address: ad.address }));
      };
      const cached = read && now() - read.at <= intervalMs / 4
        ? read
        : undefined;
      const found = pick(cached ?? await load());
      // A miss on a cached read reads again: the advertisement may be new.
      return found.length === 0 && cached ? pick(await load()) : found;
    },
    start() {
      const tick = () =>
        advertise().catch(() => {/* the next tick tries again */});
      tick();
      timer = setInterval(tick, intervalMs);
    },
    async stop() {
      clearInterval(timer);
      await kv.delete(["nodes", self.id]).catch(() => {});
    },
  };
}
