/**
 * The `consensus/pbft` plugin: provides `consensus:pbft`, a PBFT replica
 * (the deterministic core run by {@linkcode PbftDriver}) over Raft's
 * authenticated WebSocket links ({@linkcode startLinks}, at
 * `/plugins/pbft/link`) with a file-backed record log
 * ({@linkcode PbftFileLog}) under `DATA_DIR/pbft/`, and a replicated KV
 * served at `/api/v1/pbft/*` (claimed with `ctx.api`, so behind the node's
 * authentication, permission, rate-limit and audit chain).
 *
 * Membership is fixed by config: `members` lists every replica's id, base
 * URL and Ed25519 public key, in the same order on every node (the primary
 * of view v is member v mod n); n ≥ 4 tolerates f = ⌊(n − 1) / 3⌋ Byzantine
 * replicas. This node must be a member (`--node-id`), and its private key
 * (`privateKey`, else env `PLEXUS_PBFT_PRIVATE_KEY`: the base64url seed
 * `plexus keygen` prints) must match its listed public key.
 *
 * @module
 */
import { join } from "node:path";
import { z } from "zod";
import type { Consensus, Member } from "../../core/consensus.ts";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import { isConsensusAnswer } from "../_shared/errors.ts";
import { addKvRoutes } from "../_shared/kv_routes.ts";
import { startLinks } from "../raft/links.ts";
import { createPbftAuth, decodeKey32 } from "./auth.ts";
import { PbftDriver, type SubmitResult } from "./driver.ts";
import { PbftFileLog } from "./file_log.ts";
import { parsePbftKvOp, type PbftKvOp } from "./kv_state.ts";
import type { PbftMessage } from "./types.ts";
import type { PbftStatus } from "./core.ts";

const ms = z.number().int().positive().max(3_600_000);

/**
 * Schema of the plugin's config.
 *
 * @example Usage
 * ```ts
 * import { pbftConfig } from "./plugin.ts";
 * const key = "A".repeat(43);
 * const members = ["a", "b", "c", "d"].map((id, i) => ({ id, url: `http://127.0.0.1:${8086 + i}`, publicKey: key }));
 * pbftConfig.parse({ members }).checkpointInterval; // 1024
 * ```
 */
export const pbftConfig = z.strictObject({
  /** Every replica, in the same order on every node. */
  members: z.array(z.strictObject({
    id: z.string().min(1),
    url: z.url({ protocol: /^https?$/ }),
    publicKey: z.string().regex(
      /^[A-Za-z0-9_-]{43}$/,
      "must be the base64url Ed25519 public key 'plexus keygen' prints",
    ),
  })).min(4, "PBFT needs at least 4 replicas (3f + 1 with f = 1)")
    .refine((ms) => new Set(ms.map((m) => m.id)).size === ms.length, {
      message: "member ids must be distinct",
    }),
  /** This replica's Ed25519 private key (base64url seed); else env PLEXUS_PBFT_PRIVATE_KEY. */
  privateKey: z.string().optional(),
  /** Link handshake secret (else PLEXUS_MESH_SECRET); messages are also MACed per link pair. */
  secret: z.string().min(16, "use at least 16 characters").optional(),
  tickMs: ms.default(50),
  /** Milliseconds a request may wait before the replicas move to the next view (doubles per failed view change, up to 8x). */
  viewChangeMs: ms.default(2000),
  /** A checkpoint every this many requests (K); also every window / 2 sequence numbers. */
  checkpointInterval: z.number().int().min(1).max(1_000_000).default(1024),
  /** Sequence numbers (batches) accepted above the stable checkpoint (L). */
  window: z.number().int().min(2).max(100_000).default(512),
  maxBatch: z.number().int().min(1).max(10_000).default(64),
  maxInflight: z.number().int().min(1).max(1000).default(4),
  requestTimeoutMs: ms.default(5000),
  /** TEST ONLY: this replica equivocates as primary, then goes silent after this many ms. */
  unsafeByzantineSilentAfterMs: ms.optional(),
});

/** Config of the plugin after defaults. */
export type PbftConfig = z.infer<typeof pbftConfig>;

/** What `kernel.get("consensus:pbft")` returns. */
export interface PbftConsensus extends Consensus {
  /** Orders a KV operation (reads too); resolves on f + 1 matching results. */
  submit(op: PbftKvOp): Promise<SubmitResult>;
  /** The core's status. */
  status(): PbftStatus & { waiting: number };
}

/**
 * The pbft plugin (`builtin:consensus/pbft`, `--consensus pbft`).
 *
 * @example Config of a four-replica cluster (each node its own privateKey)
 * ```ts ignore
 * { "pluginConfig": { "pbft": {
 *   "members": [
 *     { "id": "a", "url": "http://10.0.0.1:8086", "publicKey": "…" },
 *     { "id": "b", "url": "http://10.0.0.2:8086", "publicKey": "…" },
 *     { "id": "c", "url": "http://10.0.0.3:8086", "publicKey": "…" },
 *     { "id": "d", "url": "http://10.0.0.4:8086", "publicKey": "…" }
 *   ] } } }
 * ```
 */
const pbft: Plugin<PbftConfig> = definePlugin({
  manifest: {
    name: "pbft",
    version: "1.0.0",
    kind: "consensus",
    api: "^1",
    provides: ["consensus:pbft"],
    config: pbftConfig,
    permissions: {
      net: true,
      read: true,
      write: true,
      env: ["PLEXUS_MESH_SECRET", "PLEXUS_PBFT_PRIVATE_KEY"],
    },
  },
  async setup(ctx) {
    const c = ctx.config;
    const me = ctx.node.id;
    const ids = c.members.map((m) => m.id);
    if (!ids.includes(me)) {
      throw new Error(
        `pbft: this node '${me}' is not in members [${ids}]: start it with --node-id set to one of them`,
      );
    }
    const secret = c.secret ?? Deno.env.get("PLEXUS_MESH_SECRET");
    if (!secret || secret.length < 16) {
      throw new Error(
        "pbft needs a link secret of at least 16 characters: set pluginConfig.pbft.secret or PLEXUS_MESH_SECRET",
      );
    }
    const keyText = c.privateKey ?? Deno.env.get("PLEXUS_PBFT_PRIVATE_KEY");
    if (!keyText) {
      throw new Error(
        "pbft needs this replica's Ed25519 private key: set pluginConfig.pbft.privateKey or PLEXUS_PBFT_PRIVATE_KEY (the privateKey 'plexus keygen' prints)",
      );
    }
    const auth = createPbftAuth({
      id: me,
      privateKey: decodeKey32(keyText, "pbft privateKey"),
      publicKeys: new Map(
        c.members.map((
          m,
        ) => [
          m.id,
          decodeKey32(m.publicKey, `public key of member '${m.id}'`),
        ]),
      ),
    });
    const log = await PbftFileLog.open(join(ctx.node.dataDir, "pbft"));
    if (log.truncatedBytes > 0) {
      ctx.log.warn("pbft log had a torn last record; cut it off", {
        truncatedBytes: log.truncatedBytes,
      });
    }
    let driver: PbftDriver | undefined = undefined;
    const links = startLinks<PbftMessage>({
      id: me,
      address: () => ctx.node.address,
      secret,
      peers: c.members.filter((m) => m.id !== me).map((m) => m.url),
      path: "/plugins/pbft/link",
      onMessages: (_from, msgs) => driver?.receive(msgs),
    });
    ctx.http.get("/link", (h) => links.handleUpgrade(h.req.raw));
    if (c.unsafeByzantineSilentAfterMs !== undefined) {
      ctx.log.warn(
        "pbft: TEST-ONLY Byzantine build: this replica equivocates as primary, then goes silent",
        { silentAfterMs: c.unsafeByzantineSilentAfterMs },
      );
    }
    const d: PbftDriver = new PbftDriver({
      id: me,
      replicas: ids,
      auth,
      storage: log,
      send: (to, msgs) => links.send(to, msgs),
      tickMs: c.tickMs,
      viewChangeTicks: Math.max(2, Math.ceil(c.viewChangeMs / c.tickMs)),
      checkpointInterval: c.checkpointInterval,
      window: c.window,
      maxBatch: c.maxBatch,
      maxInflight: c.maxInflight,
      requestTimeoutMs: c.requestTimeoutMs,
      byzantine: c.unsafeByzantineSilentAfterMs === undefined ? undefined : {
        silentAfterMs: c.unsafeByzantineSilentAfterMs,
        onMisbehave: (what) =>
          ctx.log.warn(`pbft: TEST-ONLY Byzantine: ${what}`),
      },
      onFatal: (err) =>
        ctx.log.error("pbft storage failed; this replica stopped", {
          error: err,
        }),
    });
    driver = d;
    d.onLeaderChange((ch) =>
      ctx.log.info("pbft view changed", {
        view: ch.epoch,
        primary: ch.leader,
        self: ch.leader === me,
      })
    );
    d.start();
    ctx.log.info("pbft started", {
      replicas: ids,
      f: d.node.f,
      view: d.node.view,
      records: log.records().length,
    });

    // Reads too go through consensus (f + 1 matching answers).
    const submit = async (op: unknown) => {
      const r = await d.submit(parsePbftKvOp(op));
      return { ...r.result, view: r.view, matching: r.matching };
    };
    const routes = ctx.api("pbft");
    // stateDigest: the KV state's SHA-256, equal on replicas that executed as far.
    routes.get("/status", "cluster:read", (h) =>
      h.json({
        ...d.status(),
        executedSeq: d.executed,
        stateDigest: auth.digest(d.state.serialize()),
        address: ctx.node.address,
        peers: links.peers(),
      }));
    addKvRoutes(routes, {
      read: (key) => submit({ op: "read", key }),
      write: submit,
      isAnswer: isConsensusAnswer,
    });

    const api: PbftConsensus = {
      name: "pbft",
      leader: () => d.leader(),
      isLeader: () => d.isLeader(),
      epoch: () => d.node.view,
      onLeaderChange: (fn) => d.onLeaderChange(fn),
      members: () => {
        const now = Date.now();
        const peers = new Map(links.peers().map((p) => [p.id, p]));
        return Promise.resolve(c.members.map((m): Member => {
          if (m.id === me) {
            return {
              id: m.id,
              address: ctx.node.address,
              status: "up",
              lastSeen: now,
            };
          }
          const up = peers.get(m.id)?.connected ?? false;
          return {
            id: m.id,
            address: m.url,
            status: up ? "up" : "down",
            lastSeen: up ? now : 0,
          };
        }));
      },
      submit: (op) => d.submit(op),
      status: () => d.status(),
    };
    return {
      api,
      health: () => {
        const s = d.status();
        return Promise.resolve({
          status: s.changing ? "down" as const : "up" as const,
          detail: `view ${s.view}, primary ${s.primary}${
            s.changing ? " (view change under way)" : ""
          }, executed ${s.executed}, stable checkpoint ${s.stable}`,
        });
      },
      stop: () => {
        d.stop();
        links.close();
        return Promise.resolve();
      },
    };
  },
});

export default pbft;
