/**
 * Real-process PBFT clusters for the tests in this folder: N `main.ts serve
 * --consensus pbft` replicas on loopback, each with its own data dir, fixed
 * port, Ed25519 key (the member list with every public key in each node's
 * config), one link secret, and short timeouts (the process handling is
 * {@linkcode ConsensusCluster}'s, shared with the Raft tests). A replica can
 * be started as the test-only Byzantine build (equivocates as primary, then
 * goes silent).
 *
 * @module
 */
import { ed25519 } from "@noble/curves/ed25519.js";
import {
  type ClusterNode,
  clusterNodes,
  ConsensusCluster,
} from "../integration/_consensus_cluster.ts";
import type { PlexusProcess } from "../integration/_process.ts";

const b64url = (u: Uint8Array) =>
  btoa(String.fromCharCode(...u)).replaceAll("+", "-").replaceAll("/", "_")
    .replace(/=+$/, "");

/** One replica. */
export interface PbftProc extends ClusterNode {
  privateKey: string;
  publicKey: string;
}

/** What `GET /api/v1/pbft/status` answers. */
export interface PbftStatusBody {
  id: string;
  view: number;
  primary: string;
  changing: boolean;
  executed: number;
  executedSeq: number;
  stable: number;
  stateDigest: string;
}

/** A cluster of real processes. */
export class PbftCluster extends ConsensusCluster<PbftStatusBody, PbftProc> {
  private constructor(root: string, nodes: PbftProc[]) {
    super(root, nodes, "pbft");
  }

  /** Creates keys and folders and starts every replica; `byzantine` indexes run the Byzantine build. */
  static async start(
    n: number,
    byzantine: number[] = [],
  ): Promise<PbftCluster> {
    const { root, nodes } = await clusterNodes(n, "plexus-pbft-");
    const c = new PbftCluster(
      root,
      nodes.map((node) => {
        const key = ed25519.utils.randomSecretKey();
        return {
          ...node,
          privateKey: b64url(key),
          publicKey: b64url(ed25519.getPublicKey(key)),
        };
      }),
    );
    await Promise.all(nodes.map((_, i) => c.spawn(i, byzantine.includes(i))));
    return c;
  }

  /** Starts replica `i` (again) on its port and data dir; `byzantine` picks the test-only build. */
  spawn(i: number, byzantine = false): Promise<PlexusProcess> {
    return this.spawnNode(i, {
      pluginConfig: {
        pbft: {
          members: this.nodes.map((m) => ({
            id: m.id,
            url: m.url,
            publicKey: m.publicKey,
          })),
          privateKey: this.nodes[i].privateKey,
          tickMs: 20,
          viewChangeMs: 400,
          checkpointInterval: 8,
          requestTimeoutMs: 4000,
          ...(byzantine ? { unsafeByzantineSilentAfterMs: 1500 } : {}),
        },
      },
    });
  }
}
