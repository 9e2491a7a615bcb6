/**
 * The `transports/websocket-mesh` plugin: provides
 * `transport:websocket-mesh`, a {@linkcode MeshTransport} whose links are
 * WebSockets on the node's own port at `/plugins/websocket-mesh/link`.
 *
 * Config (under `pluginConfig["websocket-mesh"]`): `secret` (required; or
 * env `PLEXUS_MESH_SECRET`), `peers` (other nodes' base URLs, e.g.
 * `http://10.0.0.2:8086`; default the node's `--peers`), `maxMessageBytes`, `retryBaseMs`, `retryMaxMs`,
 * `reconnectMs`, `handshakeTimeoutMs`.
 *
 * @module
 */
import { z } from "zod";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import { tracedTransport } from "../../core/observe/otel.ts";
import { type MeshTransport, startMesh } from "./mesh.ts";

const ms = z.number().int().positive().max(3_600_000);

/** Schema of the plugin's config. */
export const meshConfig = z.strictObject({
  secret: z.string().min(16, "use at least 16 characters").optional(),
  peers: z.array(z.url({ protocol: /^(https?|wss?)$/ })).optional(),
  maxMessageBytes: z.number().int().positive().max(64 * 1024 * 1024).default(
    1024 * 1024,
  ),
  retryBaseMs: ms.default(1000),
  retryMaxMs: ms.default(60_000),
  reconnectMs: ms.default(500),
  handshakeTimeoutMs: ms.default(5000),
});

/** Config of the plugin after defaults. */
export type MeshConfig = z.infer<typeof meshConfig>;

/** A node's base URL → its mesh link URL. */
export function linkUrl(base: string): string {
  const u = new URL(base);
  u.protocol = u.protocol === "https:" || u.protocol === "wss:"
    ? "wss:"
    : "ws:";
  u.pathname = "/plugins/websocket-mesh/link";
  return u.href;
}

/** The websocket-mesh plugin (`builtin:transports/websocket-mesh`). */
const websocketMesh: Plugin<MeshConfig> = definePlugin({
  manifest: {
    name: "websocket-mesh",
    version: "1.0.0",
    kind: "transport",
    api: "^1",
    provides: ["transport:websocket-mesh"],
    config: meshConfig,
    permissions: { net: true, env: ["PLEXUS_MESH_SECRET"] },
  },
  async setup(ctx) {
    const secret = ctx.config.secret ?? Deno.env.get("PLEXUS_MESH_SECRET");
    if (!secret || secret.length < 16) {
      throw new Error(
        'websocket-mesh needs a cluster secret of at least 16 characters: set pluginConfig["websocket-mesh"].secret or PLEXUS_MESH_SECRET',
      );
    }
    const peers = ctx.config.peers ?? ctx.node.peers ?? [];
    const mesh = await startMesh({
      ...ctx.config,
      secret,
      nodeId: ctx.node.id,
      listen: false,
      peers: peers.map(linkUrl),
      log: ctx.log,
      metrics: ctx.metrics,
    });
    ctx.http.get("/link", (c) => mesh.handleUpgrade(c.req.raw));
    ctx.log.info("websocket-mesh transport ready", {
      peers: peers.length,
    });
    return {
      // With OTel on: publish/deliver spans, traceparent in the headers.
      api: tracedTransport(mesh) satisfies MeshTransport,
      health() {
        const up = mesh.connectedPeers().length;
        const want = peers.length;
        return Promise.resolve({
          status: up >= want ? "up" : "down",
          detail: `${up} of ${want} configured peers linked`,
        });
      },
      stop: () => mesh.close(),
    };
  },
});

export default websocketMesh;
