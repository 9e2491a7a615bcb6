/**
 * The vocabulary the parts of an agent connection share with the gateway:
 * its config block, what it counts, the `err` codes of request/reply and a
 * request from an agent as a backend handler sees it. `gateway/connection.ts`
 * re-exports all of it.
 *
 * @module
 */
import type { Envelope } from "../../core/envelope.ts";

export type { GatewayConfig } from "../config.ts";

/** `err` codes (docs/protocol.md). */
export type ErrorCode =
  | "forbidden"
  | "bad_request"
  | "unavailable"
  | "timeout"
  | "no_handler";

/** A request from an agent (`req` on `agent.{id}.{name}`) as a handler sees it. */
export interface AgentRequest {
  agentId: string;
  /** The agent's enrolled roles. */
  roles: readonly string[];
  /** The full channel, `agent.{id}.{name}`. */
  channel: string;
  /** The channel name after `agent.{id}.`. */
  name: string;
  /** The request body (parsed JSON). */
  payload: unknown;
  /** The envelope also published on the router. */
  envelope: Envelope;
}

/** What the gateway counts (prefix `plexus_gateway_`). */
export interface GatewayMetrics {
  handshake(outcome: "ok" | "refused", reason: string): void;
  message(direction: "in" | "out", bytes: number): void;
  refused(reason: string): void;
  closed(code: number): void;
  delivery(outcome: string): void;
  /** Sets (or, with undefined, drops) an agent's queue depth series. */
  queueDepth(agentId: string, depth: number | undefined): void;
}
