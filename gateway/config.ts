/**
 * The gateway plugin's config (`pluginConfig.gateway` in the node's config
 * file), with its defaults; see docs/gateway.md.
 *
 * @module
 */
import { z } from "zod";
import { channelsSchema, DEFAULT_CHANNELS } from "./policy.ts";

/** The schema of `pluginConfig.gateway`. */
export const gatewayConfigSchema = z.strictObject({
  /** An agent must finish the handshake this soon after opening (else 4408). */
  handshakeTimeoutMs: z.number().int().min(100).max(60_000).default(5000),
  /** Largest message body either way; a bigger frame is closed with 1009 before decryption. */
  maxMessageBytes: z.number().int().min(1024).max(64 << 20).default(1 << 20),
  /** The node pings every agent this often; two intervals without a word close the socket (4002). */
  heartbeatMs: z.number().int().min(100).max(600_000).default(30_000),
  /** A session ends this long after the agent last proved its key (4001); resuming does not extend it. */
  maxSessionAgeMs: z.number().int().min(1000).max(30 * 86_400_000)
    .default(86_400_000),
  /** Lifetime of a resumption token (never past the session's end). */
  resumeTtlMs: z.number().int().min(1000).max(30 * 86_400_000).default(
    86_400_000,
  ),
  /** Unsent bytes a connection may hold for 100 ms before it is closed as a slow consumer (4008). */
  sendBufferBytes: z.number().int().min(1024).max(1 << 30).default(1 << 20),
  /** A pushed message not acked this soon goes back to the queue (retried later). */
  ackTimeoutMs: z.number().int().min(50).max(3_600_000).default(30_000),
  /** Default time-to-live of a queued message; expired ones go to the dead-letter queue. */
  messageTtlMs: z.number().int().min(1000).max(30 * 86_400_000).default(
    3_600_000,
  ),
  /** Deliveries of a queued message before it is dead-lettered. */
  maxAttempts: z.number().int().min(1).max(100).default(3),
  /** Pushed, un-acked messages per connection. */
  maxInFlight: z.number().int().min(1).max(10_000).default(64),
  /** How long a backend request handler may take before the agent gets `err` `timeout`. */
  requestTimeoutMs: z.number().int().min(10).max(600_000).default(30_000),
  /** Fallback poll of a connected agent's queues (sends normally wake it at once). */
  pollMs: z.number().int().min(50).max(600_000).default(5000),
  /** Channel permissions by name; replaces the built-in set when given. */
  channels: channelsSchema.default({ ...DEFAULT_CHANNELS }),
});

/** The validated gateway config. */
export type GatewayConfig = z.output<typeof gatewayConfigSchema>;
