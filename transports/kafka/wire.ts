/**
 * The Kafka record layout of an envelope (docs/wire-format.md, "Kafka"), so
 * Kafka's console producer and consumer interoperate: the record value is
 * the payload's JSON, the key is the ordering key, and the other envelope
 * fields travel in `plexus-*` headers.
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

/** A record as produced: key, value and string headers. */
export interface WireRecord {
  key: string | null;
  value: string;
  headers: Record<string, string>;
}

/** A fetched record's headers as the client gives them. */
export type FetchedHeaders = Record<
  string,
  Uint8Array | string | (Uint8Array | string)[] | undefined
>;

/** Header names (all prefixed `plexus-`). */
export const H = {
  id: "plexus-id",
  type: "plexus-type",
  source: "plexus-source",
  timestamp: "plexus-timestamp",
  priority: "plexus-priority",
  delivery: "plexus-delivery",
  headers: "plexus-headers",
  destination: "plexus-destination",
  correlationId: "plexus-correlation-id",
  replyTo: "plexus-reply-to",
  ttlMs: "plexus-ttl-ms",
  topic: "plexus-topic",
  attempt: "plexus-attempt",
  errors: "plexus-errors",
  notBefore: "plexus-not-before",
  dlqReason: "plexus-dlq-reason",
  dlqAttempts: "plexus-dlq-attempts",
  dlqGroup: "plexus-dlq-group",
  dlqAt: "plexus-dlq-at",
  dlqOrigin: "plexus-dlq-origin",
} as const;

const KAFKA_NAME = /^[A-Za-z0-9._-]+$/;
const GROUP_NAME = /^[A-Za-z0-9_-]+$/;
/** Kafka's limit on topic names. */
const MAX_KAFKA_TOPIC = 249;

/**
 * Checks a Plexus topic for Kafka: a router topic made of Kafka's topic
 * characters (`A-Z a-z 0-9 . _ -`), not starting with `_` (reserved for the
 * retry and dead-letter topics). Throws `TransportError("invalid_argument")`
 * naming the topic.
 *
 * @example Usage
 * ```ts
 * import { checkTopic } from "./wire.ts";
 * checkTopic("orders.created"); // ok
 * try { checkTopic("orders created"); } catch (e) { (e as Error).message.includes("orders created"); }
 * ```
 */
export function checkTopic(topic: string, prefix = "plexus."): void {
  try {
    validateTopic(topic);
  } catch (err) {
    throw new TransportError("invalid_argument", (err as Error).message, {
      data: { topic },
    });
  }
  if (!KAFKA_NAME.test(topic) || topic.startsWith("_")) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use topic '${topic}' on Kafka: only A-Z a-z 0-9 . _ - are allowed, and not a leading '_'`,
      { data: { topic } },
    );
  }
  if (prefix.length + topic.length + 16 > MAX_KAFKA_TOPIC) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use topic '${topic}' on Kafka: ${topic.length} characters is too long with the prefix '${prefix}' (Kafka allows ${MAX_KAFKA_TOPIC})`,
      { data: { topic } },
    );
  }
}

/**
 * Checks a consumer group name: `A-Z a-z 0-9 _ -` (no `.`, which separates
 * the parts of retry-topic names). Throws `TransportError("invalid_argument")`.
 *
 * @example Usage
 * ```ts
 * import { checkGroup } from "./wire.ts";
 * checkGroup("billing"); // ok
 * ```
 */
export function checkGroup(group: string): void {
  if (!GROUP_NAME.test(group) || group.length > 100) {
    throw new TransportError(
      "invalid_argument",
      `Cannot use group '${group}' on Kafka: expected 1-100 of A-Z a-z 0-9 _ -`,
      { data: { group } },
    );
  }
}

/**
 * The Kafka topic of `topic`: `{prefix}{topic}`.
 *
 * @example Usage
 * ```ts
 * import { kafkaTopic } from "./wire.ts";
 * kafkaTopic("plexus.", "orders"); // "plexus.orders"
 * ```
 */
export function kafkaTopic(prefix: string, topic: string): string {
  return `${prefix}${topic}`;
}

/**
 * The dead-letter topic of `topic`: `{prefix}_dlq.{topic}`.
 *
 * @example Usage
 * ```ts
 * import { dlqTopic } from "./wire.ts";
 * dlqTopic("plexus.", "orders"); // "plexus._dlq.orders"
 * ```
 */
export function dlqTopic(prefix: string, topic: string): string {
  return `${prefix}_dlq.${topic}`;
}

/**
 * The retry topic of `group` on `topic`: `{prefix}_retry.{group}.{topic}`.
 *
 * @example Usage
 * ```ts
 * import { retryTopic } from "./wire.ts";
 * retryTopic("plexus.", "orders", "billing"); // "plexus._retry.billing.orders"
 * ```
 */
export function retryTopic(
  prefix: string,
  topic: string,
  group: string,
): string {
  return `${prefix}_retry.${group}.${topic}`;
}

/**
 * The consumer group id of `group` on `topic`: `{prefix}{group}.{topic}`
 * (a Plexus group is per topic).
 *
 * @example Usage
 * ```ts
 * import { groupId } from "./wire.ts";
 * groupId("plexus.", "orders", "billing"); // "plexus.billing.orders"
 * ```
 */
export function groupId(prefix: string, topic: string, group: string): string {
  return `${prefix}${group}.${topic}`;
}

/**
 * Envelope → record: value = `JSON.stringify(payload)`, key = the ordering
 * key, headers `plexus-*` for the other fields (JSON for `delivery`,
 * `headers`, `destination`; decimal strings for numbers).
 *
 * @example Usage
 * ```ts
 * import { encodeRecord } from "./wire.ts";
 * import { createEnvelope } from "../../core/envelope.ts";
 * const r = encodeRecord(createEnvelope({ type: "event", topic: "orders", source: "s", payload: { n: 1 } }), "k");
 * r.value; // '{"n":1}'
 * r.headers["plexus-type"]; // "event"
 * ```
 */
export function encodeRecord(envelope: Envelope, key?: string): WireRecord {
  const h: Record<string, string> = {
    [H.id]: envelope.id,
    [H.type]: envelope.type,
    [H.source]: envelope.source,
    [H.timestamp]: String(envelope.timestamp),
    [H.priority]: String(envelope.priority),
    [H.delivery]: JSON.stringify(envelope.delivery),
    [H.topic]: envelope.topic,
  };
  if (Object.keys(envelope.headers).length > 0) {
    h[H.headers] = JSON.stringify(envelope.headers);
  }
  if (envelope.destination) {
    h[H.destination] = JSON.stringify(envelope.destination);
  }
  if (envelope.correlationId !== undefined) {
    h[H.correlationId] = envelope.correlationId;
  }
  if (envelope.replyTo !== undefined) h[H.replyTo] = envelope.replyTo;
  if (envelope.ttlMs !== undefined) h[H.ttlMs] = String(envelope.ttlMs);
  return {
    key: key ?? null,
    value: JSON.stringify(envelope.payload ?? null),
    headers: h,
  };
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** One header as a string (the last value if repeated); throws on bad UTF-8. */
export function headerValue(
  headers: FetchedHeaders | undefined,
  name: string,
): string | undefined {
  let v = headers?.[name];
  if (Array.isArray(v)) v = v[v.length - 1];
  if (v === undefined) return undefined;
  if (typeof v === "string") return v;
  const ascii = asciiText(v);
  if (ascii !== undefined) return ascii;
  try {
    return utf8.decode(v);
  } catch {
    throw new Error(`header '${name}' is not UTF-8`);
  }
}

/** Short all-ASCII bytes as a string without a decoder call (most headers). */
function asciiText(b: Uint8Array): string | undefined {
  if (b.length > 64) return undefined;
  let s = "";
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (c > 0x7f) return undefined;
    s += String.fromCharCode(c);
  }
  return s;
}

/** Bytes as base64, in chunks (one spread of a large array overflows). */
function base64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/** Every header as strings (undecodable ones as base64). */
export function headerStrings(
  headers: FetchedHeaders | undefined,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of Object.keys(headers ?? {})) {
    try {
      const v = headerValue(headers, name);
      if (v !== undefined) out[name] = v;
    } catch {
      const raw = headers![name];
      const b = Array.isArray(raw) ? raw[raw.length - 1] : raw;
      if (b instanceof Uint8Array) out[name] = base64(b);
    }
  }
  return out;
}

function jsonHeader(headers: FetchedHeaders | undefined, name: string) {
  const v = headerValue(headers, name);
  if (v === undefined) return undefined;
  try {
    return JSON.parse(v);
  } catch {
    throw new Error(`header '${name}' is not JSON: ${v.slice(0, 80)}`);
  }
}

/** A fetched record as {@linkcode decodeRecord} takes it. */
export interface FetchedRecord {
  key: Uint8Array | string | null;
  value: Uint8Array | string | null;
  headers?: FetchedHeaders;
  /** Epoch ms (the record's CreateTime or LogAppendTime). */
  timestamp: number;
  partition: number;
  offset: string;
}

function text(v: Uint8Array | string | null, what: string): string | null {
  if (v === null || typeof v === "string") return v;
  try {
    return utf8.decode(v);
  } catch {
    throw new Error(`${what} is not UTF-8`);
  }
}

/** Headers whose values are envelope members (each appears in its JSON). */
const MEMBER_HEADERS = [
  H.id,
  H.type,
  H.topic,
  H.source,
  H.timestamp,
  H.priority,
  H.headers,
  H.delivery,
  H.destination,
  H.correlationId,
  H.replyTo,
  H.ttlMs,
];

/**
 * Bytes of a record's value and envelope-member headers. Each of those
 * appears in the envelope's JSON, so a record Plexus published within
 * `maxMessageBytes` never counts more.
 */
function memberBytes(record: FetchedRecord): number {
  const size = (v: Uint8Array | string | null | undefined) =>
    v == null ? 0 : typeof v === "string" ? utf8Length(v) : v.length;
  let n = size(record.value);
  for (const name of MEMBER_HEADERS) {
    const v = record.headers?.[name];
    if (Array.isArray(v)) { for (const x of v) n += size(x); }
    else n += size(v);
  }
  return n;
}

const encoder = new TextEncoder();
function utf8Length(s: string): number {
  return encoder.encode(s).length;
}

/**
 * Record → envelope. Missing headers take defaults so tools need only a
 * value: id `{kafkaTopic}-{partition}-{offset}`, type `event`, source
 * `kafka`, timestamp = the record's, topic = `topic`. A value that is not
 * JSON is taken as a string payload; an empty value is `null`. Throws, with
 * the reason, on a record that cannot be an envelope (bad UTF-8, a
 * `plexus-*` header of the wrong shape, or more than `maxBytes` of value
 * and envelope-member headers).
 *
 * @example Usage
 * ```ts
 * import { decodeRecord } from "./wire.ts";
 * const { envelope } = decodeRecord({ key: null, value: "hello", timestamp: 1, partition: 0, offset: "7" }, "orders", "plexus.orders");
 * envelope.payload; // "hello"
 * envelope.id; // "plexus.orders-0-7"
 * ```
 */
export function decodeRecord(
  record: FetchedRecord,
  topic: string,
  kafkaTopicName: string,
  maxBytes = Infinity,
): {
  envelope: Envelope;
  key?: string;
  attempt: number;
  errors: AttemptError[];
  notBefore: number;
} {
  const h = record.headers;
  const where = `record ${kafkaTopicName}/${record.partition}@${record.offset}`;
  if (maxBytes !== Infinity) {
    const bytes = memberBytes(record);
    if (bytes > maxBytes) {
      throw new Error(
        `${where} is ${bytes} bytes; the limit is ${maxBytes} bytes`,
      );
    }
  }
  const raw = text(record.value, `${where} value`);
  let payload: unknown = null;
  if (raw !== null && raw !== "") {
    try {
      payload = JSON.parse(raw);
    } catch {
      payload = raw;
    }
  }
  const num = (name: string) => {
    const v = headerValue(h, name);
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n)) {
      throw new Error(`header '${name}' is not a number: ${v.slice(0, 40)}`);
    }
    return n;
  };
  const input = {
    id: headerValue(h, H.id) ??
      `${kafkaTopicName}-${record.partition}-${record.offset}`,
    type: headerValue(h, H.type) ?? "event",
    topic: headerValue(h, H.topic) ?? topic,
    source: headerValue(h, H.source) ?? "kafka",
    timestamp: num(H.timestamp) ?? record.timestamp,
    priority: num(H.priority),
    payload,
    headers: jsonHeader(h, H.headers),
    delivery: jsonHeader(h, H.delivery),
    destination: jsonHeader(h, H.destination),
    correlationId: headerValue(h, H.correlationId),
    replyTo: headerValue(h, H.replyTo),
    ttlMs: num(H.ttlMs),
  };
  for (const k of Object.keys(input) as (keyof typeof input)[]) {
    if (input[k] === undefined && k !== "payload") delete input[k];
  }
  const parsed = safeParseEnvelope(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(
      `${where} is not an envelope: ${issue.path.join(".")}: ${issue.message}`,
    );
  }
  const envelope = parsed.data;
  const errors = jsonHeader(h, H.errors) ?? [];
  if (!Array.isArray(errors)) {
    throw new Error(`header '${H.errors}' is not a JSON array`);
  }
  const key = text(record.key, `${where} key`);
  return {
    envelope,
    key: key ?? undefined,
    attempt: num(H.attempt) ?? 1,
    errors: errors as AttemptError[],
    notBefore: num(H.notBefore) ?? 0,
  };
}

/** Headers a dead letter adds to the original record's. */
export function deadLetterHeaders(
  d: Omit<DeadLetter, "envelope" | "topic"> & { origin: string },
): Record<string, string> {
  return {
    [H.dlqReason]: d.reason,
    [H.dlqAttempts]: String(d.attempts),
    [H.errors]: JSON.stringify(d.errors),
    [H.dlqGroup]: d.group ?? "",
    [H.dlqAt]: String(d.deadAt),
    [H.dlqOrigin]: d.origin,
  };
}

/**
 * A DLQ record → {@linkcode DeadLetter}. A record that was dead-lettered
 * because it could not be decoded keeps its raw value (as a string, or
 * base64 if not UTF-8) and headers as the payload `{value, headers}`.
 */
export function decodeDeadLetter(
  record: FetchedRecord,
  topic: string,
  kafkaTopicName: string,
): DeadLetter {
  const h = record.headers;
  const str = (name: string) => {
    try {
      return headerValue(h, name);
    } catch {
      return undefined;
    }
  };
  let envelope: Envelope | undefined;
  // A bad message is dead-lettered as it came: kept raw, even when it
  // decodes here (an oversize one does, without a limit).
  if (!str(H.dlqReason)?.startsWith("bad_message: ")) {
    try {
      envelope = decodeRecord(record, topic, kafkaTopicName).envelope;
    } catch { /* kept raw below */ }
  }
  if (envelope === undefined) {
    let value: string | null;
    try {
      value = text(record.value, "value");
    } catch {
      value = base64(record.value as Uint8Array);
    }
    envelope = parseEnvelope({
      id: (str(H.id) ||
        `${kafkaTopicName}-${record.partition}-${record.offset}`).slice(0, 128),
      type: "event",
      topic,
      source: "kafka",
      timestamp: record.timestamp,
      payload: { value, headers: headerStrings(h) },
    });
  }
  let errors: AttemptError[] = [];
  try {
    const e = JSON.parse(str(H.errors) ?? "[]");
    if (Array.isArray(e)) errors = e;
  } catch { /* a garbled history is dropped, the letter kept */ }
  return {
    envelope,
    topic,
    group: str(H.dlqGroup) || undefined,
    reason: str(H.dlqReason) ?? "",
    attempts: Number(str(H.dlqAttempts) ?? 0),
    errors,
    deadAt: Number(str(H.dlqAt) ?? record.timestamp),
  };
}
