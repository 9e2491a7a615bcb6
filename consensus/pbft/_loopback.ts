/**
 * In-process PBFT replicas over real loopback WebSocket links
 * ({@linkcode startLinkedNodes} of `consensus/_shared/loopback.ts`, which
 * Raft's loopback cluster uses too), each with its own Ed25519 key and
 * fsync'd file log, for benchmarks and driver tests.
 *
 * @module
 */
import { join } from "node:path";
import { ed25519 } from "@noble/curves/ed25519.js";
import { type LinkedNode, startLinkedNodes } from "../_shared/loopback.ts";
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
export type PbftLoopbackNode = LinkedNode<PbftDriver, PbftMessage>;

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
  const ids = Array.from({ length: n }, (_, i) => `p${i + 1}`);
  const keys = new Map(ids.map((id) => [id, ed25519.utils.randomSecretKey()]));
  const publicKeys = new Map(
    ids.map((id) => [id, ed25519.getPublicKey(keys.get(id)!)]),
  );
  const c = await startLinkedNodes<PbftDriver, PbftMessage>(n, {
    idPrefix: "p",
    secret: SECRET,
    path: "/plugins/pbft/link",
    waitLinked: true,
    driver: async (node, replicas, links) =>
      new PbftDriver({
        id: node.id,
        replicas,
        auth: createPbftAuth({
          id: node.id,
          privateKey: keys.get(node.id)!,
          publicKeys,
        }),
        storage: await PbftFileLog.open(join(options.dir, node.id), {
          sync: options.sync ?? true,
        }),
        send: (to, ms) => links.send(to, ms),
        tickMs: 10,
        viewChangeTicks: 20,
        ...options.driver,
      }),
  });
  const { nodes } = c;
  return {
    nodes,
    start: c.start,
    kill: c.kill,
    primary() {
      const votes = new Map<string, number>();
      for (const x of nodes) {
        const l = x.driver?.leader();
        if (l) {
          const k = `${l}@${x.driver!.node.view}`;
          votes.set(k, (votes.get(k) ?? 0) + 1);
        }
      }
      for (const [k, v] of votes) {
        if (v >= 2 * Math.floor((n - 1) / 3) + 1) {
          return ids.indexOf(k.split("@")[0]);
        }
      }
      return -1;
    },
    close: c.close,
  };
}
