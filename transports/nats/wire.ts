/**
 * The NATS layout of Plexus messages (docs/wire-format.md): subjects,
 * JetStream stream and consumer names, the message body and headers, and
 * dead letters, so `nats pub plexus.orders '<envelope JSON>'` interoperates.
 *
 * - Body: the envelope's JSON (`JSON.stringify(envelope)`, the bytes
 *   `caps.maxMessageBytes` limits). Headers: `Nats-Msg-Id` = envelope id
 *   (JetStream drops a re-published duplicate within the stream's duplicate
 *   window), `Plexus-Key` = the ordering key, if any.
 * - Subjects: `{prefix}{topic}`; a message with a key goes to
 *   `{prefix}{topic}.~{n}`, n = FNV-1a(key) mod `partitions`.
 * - One stream per topic family (a topic's first segment):
 *   `{PREFIX}{family}` capturing `{prefix}{family}` and `{prefix}{family}.>`.
 * - Dead letters: stream `{PREFIX}_DLQ`, subject `{prefix}_dlq.{topic}`, the
 *   original body with `Plexus-Dlq-*` headers. Error histories of messages
 *   being retried: stream `{PREFIX}_ERRORS`, one message per subject
 *   `{prefix}_errors.{consumer}.{stream sequence}`.
 *
 * @module
 */
import {
  type Envelope,
  parseEnvelope,
  safeParseEnvelope,
} from "../../core/envelope.ts";
import { validateTopic } from "../../core/router.ts";
import {
  type AttemptError,
  type DeadLetter,
  TransportError,
} from "../../core/transport.ts";

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder("utf-8", { fatal: true });

/** Header names. */
export const H = {
  msgId: "Nats-Msg-Id",
  key: "Plexus-Key",
  reason: "Plexus-Dlq-Reason",
  attempts: "Plexus-Dlq-Attempts",
  errors: "Plexus-Dlq-Errors",
  group: "Plexus-Dlq-Group",
  topic: "Plexus-Dlq-Topic",
  origin: "Plexus-Dlq-Origin",
  at: "Plexus-Dlq-At",
  truncated: "Plexus-Dlq-Truncated",
} as const;

/**
 * FNV-1a (32-bit) of `s`'s UTF-8 bytes.
 *
 * @example Usage
 * ```ts
 * import { fnv1a } from "./wire.ts";
 * fnv1a("") === 0x811c9dc5; // true
 * ```
 */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (const b of encoder.encode(s)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * Partition of an ordering key: FNV-1a of its UTF-8 bytes modulo
 * `partitions` (the same as redis-streams, so producers outside Plexus can
 * compute it).
 *
 * @example Usage
 * ```ts
 * import { partitionOf } from "./wire.ts";
 * partitionOf("customer-7", 8); // 1
 * ```
 */
export function partitionOf(key: string, partitions: number): number {
  return fnv1a(key) % partitions;
}

/**
 * Refuses a topic NATS or this layout cannot carry: the router's rules, no
 * segment starting with `~` (partition subjects) and no first segment
 * starting with `_` (the `_dlq` and `_errors` subjects).
 *
 * @example Usage
 * ```ts
 * import { checkTopic } from "./wire.ts";
 * checkTopic("orders.created");
 * ```
 */
export function checkTopic(topic: string): void {
  let parts: string[];
  try {
    parts = validateTopic(topic);
  } catch (err) {
    throw new TransportError("invalid_argument", (err as Error).message);
  }
  if (parts[0].startsWith("_")) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use topic '${topic}' on nats: a first segment starting with '_' is reserved (dead letters, error histories)`,
    );
  }
  if (parts.some((p) => p.startsWith("~"))) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use topic '${topic}' on nats: segments starting with '~' are reserved for key partitions`,
    );
  }
}

/** Subject of unkeyed messages of `topic`. */
export function subjectOf(prefix: string, topic: string): string {
  return `${prefix}${topic}`;
}

/** Subject of partition `n` of `topic` (messages published with a key). */
export function partitionSubject(
  prefix: string,
  topic: string,
  n: number,
): string {
  return `${prefix}${topic}.~${n}`;
}

/** Dead-letter subject of `topic`. */
export function dlqSubject(prefix: string, topic: string): string {
  return `${prefix}_dlq.${topic}`;
}

/** Subject of the error history of one message of one consumer. */
export function errorsSubject(
  prefix: string,
  consumer: string,
  seq: number,
): string {
  return `${prefix}_errors.${consumer}.${seq}`;
}

/**
 * Stream-name prefix derived from the subject prefix: `plexus.` →
 * `PLEXUS_`.
 */
export function streamPrefix(prefix: string): string {
  return prefix.toUpperCase().replace(/[^A-Z0-9_-]/g, "_");
}

/** `s` with what stream and consumer names refuse replaced, plus a hash when anything was. */
function safeName(s: string, max: number): string {
  const safe = s.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, max);
  return safe === s ? s : `${safe}_${fnv1a(s).toString(36)}`;
}

/**
 * Stream of `topic`'s family (its first segment).
 *
 * @example Usage
 * ```ts
 * import { streamOf } from "./wire.ts";
 * streamOf("plexus.", "orders.created"); // "PLEXUS_orders"
 * ```
 */
export function streamOf(prefix: string, topic: string): string {
  return `${streamPrefix(prefix)}${safeName(familyOf(topic), 64)}`;
}

/** A topic's family: its first segment. */
export function familyOf(topic: string): string {
  const dot = topic.indexOf(".");
  return dot < 0 ? topic : topic.slice(0, dot);
}

/** Subjects of a family's stream. */
export function familySubjects(prefix: string, family: string): string[] {
  return [`${prefix}${family}`, `${prefix}${family}.>`];
}

/**
 * Durable consumer name of `group` on `topic`: readable group, hash of both
 * (several topics share a family's stream).
 *
 * @example Usage
 * ```ts
 * import { consumerOf } from "./wire.ts";
 * consumerOf("billing", "orders.created").startsWith("billing_"); // true
 * ```
 */
export function consumerOf(group: string, topic: string): string {
  const safe = group.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 48);
  return `${safe}_${fnv1a(`${group}\n${topic}`).toString(36)}`;
}

/**
 * Envelope → message body: its JSON, the bytes `caps.maxMessageBytes`
 * limits.
 *
 * @example Usage
 * ```ts
 * import { encodeBody } from "./wire.ts";
 * import { createEnvelope } from "../../core/envelope.ts";
 * encodeBody(createEnvelope({ type: "event", topic: "t", source: "s", payload: 1 })).length > 0; // true
 * ```
 */
export function encodeBody(envelope: Envelope): Uint8Array {
  return encoder.encode(JSON.stringify(envelope));
}

/**
 * Message body → envelope; throws, saying why, when it is not UTF-8, not
 * JSON, not an envelope or larger than `maxBytes`. `where` names the message
 * in the error (stream and sequence).
 */
export function decodeBody(
  body: Uint8Array,
  maxBytes: number,
  where: string,
): Envelope {
  if (body.length > maxBytes) {
    throw new Error(
      `${where} is ${body.length} bytes; the limit is ${maxBytes} bytes`,
    );
  }
  let text: string;
  try {
    text = strictDecoder.decode(body);
  } catch {
    throw new Error(`${where} is not UTF-8`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${where} is not JSON: ${text.slice(0, 60)}`);
  }
  const parsed = safeParseEnvelope(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(
      `${where} is not an envelope: ${
        issue.path.join(".") || "(root)"
      }: ${issue.message}`,
    );
  }
  return parsed.data;
}

/** One header value: no CR/LF, at most `max` characters. */
export function headerValue(s: string, max = 1000): string {
  return s.replace(/[\r\n]+/g, " ").slice(0, max);
}

/** A dead letter's header values (besides the original `Plexus-Key`). */
export function deadLetterHeaders(
  d: Omit<DeadLetter, "envelope"> & { origin: string; truncated?: boolean },
): Record<string, string> {
  const h: Record<string, string> = {
    [H.reason]: headerValue(d.reason),
    [H.attempts]: String(d.attempts),
    [H.errors]: JSON.stringify(
      d.errors.map((e) => ({ ...e, error: e.error.slice(0, 500) })),
    ),
    [H.topic]: d.topic,
    [H.origin]: d.origin,
    [H.at]: String(d.deadAt),
  };
  if (d.group !== undefined) h[H.group] = d.group;
  if (d.truncated) h[H.truncated] = "true";
  return h;
}

/**
 * A dead-letter message (body and a header lookup) → {@linkcode DeadLetter}.
 * A body that is not an envelope (a dead-lettered bad message) comes back as
 * an envelope whose payload is `{ data }`, the body as text (or base64 when
 * it is not UTF-8).
 */
export function decodeDeadLetter(
  body: Uint8Array,
  header: (name: string) => string | undefined,
  topic: string,
  timestampMs: number,
): DeadLetter {
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
      id: header(H.origin) || "nats",
      type: "event",
      topic,
      source: "nats",
      timestamp: Math.floor(timestampMs),
      payload: { data },
    });
  }
  let errors: AttemptError[] = [];
  try {
    const parsed = JSON.parse(header(H.errors) ?? "[]");
    if (Array.isArray(parsed)) errors = parsed;
  } catch { /* a tool wrote it: no history */ }
  return {
    envelope,
    topic,
    group: header(H.group) || undefined,
    reason: header(H.reason) ?? "",
    attempts: Number(header(H.attempts) ?? 0),
    errors,
    deadAt: Number(header(H.at) ?? 0) || Math.floor(timestampMs),
  };
}
