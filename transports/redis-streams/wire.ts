/**
 * The Redis Streams field layout of an envelope (docs/wire-format.md), so
 * `redis-cli XADD plexus:orders * payload '{"n":1}'` interoperates.
 *
 * @module
 */
import {
  type Envelope,
  parseEnvelope,
  safeParseEnvelope,
} from "../../core/envelope.ts";
import type { AttemptError, DeadLetter } from "../../core/transport.ts";

/** Stream of `topic`: `{prefix}{topic}`. */
export function streamKey(prefix: string, topic: string): string {
  return `${prefix}${topic}`;
}

/**
 * Stream of partition `n` of `topic`, where messages published with a key
 * go: `{prefix}{topic}#{n}` (`#` is refused in topics for this reason).
 */
export function partitionKey(prefix: string, topic: string, n: number): string {
  return `${prefix}${topic}#${n}`;
}

/**
 * Partition of an ordering key: FNV-1a (32-bit) of its UTF-8 bytes, modulo
 * `partitions`. Producers outside Plexus compute the same to keep order.
 *
 * @example Usage
 * ```ts
 * import { partitionOf } from "./wire.ts";
 * partitionOf("customer-7", 8); // 1
 * ```
 */
export function partitionOf(key: string, partitions: number): number {
  let h = 0x811c9dc5;
  for (const b of encoder.encode(key)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % partitions;
}

const encoder = new TextEncoder();

/** Lease of partition `n` for `group`: `{prefix}lease:{topic}#{n}:{group}`. */
export function leaseKey(
  prefix: string,
  topic: string,
  group: string,
  n: number,
): string {
  return `${prefix}lease:${topic}#${n}:${group}`;
}

/** Live members of `group` (sorted set, score = last heartbeat ms). */
export function membersKey(
  prefix: string,
  topic: string,
  group: string,
): string {
  return `${prefix}members:${topic}:${group}`;
}

/** Dead-letter stream of `topic`: `{prefix}dlq:{topic}`. */
export function dlqKey(prefix: string, topic: string): string {
  return `${prefix}dlq:${topic}`;
}

/**
 * Envelope → flat XADD field list. JSON-valued fields: `payload`, `headers`,
 * `delivery`, `destination`; the rest are plain strings.
 *
 * @example Usage
 * ```ts
 * import { encodeFields } from "./wire.ts";
 * import { createEnvelope } from "../../core/envelope.ts";
 * const f = encodeFields(createEnvelope({ type: "event", topic: "orders", source: "s", payload: { n: 1 } }));
 * f.includes("payload"); // true
 * ```
 */
export function encodeFields(envelope: Envelope, key?: string): string[] {
  const f: string[] = [
    "id",
    envelope.id,
    "type",
    envelope.type,
    "topic",
    envelope.topic,
    "source",
    envelope.source,
    "timestamp",
    String(envelope.timestamp),
    "priority",
    String(envelope.priority),
    "payload",
    JSON.stringify(envelope.payload ?? null),
    "delivery",
    JSON.stringify(envelope.delivery),
  ];
  if (Object.keys(envelope.headers).length > 0) {
    f.push("headers", JSON.stringify(envelope.headers));
  }
  if (envelope.destination) {
    f.push("destination", JSON.stringify(envelope.destination));
  }
  if (envelope.correlationId !== undefined) {
    f.push("correlationId", envelope.correlationId);
  }
  if (envelope.replyTo !== undefined) f.push("replyTo", envelope.replyTo);
  if (envelope.ttlMs !== undefined) f.push("ttlMs", String(envelope.ttlMs));
  if (key !== undefined) f.push("key", key);
  return f;
}

/** Flat field list → map (later duplicates win, as XADD would keep both). */
export function fieldMap(fields: string[]): Map<string, string> {
  const m = new Map<string, string>();
  for (let i = 0; i + 1 < fields.length; i += 2) {
    m.set(fields[i], fields[i + 1]);
  }
  return m;
}

function json(m: Map<string, string>, name: string): unknown {
  const v = m.get(name);
  if (v === undefined) return undefined;
  try {
    return JSON.parse(v);
  } catch {
    throw new Error(`field '${name}' is not JSON: ${v.slice(0, 80)}`);
  }
}

/**
 * Stream entry → envelope. Missing fields take defaults so tools need only
 * `payload`: id = the entry id, type `event`, source `redis`, timestamp = the
 * entry id's milliseconds, topic = the stream's topic. A `payload` that is
 * not JSON is taken as a string. Throws (with the reason) on a bad entry.
 */
export function decodeFields(
  fields: string[],
  entryId: string,
  topic: string,
): { envelope: Envelope; key?: string } {
  const m = fieldMap(fields);
  let payload: unknown = null;
  const raw = m.get("payload");
  if (raw !== undefined) {
    try {
      payload = JSON.parse(raw);
    } catch {
      payload = raw;
    }
  }
  const num = (name: string) => {
    const v = m.get(name);
    return v === undefined ? undefined : Number(v);
  };
  const parsed = safeParseEnvelope({
    id: m.get("id") ?? entryId,
    type: m.get("type") ?? "event",
    topic: m.get("topic") ?? topic,
    source: m.get("source") ?? "redis",
    timestamp: num("timestamp") ?? Number(entryId.split("-")[0]),
    priority: num("priority"),
    payload,
    headers: json(m, "headers"),
    delivery: json(m, "delivery"),
    destination: json(m, "destination"),
    correlationId: m.get("correlationId"),
    replyTo: m.get("replyTo"),
    ttlMs: num("ttlMs"),
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(
      `entry ${entryId} is not an envelope: ${
        issue.path.join(".")
      }: ${issue.message}`,
    );
  }
  return { envelope: parsed.data, key: m.get("key") };
}

/**
 * Why an entry read as strings cannot be an envelope before it is decoded,
 * or `undefined`: its values (all but `key`, which is not part of the
 * envelope) are more than `maxBytes` of UTF-8. Each value appears in the
 * envelope's JSON, so an entry Plexus published within the limit passes.
 *
 * @example Usage
 * ```ts
 * import { entryTooLarge } from "./wire.ts";
 * entryTooLarge(["payload", '"' + "x".repeat(200) + '"'], "1-0", 100);
 * // "entry 1-0 is 202 bytes; the limit is 100 bytes"
 * ```
 */
export function entryTooLarge(
  fields: string[],
  entryId: string,
  maxBytes: number,
): string | undefined {
  let units = 0;
  for (let i = 1; i < fields.length; i += 2) {
    if (fields[i - 1] !== "key") units += fields[i].length;
  }
  // UTF-8 is at most 3 bytes per UTF-16 unit: count exactly only near the limit.
  if (units * 3 <= maxBytes) return undefined;
  let bytes = 0;
  for (let i = 1; i < fields.length; i += 2) {
    if (fields[i - 1] !== "key") bytes += encoder.encode(fields[i]).length;
  }
  return bytes > maxBytes
    ? `entry ${entryId} is ${bytes} bytes; the limit is ${maxBytes} bytes`
    : undefined;
}

/**
 * Whether values read as strings may hide bytes that are not UTF-8: the
 * client decodes those to U+FFFD, so only then are the raw bytes worth
 * reading ({@linkcode notUtf8}).
 *
 * @example Usage
 * ```ts
 * import { mayHideBadBytes } from "./wire.ts";
 * mayHideBadBytes(["payload", "ok"]); // false
 * ```
 */
export function mayHideBadBytes(fields: string[]): boolean {
  for (const f of fields) if (f.includes("\uFFFD")) return true;
  return false;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Why an entry's raw fields (names and values as bytes) are not UTF-8, or
 * `undefined` when they all are.
 *
 * @example Usage
 * ```ts
 * import { notUtf8 } from "./wire.ts";
 * const b = (s: string) => new TextEncoder().encode(s);
 * notUtf8([b("payload"), new Uint8Array([0xff])], "1-0");
 * // "entry 1-0 field 'payload' is not UTF-8"
 * ```
 */
export function notUtf8(
  raw: Uint8Array[],
  entryId: string,
): string | undefined {
  for (let i = 0; i < raw.length; i++) {
    try {
      strictUtf8.decode(raw[i]);
    } catch {
      const name = i % 2 === 0
        ? "a field name"
        : `field '${new TextDecoder().decode(raw[i - 1])}'`;
      return `entry ${entryId} ${name} is not UTF-8`;
    }
  }
  return undefined;
}

/** Fields a dead letter adds to the original entry's (all prefixed `dlq.`). */
export function deadLetterFields(
  d: Omit<DeadLetter, "envelope" | "topic"> & { entryId: string },
): string[] {
  return [
    "dlq.reason",
    d.reason,
    "dlq.attempts",
    String(d.attempts),
    "dlq.errors",
    JSON.stringify(d.errors),
    "dlq.group",
    d.group ?? "",
    "dlq.entry",
    d.entryId,
    "dlq.at",
    String(d.deadAt),
  ];
}

/** A DLQ stream entry → {@linkcode DeadLetter}. */
export function decodeDeadLetter(
  fields: string[],
  entryId: string,
  topic: string,
): DeadLetter {
  const m = fieldMap(fields);
  let envelope: Envelope | undefined;
  // A bad message is dead-lettered as it came: its raw fields, even when
  // they decode here (bytes that were not UTF-8 read back as U+FFFD).
  if (!m.get("dlq.reason")?.startsWith("bad_message: ")) {
    try {
      envelope = decodeFields(fields, entryId, topic).envelope;
    } catch { /* kept raw below */ }
  }
  if (envelope === undefined) {
    envelope = parseEnvelope({
      id: (m.get("id") || entryId).slice(0, 128),
      type: "event",
      topic,
      source: "redis",
      timestamp: Number(entryId.split("-")[0]),
      payload: Object.fromEntries(m),
    });
  }
  return {
    envelope,
    topic,
    group: m.get("dlq.group") || undefined,
    reason: m.get("dlq.reason") ?? "",
    attempts: Number(m.get("dlq.attempts") ?? 0),
    errors: (json(m, "dlq.errors") ?? []) as AttemptError[],
    deadAt: Number(m.get("dlq.at") ?? 0),
  };
}
