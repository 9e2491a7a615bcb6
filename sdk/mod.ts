/**
 * The agent side of the Plexus agent gateway (`docs/protocol.md`): the SDK
 * client, agent keys, and the protocol pieces an agent needs (channel names,
 * per-message signatures, versions, close codes).
 *
 * @example Connect, subscribe, publish
 * ```ts
 * import { AgentClient, generateAgentKey } from "./mod.ts";
 * import { startTestGateway } from "./_test_gateway.ts";
 * import assert from "node:assert/strict";
 *
 * // A real node: url "ws://127.0.0.1:8086/ws/agent" (or "http://127.0.0.1:8086"),
 * // after enrolling the key with POST /api/v1/agents.
 * await using gateway = await startTestGateway();
 * const key = await generateAgentKey();
 * gateway.enrol(key.id, key.publicKey);
 *
 * await using agent = new AgentClient({
 *   url: gateway.url,
 *   id: key.id,
 *   privateKey: Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" }),
 *   channels: { audit: { signed: true } },
 * });
 * agent.on("disconnected", (e) => console.error("disconnected", e.code, e.reason));
 * const commands = agent.subscribe("commands", async (m) => {
 *   await agent.publish("results", { for: m.id, ok: true });
 * });
 * await agent.connect();
 * await commands;
 * await agent.publish("audit", { action: "started" }, { priority: 7 });
 * gateway.send(key.id, "commands", { run: "inventory" });
 * const result = await gateway.waitFor((r) => r.header.ch.endsWith(".results"));
 * assert.equal((result.payload as { ok: boolean }).ok, true);
 * ```
 *
 * @module
 */
export {
  AgentClient,
  type AgentClientOptions,
  type AgentCloseInfo,
  type AgentEvents,
  agentGatewayUrl,
  type AgentLogger,
  type AgentMessage,
  type AgentState,
  type AgentStats,
  type ChannelOptions,
  connectAgent,
  DEFAULT_PRIORITY,
  type MessageHandler,
  type PublishOptions,
  type RequestHandler,
  type RequestOptions,
  type Subscription,
} from "./client.ts";
export { AgentError, type AgentErrorCode, CloseCode } from "./errors.ts";
export {
  type AgentKey,
  agentKeyFromSeed,
  generateAgentKey,
  parseAgentKey,
} from "./keys.ts";
export { backoffDelay, type BackoffOptions } from "./reconnect.ts";
export type { HpkeKeyPair } from "../core/security/hpke.ts";
export type { SealedRefusal } from "../core/security/sealed_transport.ts";
export {
  AGENT_SEALING_KEY_INFO,
  agentSealingKey,
  SealedError,
  type SealedMessage,
  type SealedSubscription,
  subscribeSealed,
  type SubscribeSealedOptions,
} from "./sealed.ts";
export {
  type PromptAnswer,
  type PromptHandler,
  type PromptHop,
  type PromptHopContext,
  servePrompts,
  type ServePromptsOptions,
} from "./prompt_agent.ts";
export {
  decodeHopProof,
  encodeHopProof,
  hopBatch,
  hopBatchBytes,
  type HopFields,
  hopLeaf,
  type HopProof,
  hopProofRoot,
  hopSignedBytes,
  SAGE_BATCH_CONTEXT,
  SAGE_BATCH_MAX,
  SAGE_CONTEXT,
  SAGE_LEAF_CONTEXT,
  sageDigest,
  signHop,
  verifyHop,
  verifyHopProof,
} from "./sage.ts";
export {
  AGENT_ID_RE,
  agentChannel,
  backendChannel,
  type Channel,
  CHANNEL_NAME_RE,
  isAgentId,
  MESSAGE_CONTEXT,
  messageSignedBytes,
  parseChannel,
  verifyMessageSignature,
} from "./protocol/channels.ts";
export {
  HandshakeError,
  type Hello,
  SUITE,
  SUITES,
  VERSIONS,
  type Welcome,
} from "./protocol/handshake.ts";
export {
  FLAG_SIGNED,
  type RecordHeader,
  type RekeyPolicy,
} from "./protocol/record.ts";
