/**
 * The RabbitMQ layout of Plexus messages (docs/wire-format.md): exchanges,
 * routing keys, binding patterns, queue names, headers and dead letters, so
 * `rabbitmqadmin publish exchange=plexus routing_key=orders payload=…`
 * interoperates.
 *
 * - Unkeyed messages: topic exchange `{prefix}`, routing key = the topic.
 *   Keyed ones: topic exchange `{prefix}.keyed`, routing key
 *   `{n}.{topic}`, n = FNV-1a(key) mod `partitions`, header `Plexus-Key`.
 * - Subscription patterns: `*` stays `*`; `>` (one or more segments) becomes
 *   `*.#` (`#` alone would also match zero segments).
 * - A group's queues: `{prefix}.g.{group}.{topic}.{hash}` (unkeyed) and the
 *   same plus `.~{n}` per partition (single active consumer).
 * - Retries: header exchange `{prefix}.delay` → queue `{prefix}.delay.{ms}`
 *   (message TTL ms) → dead-lettered through the default exchange back to
 *   the queue named by the routing key.
 * - Dead letters: direct exchange `{prefix}.dlx`, routing key = the
 *   subscription's topic, queue `{prefix}.dlq.{topic}`; the original body
 *   with `Plexus-Dlq-*` headers.
 *
 * @module
 */
import { validateTopic } from "../../core/router.ts";
import {
  type AttemptError,
  type DeadLetter,
  TransportError,
} from "../../core/transport.ts";
// The body codec, partition hash and header hygiene are NATS's, unchanged:
// one envelope JSON and one key → partition mapping on every broker.
import { decodeBody, fnv1a, headerValue, partitionOf } from "../nats/wire.ts";
import { type Envelope, parseEnvelope } from "../../core/envelope.ts";

export { decodeBody, partitionOf };

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Header names. */
export const H = {
  key: "Plexus-Key",
  topic: "Plexus-Topic",
  attempts: "Plexus-Attempts",
  errors: "Plexus-Errors",
  delay: "Plexus-Delay",
  reason: "Plexus-Dlq-Reason",
  dlqAttempts: "Plexus-Dlq-Attempts",
  dlqErrors: "Plexus-Dlq-Errors",
  group: "Plexus-Dlq-Group",
  dlqTopic: "Plexus-Dlq-Topic",
  origin: "Plexus-Dlq-Origin",
  at: "Plexus-Dlq-At",
  truncated: "Plexus-Dlq-Truncated",
} as const;

/** Longest topic: `{n}.{topic}` must fit AMQP's 255-byte routing key. */
export const MAX_TOPIC_BYTES = 240;

/**
 * Refuses a topic (or, with `pattern`, a subscription pattern) RabbitMQ or
 * this layout cannot carry: the router's rules, no segment `#` (a topic
 * exchange wildcard) and at most {@linkcode MAX_TOPIC_BYTES} UTF-8 bytes.
 *
 * @example Usage
 * ```ts
 * import { checkTopic } from "./wire.ts";
 * checkTopic("orders.created");
 * checkTopic("orders.>", true);
 * ```
 */
export function checkTopic(topic: string, pattern = false): void {
  let parts: string[];
  try {
    parts = validateTopic(topic, pattern);
  } catch (err) {
    throw new TransportError("invalid_argument", (err as Error).message);
  }
  if (parts.includes("#")) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use topic '${topic}' on rabbitmq: a segment '#' is a topic exchange wildcard (use '>')`,
    );
  }
  const bytes = encoder.encode(topic).length;
  if (bytes > MAX_TOPIC_BYTES) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use topic '${
        topic.slice(0, 40)
      }…' on rabbitmq: it is ${bytes} bytes; the limit is ${MAX_TOPIC_BYTES} (AMQP routing keys are at most 255)`,
    );
  }
}

/**
 * A Plexus pattern as a topic exchange binding: `*` → `*`, `>` → `*.#`.
 *
 * @example Usage
 * ```ts
 * import { bindingOf } from "./wire.ts";
 * bindingOf("orders.>"); // "orders.*.#"
 * ```
 */
export function bindingOf(pattern: string): string {
  return pattern.split(".").map((p) => p === ">" ? "*.#" : p).join(".");
}

/**
 * The exchange of keyed messages.
 *
 * @example Usage
 * ```ts
 * import { keyedExchange } from "./wire.ts";
 * keyedExchange("plexus"); // "plexus.keyed"
 * ```
 */
export function keyedExchange(prefix: string): string {
  return `${prefix}.keyed`;
}

/**
 * Routing key of a keyed message of `topic` in partition `n`.
 *
 * @example Usage
 * ```ts
 * import { keyedRoutingKey } from "./wire.ts";
 * keyedRoutingKey("orders", 3); // "3.orders"
 * ```
 */
export function keyedRoutingKey(topic: string, n: number): string {
  return `${n}.${topic}`;
}

/**
 * The topic of a keyed routing key (`{n}.{topic}` → `topic`).
 *
 * @example Usage
 * ```ts
 * import { topicOfKeyed } from "./wire.ts";
 * topicOfKeyed("3.orders.created"); // "orders.created"
 * ```
 */
export function topicOfKeyed(routingKey: string): string {
  return routingKey.slice(routingKey.indexOf(".") + 1);
}

/** `s` cut to `max` UTF-16 units. */
const clip = (s: string, max: number) => s.length > max ? s.slice(0, max) : s;

/**
 * The queue of `group` on `topic` (unkeyed messages); partition `n`'s is
 * this plus `.~{n}`. Readable group and topic, a hash of both for
 * uniqueness (a group may hold dots).
 *
 * @example Usage
 * ```ts
 * import { groupQueue } from "./wire.ts";
 * groupQueue("plexus", "billing", "orders.created").startsWith("plexus.g.billing.orders.created."); // true
 * ```
 */
export function groupQueue(prefix: string, group: string, topic: string) {
  return `${prefix}.g.${clip(group, 80)}.${clip(topic, 100)}.${
    fnv1a(`${group}\n${topic}`).toString(36)
  }`;
}

/**
 * The queue of partition `n` beside the unkeyed queue `queue`.
 *
 * @example Usage
 * ```ts
 * import { partitionQueue } from "./wire.ts";
 * partitionQueue("plexus.g.b.orders.x1", 2); // "plexus.g.b.orders.x1.~2"
 * ```
 */
export function partitionQueue(queue: string, n: number): string {
  return `${queue}.~${n}`;
}

/**
 * The dead-letter queue of a subscription topic.
 *
 * @example Usage
 * ```ts
 * import { dlqQueue } from "./wire.ts";
 * dlqQueue("plexus", "orders"); // "plexus.dlq.orders"
 * ```
 */
export function dlqQueue(prefix: string, topic: string): string {
  return topic.length > 200
    ? `${prefix}.dlq.${clip(topic, 180)}.${fnv1a(topic).toString(36)}`
    : `${prefix}.dlq.${topic}`;
}

/**
 * The dead-letter exchange.
 *
 * @example Usage
 * ```ts
 * import { dlxExchange } from "./wire.ts";
 * dlxExchange("plexus"); // "plexus.dlx"
 * ```
 */
export function dlxExchange(prefix: string): string {
  return `${prefix}.dlx`;
}

/**
 * The header exchange of delayed retries.
 *
 * @example Usage
 * ```ts
 * import { delayExchange } from "./wire.ts";
 * delayExchange("plexus"); // "plexus.delay"
 * ```
 */
export function delayExchange(prefix: string): string {
  return `${prefix}.delay`;
}

/**
 * The queue holding retries of delay `ms`.
 *
 * @example Usage
 * ```ts
 * import { delayQueue } from "./wire.ts";
 * delayQueue("plexus", 300); // "plexus.delay.300"
 * ```
 */
export function delayQueue(prefix: string, ms: number): string {
  return `${prefix}.delay.${ms}`;
}

/**
 * A retry delay rounded up to two significant digits (so a few queues
 * serve every delay: 1234 → 1300), at most 7 days; 0 for none.
 *
 * @example Usage
 * ```ts
 * import { delayBucket } from "./wire.ts";
 * delayBucket(300); // 300
 * delayBucket(1234); // 1300
 * ```
 */
export function delayBucket(ms: number): number {
  if (!(ms > 0)) return 0;
  const max = 7 * 24 * 3600 * 1000;
  if (ms >= max) return max;
  if (ms < 100) return Math.ceil(ms);
  const step = 10 ** (Math.floor(Math.log10(ms)) - 1);
  return Math.min(Math.ceil(ms / step) * step, max);
}

/**
 * The error history in a header: JSON, each error cut to 500 characters,
 * the last 20.
 *
 * @example Usage
 * ```ts
 * import { encodeErrors } from "./wire.ts";
 * encodeErrors([{ at: 1, attempt: 1, error: "boom" }]);
 * ```
 */
export function encodeErrors(errors: AttemptError[]): string {
  return JSON.stringify(
    errors.slice(-20).map((e) => ({ ...e, error: e.error.slice(0, 500) })),
  );
}

/**
 * A header's error history; `[]` for anything else.
 *
 * @example Usage
 * ```ts
 * import { decodeErrors } from "./wire.ts";
 * decodeErrors("not json"); // []
 * ```
 */
export function decodeErrors(v: unknown): AttemptError[] {
  if (typeof v !== "string") return [];
  try {
    const parsed = JSON.parse(v);
    return Array.isArray(parsed) ? parsed : [];
  } catch {
    return [];
  }
}

/**
 * A dead letter's headers (besides the original `Plexus-Key`).
 *
 * @example Usage
 * ```ts
 * import { deadLetterHeaders } from "./wire.ts";
 * deadLetterHeaders({ topic: "t", reason: "no", attempts: 1, errors: [], deadAt: 0, origin: "q" });
 * ```
 */
export function deadLetterHeaders(
  d: Omit<DeadLetter, "envelope"> & { origin: string; truncated?: boolean },
): Record<string, string> {
  const h: Record<string, string> = {
    [H.reason]: headerValue(d.reason),
    [H.dlqAttempts]: String(d.attempts),
    [H.dlqErrors]: encodeErrors(d.errors),
    [H.dlqTopic]: d.topic,
    [H.origin]: d.origin,
    [H.at]: String(d.deadAt),
  };
  if (d.group !== undefined) h[H.group] = d.group;
  if (d.truncated) h[H.truncated] = "true";
  return h;
}

/**
 * A message body as the client hands it over (bytes; a string for
 * `text/plain`; parsed JSON for `application/json`) → bytes.
 *
 * @example Usage
 * ```ts
 * import { bodyBytes } from "./wire.ts";
 * bodyBytes("hi").length; // 2
 * ```
 */
export function bodyBytes(body: unknown): Uint8Array {
  if (body instanceof Uint8Array) return body;
  if (typeof body === "string") return encoder.encode(body);
  return encoder.encode(JSON.stringify(body));
}

/**
 * A dead-letter message (body and headers) → {@linkcode DeadLetter}. A body
 * that is not an envelope comes back as an envelope whose payload is
 * `{ data }`, the body as text (or base64 when it is not UTF-8).
 *
 * @example Usage
 * ```ts
 * import { decodeDeadLetter } from "./wire.ts";
 * decodeDeadLetter(new TextEncoder().encode("junk"), { "Plexus-Dlq-Reason": "bad" }, "t").reason; // "bad"
 * ```
 */
export function decodeDeadLetter(
  body: Uint8Array,
  headers: Record<string, unknown>,
  topic: string,
): DeadLetter {
  const header = (name: string) => {
    const v = headers[name];
    return v === undefined || v === null ? undefined : String(v);
  };
  const deadAt = Number(header(H.at)) || Date.now();
  let envelope: Envelope;
  try {
    envelope = decodeBody(body, Number.MAX_SAFE_INTEGER, "dead letter");
  } catch {
    let data: string;
    try {
      data = strictDecoder.decode(body);
    } catch {
      data = `base64:${btoa(String.fromCharCode(...body.slice(0, 65536)))}`;
    }
    envelope = parseEnvelope({
      id: header(H.origin) || "rabbitmq",
      type: "event",
      topic: header(H.dlqTopic) || topic,
      source: "rabbitmq",
      timestamp: Math.floor(deadAt),
      payload: { data },
    });
  }
  return {
    envelope,
    topic: header(H.dlqTopic) ?? topic,
    group: header(H.group),
    reason: header(H.reason) ?? "",
    attempts: Number(header(H.dlqAttempts) ?? 0),
    errors: decodeErrors(header(H.dlqErrors)),
    deadAt,
  };
}
