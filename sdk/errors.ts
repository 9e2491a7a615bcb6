/**
 * Errors of the agent SDK: {@linkcode AgentError} with its
 * {@linkcode AgentErrorCode}s, and the gateway's WebSocket
 * {@linkcode CloseCode}s.
 *
 * @module
 */
import { parseBody } from "./_body.ts";

/** WebSocket close codes of the agent gateway (`docs/protocol.md`, "Close codes"). */
export const CloseCode = {
  /** Normal close (the agent's `close()`). */
  normal: 1000,
  /** Binary frame during the hello/welcome exchange, or text frame after it. */
  unsupportedData: 1003,
  /** A text frame that is not UTF-8. */
  invalidPayload: 1007,
  /** Frame over the size limit. */
  tooBig: 1009,
  /** Session expired. */
  sessionExpired: 4001,
  /** Slow consumer: the node's send buffer stayed over its limit. */
  slowConsumer: 4008,
  /** Protocol violation. */
  protocol: 4400,
  /** Authentication failed. */
  authFailed: 4401,
  /** Record refused (bad tag, replay, window, epoch, re-addressed header). */
  recordRefused: 4403,
  /** Handshake (or, closed by the agent, the heartbeat) timed out. */
  timeout: 4408,
  /** Replaced: the same agent connected again elsewhere. */
  replaced: 4409,
} as const;

/**
 * Error codes: those the node sends in `err` records, and the SDK's own
 * (`queue_full`, `closed`, `auth_failed`, `replaced`).
 */
export type AgentErrorCode =
  | "forbidden"
  | "bad_request"
  | "unavailable"
  | "timeout"
  | "no_handler"
  | "queue_full"
  | "closed"
  | "auth_failed"
  | "replaced";

/** The codes a node sends in `err` records (an agent may answer with them too). */
export const NODE_ERROR_CODES: ReadonlySet<string> = new Set([
  "forbidden",
  "bad_request",
  "unavailable",
  "timeout",
  "no_handler",
]);

/**
 * A failed publish, request or subscription, or the end of the client.
 * `code` is one of {@linkcode AgentErrorCode} or, from a newer node, another
 * code it sent.
 *
 * @example Usage
 * ```ts
 * import { AgentError } from "./errors.ts";
 * import assert from "node:assert/strict";
 * const err = new AgentError("forbidden", "not allowed to subscribe");
 * assert.equal(err.code, "forbidden");
 * assert.equal(err.retryable, false);
 * assert.equal(new AgentError("unavailable", "lost").retryable, true);
 * ```
 */
export class AgentError extends Error {
  /** Always `"AgentError"`. */
  override name = "AgentError";
  /** Why: see {@linkcode AgentErrorCode}. */
  readonly code: AgentErrorCode | (string & Record<never, never>);
  /** The WebSocket close code, when the error comes from a closed connection. */
  readonly closeCode?: number;

  /** An error with `code` and `message`; `options` adds a cause and a close code. */
  constructor(
    code: AgentErrorCode | (string & Record<never, never>),
    message: string,
    options: { cause?: unknown; closeCode?: number } = {},
  ) {
    super(message, { cause: options.cause });
    this.code = code;
    this.closeCode = options.closeCode;
  }

  /** Whether trying again later may succeed. */
  get retryable(): boolean {
    return ["unavailable", "timeout", "queue_full"].includes(this.code);
  }
}

/**
 * The {@linkcode AgentError} of an `err` record's body
 * (`{"code","message"}`; code `unavailable` when it names none), its message
 * after `prefix: ` when a prefix is given.
 *
 * @example Usage
 * ```ts
 * import { errorFromBody } from "./errors.ts";
 * import assert from "node:assert/strict";
 * const body = new TextEncoder().encode('{"code":"forbidden","message":"no"}');
 * const err = errorFromBody(body, "publish on agent.a.audit");
 * assert.equal(err.code, "forbidden");
 * assert.equal(err.message, "publish on agent.a.audit: no");
 * assert.equal(errorFromBody(new Uint8Array(0)).code, "unavailable");
 * ```
 */
export function errorFromBody(body: Uint8Array, prefix?: string): AgentError {
  const parsed = parseBody(body) as Record<string, unknown> | undefined;
  const code = typeof parsed?.code === "string" ? parsed.code : "unavailable";
  const message = typeof parsed?.message === "string"
    ? parsed.message
    : "the node answered err";
  return new AgentError(
    code,
    prefix !== undefined ? `${prefix}: ${message}` : message,
  );
}
