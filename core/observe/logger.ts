/**
 * Structured JSON-lines logger with child loggers and correlation ids.
 *
 * A record is one JSON object per line: `{"ts","level","msg",...fields}`.
 * The correlation id of the current request (set by the HTTP layer through
 * {@linkcode withCorrelation}) is added to every record logged inside it, so
 * plugin logs made while serving a request carry the request's id.
 *
 * With OpenTelemetry on (`OTEL_DENO=true`, see core/observe/otel.ts) a record
 * made inside a span carries `trace_id` and `span_id`, and {@linkcode stdoutSink}
 * writes through `console` so Deno also exports the line as an OTel log record
 * linked to that span.
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { activeIds, otelConsoleMode, otelEnabled } from "./otel.ts";

/** Log levels, lowest first. */
export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
/** A log level name. */
export type LogLevel = typeof LOG_LEVELS[number];

/** One structured log record as written and as fanned out to sinks. */
export interface LogRecord {
  /** When it was logged, ISO 8601. */
  ts: string;
  /** Its level. */
  level: LogLevel;
  /** The message. */
  msg: string;
  /** The record's fields (the logger's, the call's, the correlation id). */
  [field: string]: unknown;
}

/** Receives every record at or above the logger's level. */
export type LogSink = (record: LogRecord) => void;

/** A structured logger. */
export interface Logger {
  /** Logs `msg` with `fields` at level `debug`. */
  debug(msg: string, fields?: Record<string, unknown>): void;
  /** Logs `msg` with `fields` at level `info`. */
  info(msg: string, fields?: Record<string, unknown>): void;
  /** Logs `msg` with `fields` at level `warn`. */
  warn(msg: string, fields?: Record<string, unknown>): void;
  /** Logs `msg` with `fields` at level `error`. */
  error(msg: string, fields?: Record<string, unknown>): void;
  /** A logger whose records all carry `fields`. */
  child(fields: Record<string, unknown>): Logger;
  /** Whether a record at `level` would be written. */
  enabled(level: LogLevel): boolean;
}

const correlation = new AsyncLocalStorage<string>();

/**
 * Runs `fn` with `id` as the correlation id of every record logged inside it.
 *
 * @example Usage
 * ```ts
 * import { createLogger, withCorrelation } from "./logger.ts";
 * const log = createLogger({ sinks: [] });
 * withCorrelation("req-1", () => log.info("handled"));
 * ```
 */
export function withCorrelation<T>(id: string, fn: () => T): T {
  return correlation.run(id, fn);
}

/** The correlation id in force, if any. */
export function currentCorrelationId(): string | undefined {
  return correlation.getStore();
}

/** Options for {@linkcode createLogger}. */
export interface LoggerOptions {
  /** Lowest level written. @default {"info"} */
  level?: LogLevel;
  /** Where records go. @default {[stdoutSink]} */
  sinks?: LogSink[];
  /** Fields on every record. @default {{}} */
  fields?: Record<string, unknown>;
}

const encoder = new TextEncoder();

let isoMs = NaN;
let iso = "";
/**
 * The time as ISO 8601, formatted once per millisecond (~0.65 µs each): a
 * burst of records in one millisecond shares one string.
 *
 * @example Usage
 * ```ts
 * import { isoNow } from "./logger.ts";
 * import assert from "node:assert/strict";
 * assert.ok(!Number.isNaN(Date.parse(isoNow())));
 * ```
 */
export function isoNow(): string {
  const ms = Date.now();
  if (ms !== isoMs) {
    isoMs = ms;
    iso = new Date(ms).toISOString();
  }
  return iso;
}

/** The console method Deno's OTel capture exports at each level's severity. */
const CONSOLE_AT: Record<string, (line: string) => void> = {
  debug: (line) => console.debug(line),
  info: (line) => console.info(line),
  warn: (line) => console.warn(line),
  error: (line) => console.error(line),
};

/**
 * Writes each record as one JSON line to stdout. With OTel on, Deno exports
 * only what goes through `console` (as log records of the active span;
 * `writeSync` is cheaper and invisible to it), and the level of a record is
 * the console method's:
 * - `OTEL_DENO_CONSOLE=replace` (console exported, not printed): the line
 *   goes to stdout with `writeSync` and through the console method of its
 *   level, so warn and error records are exported as WARN and ERROR;
 * - `capture` (Deno's default: printed and exported): through
 *   `console.debug`/`console.info`, the two that print to stdout, so the
 *   JSON lines stay on stdout; warn and error are then exported as INFO (the
 *   `level` field is in the body);
 * - `ignore`, or OTel off: `writeSync` only.
 */
export const stdoutSink: LogSink = otelEnabled && otelConsoleMode === "replace"
  ? (record) => {
    const line = safeStringify(record);
    Deno.stdout.writeSync(encoder.encode(line + "\n"));
    (CONSOLE_AT[record.level] ?? CONSOLE_AT.info)(line);
  }
  : otelEnabled && otelConsoleMode === "capture"
  ? (record) => {
    const line = safeStringify(record);
    if (record.level === "debug") console.debug(line);
    else console.info(line);
  }
  : (record) => {
    Deno.stdout.writeSync(encoder.encode(safeStringify(record) + "\n"));
  };

function errorFields(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { name: err.name, message: err.message };
  if (err.cause !== undefined) {
    out.cause = err.cause instanceof Error ? errorFields(err.cause) : err.cause;
  }
  return out;
}

/** JSON.stringify that turns errors into objects and never throws. */
export function safeStringify(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v) => {
      if (v instanceof Error) return errorFields(v);
      if (typeof v === "bigint") return v.toString();
      return v;
    });
  } catch (err) {
    return JSON.stringify({ unserializable: String(err) });
  }
}

/**
 * Creates a logger.
 *
 * @example Usage
 * ```ts
 * import { createLogger } from "./logger.ts";
 * const seen: string[] = [];
 * const log = createLogger({ sinks: [(r) => seen.push(r.msg)] });
 * log.child({ plugin: "hello" }).info("started");
 * ```
 */
export function createLogger(options: LoggerOptions = {}): Logger {
  const state = {
    min: LOG_LEVELS.indexOf(options.level ?? "info"),
    sinks: options.sinks ?? [stdoutSink],
  };
  return makeLogger(state, options.fields ?? {});
}

function makeLogger(
  state: { min: number; sinks: LogSink[] },
  base: Record<string, unknown>,
): Logger {
  const write = (
    level: LogLevel,
    msg: string,
    fields?: Record<string, unknown>,
  ) => {
    if (LOG_LEVELS.indexOf(level) < state.min) return;
    const record: LogRecord = { ts: isoNow(), level, msg };
    Object.assign(record, base, fields);
    // Errors have no enumerable fields: make them plain so every sink
    // (stdout, the live log stream) sees the message.
    for (const k in fields) {
      const v = fields[k];
      if (v instanceof Error) record[k] = errorFields(v);
    }
    const cid = correlation.getStore();
    if (cid !== undefined && record.correlationId === undefined) {
      record.correlationId = cid;
    }
    if (otelEnabled) {
      const ids = activeIds();
      if (ids) {
        record.trace_id = ids.traceId;
        record.span_id = ids.spanId;
      }
    }
    for (const sink of state.sinks) {
      try {
        sink(record);
      } catch {
        // A failing sink must never break the caller; the others still run.
      }
    }
  };
  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (fields) => makeLogger(state, { ...base, ...fields }),
    enabled: (level) => LOG_LEVELS.indexOf(level) >= state.min,
  };
}
