/**
 * The agent gateway as a plugin (`builtin:gateway`, loaded unless the node
 * runs with `--no-gateway`): agents connect over `WS /ws/agent`, operators
 * manage them under `/api/v1/agents`, other nodes reach this one's agents
 * through `/api/v1/gateway/*` (signed node-to-node calls), and capability
 * tasks (`{capability}` submissions) run on the agents offering them.
 * Plugins use it as the `gateway:agents` capability. Settings are
 * `pluginConfig.gateway` (see {@linkcode gatewayConfigSchema} and
 * docs/gateway.md).
 *
 * @example A plugin that sends to agents
 * ```ts ignore
 * const agents = ctx.kernel.get("gateway:agents"); // typed AgentGateway
 * await agents.send(agentId, "policies", { v: 2 });
 * ```
 *
 * @module
 */
import { definePlugin, type KernelHandle } from "../core/plugin.ts";
import { VERSION } from "../core/version.ts";
import { gatewayConfigSchema } from "./config.ts";
import { type AgentGateway, createGateway, type Gateway } from "./gateway.ts";
import { serveSealingKeys } from "./sealing.ts";
import { kvSealingDirectory } from "../core/security/sealing_keys.ts";
import { agentRoutes } from "./agents.ts";
import type { NodeEvents } from "../core/events.ts";

export { type GatewayConfig, gatewayConfigSchema } from "./config.ts";
export type { AgentGateway, Gateway } from "./gateway.ts";

declare module "../core/plugin.ts" {
  interface Capabilities {
    /** The agent gateway: send to, ask and list agents (gateway/mod.ts). */
    "gateway:agents": AgentGateway;
  }
}

// By the capability's value: the kernel a test or embedder holds and the
// handle the plugin's setup got are different objects, but both return it.
const running = new WeakMap<AgentGateway, Gateway>();

/**
 * The whole gateway started on `kernel` (connection counts, local kicks),
 * for embedders and tests; plugins use the `gateway:agents` capability.
 * Throws when the gateway plugin is not running there.
 */
export function localGateway(kernel: KernelHandle): Gateway {
  const gateway = kernel.has("gateway:agents")
    ? running.get(kernel.get("gateway:agents"))
    : undefined;
  if (!gateway) throw new Error("the gateway plugin is not running here");
  return gateway;
}

/** The gateway plugin. */
const gatewayPlugin = definePlugin({
  manifest: {
    name: "gateway",
    version: VERSION,
    kind: "extension",
    api: "^1",
    provides: ["gateway:agents"],
    requires: ["tasks:local"],
    config: gatewayConfigSchema,
  },
  setup(ctx) {
    const gateway = createGateway({
      kv: ctx.kernel.get("state:kv"),
      node: ctx.node,
      nodeKey: ctx.kernel.get("node:key"),
      router: ctx.router,
      metrics: ctx.metrics,
      log: ctx.log,
      config: ctx.config,
      nodeFetch: ctx.nodeFetch,
      events: ctx.kernel.has("events:local")
        ? ctx.kernel.get<NodeEvents>("events:local")
        : undefined,
    });
    agentRoutes(ctx.api("agents"), ctx.api("gateway"), gateway);
    // Agents publish their sealing keys and read senders' over their session.
    const offSealing = serveSealingKeys(
      gateway.api,
      kvSealingDirectory(ctx.kernel.get("state:kv")),
      { metrics: ctx.metrics, log: ctx.log },
    );
    ctx.websocket("agent", (req) => gateway.accept(req));
    const withdraw = ctx.kernel.get("tasks:local").provideCapabilities({
      capabilities: () => gateway.api.capabilities(),
      run: (id, task, { timeoutMs }) =>
        gateway.api.request(id, `tasks.${task.capability}`, {
          id: task.id,
          type: task.type,
          payload: task.payload,
          attempt: task.attempt,
        }, { timeoutMs }),
    });
    running.set(gateway.api, gateway);
    const close = async () => {
      withdraw();
      offSealing();
      await gateway.stop();
    };
    return Promise.resolve({
      api: gateway.api,
      // Agents go first (1001), so their un-acked messages are back in
      // their queues while KV is still open and requests still drain.
      drain: close,
      stop: async () => {
        await close();
        running.delete(gateway.api);
      },
    });
  },
});

export default gatewayPlugin;
