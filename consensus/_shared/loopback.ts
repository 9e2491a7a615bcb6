/**
 * In-process consensus nodes over real loopback sockets, for benchmarks and
 * driver tests: what Raft's `_loopback.ts` and PBFT's `_loopback.ts` share.
 * Each node gets a free port, its own HTTP server for its link endpoint and
 * authenticated WebSocket links (Raft's {@linkcode startLinks}) to every
 * other; the caller makes the node's storage and driver. A "kill" drops a
 * node at once (no goodbye to its peers), like a crash; its files stay, so
 * {@linkcode LinkedNodes.start} brings it back from them.
 *
 * @module
 */
import { type LinkMessage, type RaftLinks, startLinks } from "../raft/links.ts";

/** What the helper needs of a driver. */
export interface LoopbackDriver<M> {
  receive(messages: M[]): void;
  start(): void;
  stop(): void;
}

/** One node. */
export interface LinkedNode<D, M extends LinkMessage> {
  id: string;
  url: string;
  port: number;
  driver?: D;
  links?: RaftLinks<M>;
  server?: Deno.HttpServer<Deno.NetAddr>;
}

/** Options of {@linkcode startLinkedNodes}. */
export interface LinkedNodesOptions<D, M extends LinkMessage> {
  /** Node `i` is `${idPrefix}${i + 1}`. */
  idPrefix: string;
  /** The links' handshake secret. */
  secret: string;
  /** The link endpoint's path. @default {Raft's} */
  path?: string;
  /** Wait (up to 20 s) until every node is linked to every other before returning. @default {false} */
  waitLinked?: boolean;
  /** Makes node `node`'s storage and driver (not started), sending over `links`. */
  driver(
    node: LinkedNode<D, M>,
    ids: string[],
    links: RaftLinks<M>,
  ): Promise<D>;
}

/** A running set of linked nodes. */
export interface LinkedNodes<D, M extends LinkMessage> {
  nodes: LinkedNode<D, M>[];
  ids: string[];
  /** Starts node `i` (again) from its files. */
  start(i: number): Promise<void>;
  /** Drops node `i` at once. */
  kill(i: number): Promise<void>;
  /** Drops every node. */
  close(): Promise<void>;
}

/**
 * Starts `n` linked nodes on free loopback ports.
 *
 * @example Usage
 * ```ts ignore
 * const c = await startLinkedNodes(3, {
 *   idPrefix: "n",
 *   secret: "loopback-secret",
 *   driver: async (node, ids, links) =>
 *     new RaftDriver({ id: node.id, voters: ids, storage: await FileStorage.open(dir + node.id), send: (to, ms) => links.send(to, ms) }),
 * });
 * await c.close();
 * ```
 */
export async function startLinkedNodes<
  D extends LoopbackDriver<M>,
  M extends LinkMessage,
>(n: number, o: LinkedNodesOptions<D, M>): Promise<LinkedNodes<D, M>> {
  const listeners = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const nodes: LinkedNode<D, M>[] = listeners.map((l, i) => {
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    return {
      id: `${o.idPrefix}${i + 1}`,
      port,
      url: `http://127.0.0.1:${port}`,
    };
  });
  const ids = nodes.map((x) => x.id);

  const start = async (i: number) => {
    const node = nodes[i];
    // The links deliver to the driver made next (nothing arrives before).
    const to: { driver?: D } = {};
    const links = startLinks<M>({
      id: node.id,
      address: node.url,
      secret: o.secret,
      peers: nodes.filter((x) => x !== node).map((x) => x.url),
      ...(o.path ? { path: o.path } : {}),
      reconnectMs: 50,
      onMessages: (_from, ms) => to.driver?.receive(ms),
    });
    const driver = to.driver = await o.driver(node, ids, links);
    node.server = Deno.serve(
      { hostname: "127.0.0.1", port: node.port, onListen: () => {} },
      (req) => links.handleUpgrade(req),
    );
    node.links = links;
    node.driver = driver;
    driver.start();
  };
  const kill = async (i: number) => {
    const node = nodes[i];
    node.driver?.stop();
    node.links?.close();
    await node.server?.shutdown();
    node.driver = node.links = node.server = undefined;
  };
  await Promise.all(nodes.map((_, i) => start(i)));
  if (o.waitLinked) {
    const linked = () =>
      nodes.every((x) =>
        (x.links?.peers().filter((p) => p.connected).length ?? 0) === n - 1
      );
    const t0 = performance.now();
    while (!linked()) {
      if (performance.now() - t0 > 20_000) {
        throw new Error(
          `loopback: the links of [${ids}] did not all come up in 20 s`,
        );
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  return {
    nodes,
    ids,
    start,
    kill,
    async close() {
      await Promise.all(nodes.map((_, i) => kill(i)));
    },
  };
}
