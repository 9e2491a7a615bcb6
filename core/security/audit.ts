/**
 * The audit log: who did what to which route, with what outcome, for every
 * mutating call (POST, PUT, PATCH, DELETE). Each record is written as a JSON
 * log line (`"msg":"audit"`) and kept in Deno KV for `retentionMs`, keyed by
 * time and commit versionstamp so records list in the order they were
 * written, even within one millisecond.
 *
 * The principal comes from the request context (`c.get("principal")`, set by
 * the authentication middleware); a request without one is recorded as
 * `anonymous`.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import type { Logger } from "../observe/logger.ts";
import { currentCorrelationId } from "../observe/logger.ts";
import { auditKey } from "../state/keys.ts";
import { type Clock, systemClock } from "../clock.ts";

/** One audited call. */
export interface AuditRecord {
  id: string;
  at: number;
  principal: string;
  method: string;
  route: string;
  path: string;
  status: number;
  outcome: "ok" | "denied" | "failed";
  correlationId?: string;
}

/** Options for {@linkcode auditLog}. */
export interface AuditOptions {
  kv: Deno.Kv;
  log: Logger;
  /** How long records stay in KV. @default {2592000000} (30 days) */
  retentionMs?: number;
  clock?: Clock;
  /** Told when a record could not be stored (the call itself is unaffected). */
  onError?: (err: unknown) => void;
}

const MUTATING = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** Maps an HTTP status to an audit outcome. */
export function outcomeOf(status: number): AuditRecord["outcome"] {
  if (status === 401 || status === 403 || status === 429) return "denied";
  return status >= 400 ? "failed" : "ok";
}

/**
 * Middleware that audits mutating calls after they are answered.
 *
 * @example Usage
 * ```ts ignore
 * app.use("/api/v1/*", auditLog({ kv, log }));
 * ```
 */
export function auditLog(options: AuditOptions): MiddlewareHandler {
  const retention = options.retentionMs ?? 30 * 24 * 3_600_000;
  const clock = options.clock ?? systemClock;
  return async (c, next) => {
    await next();
    if (!MUTATING.has(c.req.method)) return;
    const principal =
      (c.get("principal" as never) as { sub?: string } | undefined)?.sub ??
        "anonymous";
    const record: AuditRecord = {
      id: crypto.randomUUID(),
      at: clock.now(),
      principal,
      method: c.req.method,
      route: c.req.routePath,
      path: c.req.path,
      status: c.res.status,
      outcome: outcomeOf(c.res.status),
    };
    const cid = currentCorrelationId();
    if (cid) record.correlationId = cid;
    options.log.info("audit", { audit: record });
    try {
      // The versionstamp ends the key: calls in one millisecond keep their
      // order (a random id there sorted them at random).
      await options.kv.atomic().set(
        auditKey(record.at, options.kv.commitVersionstamp()),
        record,
        { expireIn: retention },
      ).commit();
    } catch (err) {
      options.onError?.(err);
    }
  };
}

/** Audit records from `since` (wall ms), oldest first. */
export async function listAudit(
  kv: Deno.Kv,
  options: { since?: number; limit?: number } = {},
): Promise<AuditRecord[]> {
  const out: AuditRecord[] = [];
  const selector = options.since === undefined
    ? { prefix: auditKey() }
    : { prefix: auditKey(), start: auditKey(options.since) };
  for await (
    const e of kv.list<AuditRecord>(selector, { limit: options.limit ?? 100 })
  ) out.push(e.value);
  return out;
}
