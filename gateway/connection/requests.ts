/**
 * Request/reply on one agent connection: the error a request ends with (in
 * both directions), and the node's own requests to the agent (`req` on
 * `backend.{id}.{name}`) waiting for the agent's `res` or `err` record.
 *
 * A waiting request ends exactly once: with the agent's answer, with
 * `timeout` when none came in time, or with `unavailable` when the
 * connection closes first ({@linkcode PendingAsks.rejectAll}). A late
 * answer, or one to a request this connection did not send, is ignored.
 *
 * @module
 */
import type { ErrorCode } from "./types.ts";

/** A refused agent request, with the `err` code the agent receives. */
export class GatewayRequestError extends Error {
  override name = "GatewayRequestError";
  constructor(readonly code: ErrorCode, message: string) {
    super(message);
  }
}

interface Waiting {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * The node's requests to one agent that wait for an answer, by record id.
 *
 * @example Usage
 * ```ts
 * import { GatewayRequestError, PendingAsks } from "./requests.ts";
 * import assert from "node:assert/strict";
 * const asks = new PendingAsks();
 * const answered = asks.ask("r1", 1000, "no answer", () => {});
 * asks.settle("r1", "res", new TextEncoder().encode('{"ok":true}'), "agent-1");
 * assert.deepEqual(await answered, { ok: true });
 *
 * const refused = asks.ask("r2", 1000, "no answer", () => {});
 * asks.settle("r2", "err", new TextEncoder().encode('{"code":"forbidden"}'), "agent-1");
 * await assert.rejects(refused, (e) => e instanceof GatewayRequestError && e.code === "forbidden");
 * ```
 */
export class PendingAsks {
  readonly #waiting = new Map<string, Waiting>();

  /**
   * Waits for the answer to request `id`, which `send` sends (inside the
   * promise: a throwing `send` rejects it). Rejects with `timeout` and
   * `timeoutMessage` after `timeoutMs`.
   */
  ask(
    id: string,
    timeoutMs: number,
    timeoutMessage: string,
    send: () => void,
  ): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(id);
        reject(new GatewayRequestError("timeout", timeoutMessage));
      }, timeoutMs);
      this.#waiting.set(id, { resolve, reject, timer });
      send();
    });
  }

  /**
   * Ends the request that record `re` answers with the agent's `res` body
   * (JSON) or `err` body (`{code, message}`); `agentId` names the agent in
   * the error. Nothing happens when no request waits for `re`.
   */
  settle(
    re: unknown,
    type: "res" | "err",
    body: Uint8Array,
    agentId: string,
  ): void {
    const waiting = typeof re === "string" && this.#waiting.get(re);
    if (!waiting) return; // late (timed out) or not ours
    this.#waiting.delete(re as string);
    clearTimeout(waiting.timer);
    let answer: unknown = null;
    try {
      answer = body.length ? JSON.parse(decoder.decode(body)) : null;
    } catch {
      return waiting.reject(
        new GatewayRequestError(
          "bad_request",
          "the agent's answer is not JSON",
        ),
      );
    }
    if (type === "res") return waiting.resolve(answer);
    const e = answer as { code?: string; message?: string } | null;
    return waiting.reject(
      new GatewayRequestError(
        (e?.code ?? "unavailable") as ErrorCode,
        `agent ${agentId} answered ${e?.code ?? "err"}: ${e?.message ?? ""}`,
      ),
    );
  }

  /** Ends every waiting request with `unavailable` and `message` (the connection closed). */
  rejectAll(message: string): void {
    for (const [id, w] of this.#waiting) {
      clearTimeout(w.timer);
      w.reject(new GatewayRequestError("unavailable", message));
      this.#waiting.delete(id);
    }
  }
}
