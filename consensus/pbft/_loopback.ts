/**
 * In-process PBFT replicas over real loopback WebSocket links (Raft's
 * {@linkcode startLinks}), each with its own Ed25519 key and fsync'd file
 * log, for benchmarks and driver tests.
 *
 * @module
 */
import { join } from "node:path";
import { ed25519 } from "@noble/curves/ed25519.js";
import { type RaftLinks, startLinks } from "../raft/links.ts";
import { createPbftAuth } from "./auth.ts";
import { PbftDriver, type PbftDriverOptions } from "./driver.ts";
import { PbftFileLog } from "./file_log.ts";
import type { PbftMessage } from "./types.ts";

/** Options of {@linkcode startPbftLoopback}. */
export interface PbftLoopbackOptions {
  /** Folder for the replicas' logs. */
  dir: string;
  /** fdatasync each Ready. @default {true} */
  sync?: boolean;
  /** Passed to every driver. */
  driver?: Partial<PbftDriverOptions>;
}

/** One replica. */
export interface PbftLoopbackNode {
  id: string;
  url: string;
  port: number;
  driver?: PbftDriver;
  links?: RaftLinks<PbftMessage>;
  server?: Deno.HttpServer<Deno.NetAddr>;
}

/** A running in-process cluster. */
export interface PbftLoopback {
  nodes: PbftLoopbackNode[];
  /** Starts replica `i` (again) from its log. */
  start(i: number): Promise<void>;
  /** Drops replica `i` at once (its log stays). */
  kill(i: number): Promise<void>;
  /** Index of the primary a quorum of live replicas is in an active view under, or -1. */
  primary(): number;
  close(): Promise<void>;
}

const SECRET = "loopback-pbft-secret";

/**
 * Starts `n` replicas on free loopback ports and waits until every link is up.
 *
 * @example Usage
 * ```ts ignore
 * const c = await startPbftLoopback(4, { dir });
 * await c.nodes[1].driver!.submit({ op: "write", key: "x", value: "1" });
 * await c.close();
 * ```
 */
export async function startPbftLoopback(
  n: number,
  options: PbftLoopbackOptions,
): Promise<PbftLoopback> {
  const listeners = Array.from(
    { length: n },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const nodes: PbftLoopbackNode[] = listeners.map((l, i) => {
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    return { id: `p${i + 1}`, port, url: `http://127.0.0.1:${port}` };
  });
  const ids = nodes.map((x) => x.id);
  const keys = new Map(ids.map((id) => [id, ed25519.utils.randomSecretKey()]));
  const publicKeys = new Map(
    ids.map((id) => [id, ed25519.getPublicKey(keys.get(id)!)]),
  );

  const start = async (i: number) => {
    const node = nodes[i];
    const storage = await PbftFileLog.open(join(options.dir, node.id), {
      sync: options.sync ?? true,
    });
    const links = startLinks<PbftMessage>({
      id: node.id,
      address: node.url,
      secret: SECRET,
      peers: nodes.filter((x) => x !== node).map((x) => x.url),
      path: "/plugins/pbft/link",
      reconnectMs: 50,
      onMessages: (_from, ms) => driver.receive(ms),
    });
    const driver: PbftDriver = new PbftDriver({
      id: node.id,
      replicas: ids,
      auth: createPbftAuth({
        id: node.id,
        privateKey: keys.get(node.id)!,
        publicKeys,
      }),
      storage,
      send: (to, ms) => links.send(to, ms),
      tickMs: 10,
      viewChangeTicks: 20,
      ...options.driver,
    });
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
  const linked = () =>
    nodes.every((x) =>
      (x.links?.peers().filter((p) => p.connected).length ?? 0) === n - 1
    );
  const t0 = performance.now();
  while (!linked()) {
    if (performance.now() - t0 > 20_000) {
      throw new Error("pbft loopback: links did not come up in 20 s");
    }
    await new Promise((r) => setTimeout(r, 10));
  }
  return {
    nodes,
    start,
    kill,
    primary() {
      const votes = new Map<string, number>();
      for (const x of nodes) {
        const l = x.driver?.leader();
        if (l) {
          votes.set(
            `${l}@${x.driver!.node.view}`,
            (votes.get(`${l}@${x.driver!.node.view}`) ?? 0) + 1,
          );
        }
      }
      for (const [k, v] of votes) {
        if (v >= 2 * Math.floor((n - 1) / 3) + 1) {
          return ids.indexOf(k.split("@")[0]);
        }
      }
      return -1;
    },
    async close() {
      for (let i = 0; i < n; i++) await kill(i);
    },
  };
}
