/**
 * What a transport reports when a handler fails or a message is
 * dead-lettered: a warning in the log and a counter, the same names for
 * every transport, so neither goes unnoticed until someone reads a DLQ.
 *
 * - `plexus_transport_handler_failures_total{transport,topic}`: a handler
 *   threw (or its promise rejected). An explicit `nak` is the handler's own
 *   decision (often "not here, later") and is not counted.
 * - `plexus_transport_dead_lettered_total{transport,topic,reason}`: `reason`
 *   is `max_attempts`, `bad_message` or `term` (the full text is logged, not
 *   used as a label, so series stay bounded).
 *
 * Topics are bounded by the node's subscriptions.
 *
 * @module
 */
import type { Logger } from "../core/observe/logger.ts";
import type { MetricsRegistry } from "../core/observe/metrics.ts";

/** A handler's failure, as reported. */
export interface HandlerFailure {
  topic: string;
  /** The envelope id. */
  messageId: string;
  /** The attempt that failed (1 = first delivery). */
  attempt: number;
  error: unknown;
  group?: string;
}

/** A dead-lettered message, as reported. */
export interface DeadLettered {
  topic: string;
  /** The envelope id, or the transport's own id of a record that is not an envelope. */
  messageId: string;
  /** The dead letter's reason as stored with it. */
  reason: string;
  attempts: number;
  group?: string;
}

/** The reporter a transport calls. */
export interface TransportTelemetry {
  handlerFailed(f: HandlerFailure): void;
  deadLettered(d: DeadLettered): void;
}

/** Where reports go; either may be left out (nothing is reported there). */
export interface TransportTelemetryOptions {
  log?: Logger;
  metrics?: MetricsRegistry;
}

/** The bounded label of a dead letter's reason. */
export function deadLetterReason(
  reason: string,
): "max_attempts" | "bad_message" | "term" {
  if (reason.startsWith("max attempts")) return "max_attempts";
  if (reason.startsWith("bad_message")) return "bad_message";
  return "term";
}

/**
 * Creates the reporter of the transport named `transport`.
 *
 * @example Usage
 * ```ts
 * import { transportTelemetry } from "./_telemetry.ts";
 * import { createMetrics } from "../core/observe/metrics.ts";
 * const metrics = createMetrics("plexus_");
 * const report = transportTelemetry("memory", { metrics });
 * report.deadLettered({ topic: "orders", messageId: "m1", reason: "max attempts (5) reached", attempts: 5 });
 * metrics.render().includes('reason="max_attempts"'); // true
 * ```
 */
export function transportTelemetry(
  transport: string,
  options: TransportTelemetryOptions = {},
): TransportTelemetry {
  const { log, metrics } = options;
  const failures = metrics?.counter(
    "plexus_transport_handler_failures_total",
    "Deliveries whose handler threw, by transport and topic",
  );
  const dead = metrics?.counter(
    "plexus_transport_dead_lettered_total",
    "Messages moved to the dead-letter queue, by transport, topic and reason (max_attempts, bad_message, term)",
  );
  return {
    handlerFailed(f) {
      failures?.inc({ transport, topic: f.topic });
      log?.warn("transport handler failed", {
        transport,
        topic: f.topic,
        ...(f.group === undefined ? {} : { group: f.group }),
        messageId: f.messageId,
        attempt: f.attempt,
        error: f.error,
      });
    },
    deadLettered(d) {
      dead?.inc({
        transport,
        topic: d.topic,
        reason: deadLetterReason(d.reason),
      });
      log?.warn("message dead-lettered", {
        transport,
        topic: d.topic,
        ...(d.group === undefined ? {} : { group: d.group }),
        messageId: d.messageId,
        reason: d.reason,
        attempts: d.attempts,
      });
    },
  };
}
