/**
 * The node + SDK agent setup the sealed agent tests share: agents enrolled
 * on a node without the rule (into the KV file), then the node under test
 * started on the same KV with a rule sealing `pattern` to the first agent
 * (and any other recipients) and the gateway channels the agent path needs;
 * and an SDK agent connected and subscribed to its sealed messages.
 */
import type { SealingPolicy } from "../../core/security/sealed_transport.ts";
import type { SealedError } from "../../core/security/sealed_transport.ts";
import { DEFAULT_CHANNELS } from "../../gateway/policy.ts";
import type { AgentMessage } from "../../sdk/client.ts";
import type { AgentKey } from "../../sdk/mod.ts";
import { type SealedMessage, subscribeSealed } from "../../sdk/sealed.ts";
import { startTestNode, type TestNode } from "../gateway/_node.ts";
import { enrolledKey, sdkClient, seedOf } from "../gateway/_sdk_helpers.ts";

/** Options of {@linkcode startSealedAgentNode}. */
export interface SealedAgentNodeOptions {
  /** The transport plugin (`redis-streams`, `kafka`, `nats`, `rabbitmq`). */
  transport: string;
  /** Its `pluginConfig` entries. */
  pluginConfig: Record<string, unknown>;
  /** The sealed rule's topic pattern. */
  pattern: string;
  /** The topics the node's forwarder subscribes to. */
  topics: string[];
  /** Recipients besides the agent (`node:b`). @default {[]} */
  more?: string[];
  /** Agents enrolled besides the recipient (not in the rule). @default {0} */
  strangers?: number;
}

/** What {@linkcode startSealedAgentNode} started. */
export interface SealedAgentNode {
  node: TestNode;
  /** The recipient agent's key. */
  key: AgentKey;
  /** Enrolled agents that are not recipients. */
  strangers: AgentKey[];
  policy: SealingPolicy;
}

/**
 * Enrols the agents, then starts the node under test in `dir` with the
 * sealed rule (the caller shuts it down).
 *
 * @example Usage
 * ```ts ignore
 * const { node, key } = await startSealedAgentNode(dir, { transport: "kafka", ... });
 * ```
 */
export async function startSealedAgentNode(
  dir: string,
  options: SealedAgentNodeOptions,
): Promise<SealedAgentNode> {
  const first = await startTestNode({ dir, name: "a" });
  let key: AgentKey;
  const strangers: AgentKey[] = [];
  try {
    key = await enrolledKey(first);
    for (let i = 0; i < (options.strangers ?? 0); i++) {
      strangers.push(await enrolledKey(first));
    }
  } finally {
    await first.shutdown();
  }
  const policy: SealingPolicy = {
    topics: [{
      pattern: options.pattern,
      recipients: [`agent:${key.id}`, ...options.more ?? []],
      deliver: { channel: "sealed", topics: options.topics },
    }],
  };
  const node = await startTestNode({
    dir,
    name: "a",
    config: { transport: options.transport, sealed: policy },
    pluginConfig: options.pluginConfig,
    gateway: {
      channels: {
        ...DEFAULT_CHANNELS,
        sealed: { subscribe: ["agent"], durable: true },
        "sealing-keys": { publish: ["agent"] },
      },
      ackTimeoutMs: 5000,
    },
  });
  return { node, key, strangers, policy };
}

/** An SDK agent subscribed to its sealed messages. */
export interface SealedAgent {
  agent: ReturnType<typeof sdkClient>;
  /** Its directory id (`agent:ID`). */
  id: string;
  /** Its X25519 public key, as published. */
  x25519: Uint8Array;
  opened: SealedMessage[];
  refused: { error: SealedError; message: AgentMessage }[];
}

/**
 * Connects the agent of `key` to `node` and subscribes it to its sealed
 * messages (`now` is its clock for the replay window); the caller closes
 * `agent`.
 *
 * @example Usage
 * ```ts ignore
 * const { agent, opened } = await connectSealedAgent(node, key);
 * ```
 */
export async function connectSealedAgent(
  node: TestNode,
  key: AgentKey,
  now?: () => number,
): Promise<SealedAgent> {
  const agent = sdkClient(node.ws, key);
  const opened: SealedMessage[] = [];
  const refused: SealedAgent["refused"] = [];
  try {
    await agent.connect();
    const sub = await subscribeSealed(agent, {
      seed: seedOf(key),
      handler: (m) => void opened.push(m),
      onRefused: (error, message) => void refused.push({ error, message }),
      ...(now ? { now } : {}),
    });
    return { agent, id: sub.id, x25519: sub.x25519, opened, refused };
  } catch (err) {
    await agent.close();
    throw err;
  }
}
