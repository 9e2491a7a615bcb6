/**
 * OpenTelemetry for Plexus's own work: spans around HTTP routes, tasks,
 * transports, plugins and consensus, W3C `traceparent` propagation and the
 * ids of the active span for log records.
 *
 * Deno exports what `npm:@opentelemetry/api` records when the process runs
 * with `OTEL_DENO=true` (and `OTEL_EXPORTER_OTLP_ENDPOINT`); otherwise the API
 * is a no-op. {@linkcode otelEnabled} is read once at start-up and every
 * helper here is a plain call when it is false, so call sites cost one
 * boolean test with OTel off (measured in docs/telemetry.md).
 *
 * @module
 */
import {
  type Attributes,
  type Context,
  context,
  metrics,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
} from "@opentelemetry/api";
import type { Transport } from "../transport.ts";

function readEnabled(): boolean {
  try {
    // A sandboxed plugin may lack env access: it then records nothing.
    const q = Deno.permissions.querySync({
      name: "env",
      variable: "OTEL_DENO",
    });
    if (q.state !== "granted") return false;
    const v = Deno.env.get("OTEL_DENO")?.toLowerCase();
    return v === "true" || v === "1";
  } catch {
    return false;
  }
}

/** Whether this process exports telemetry (`OTEL_DENO=true` at start-up). */
export const otelEnabled: boolean = readEnabled();

function readConsoleMode(): "capture" | "replace" | "ignore" {
  try {
    const q = Deno.permissions.querySync({
      name: "env",
      variable: "OTEL_DENO_CONSOLE",
    });
    if (q.state !== "granted") return "capture";
    const v = Deno.env.get("OTEL_DENO_CONSOLE")?.toLowerCase();
    return v === "replace" || v === "ignore" ? v : "capture";
  } catch {
    return "capture";
  }
}

/**
 * What Deno does with console output when OTel is on (`OTEL_DENO_CONSOLE`):
 * `capture` (its default) prints it and exports it, `replace` only exports
 * it, `ignore` only prints it.
 */
export const otelConsoleMode: "capture" | "replace" | "ignore" =
  readConsoleMode();

const tracer = trace.getTracer("plexus");

/** Span kinds Plexus uses (OpenTelemetry's `SpanKind`). */
export const Kind = SpanKind;

/** Options for {@linkcode span}. */
export interface SpanOptions {
  /** The span's kind. @default {Kind.INTERNAL} */
  kind?: SpanKind;
  /**
   * A W3C `traceparent` to continue (from a message or a stored task)
   * instead of the active span. When the key is present but the value is
   * missing or malformed the span starts a new trace: work picked up from a
   * queue must not become a child of whatever started the loop.
   */
  parent?: string;
  /** When the span started, epoch ms (e.g. a claim made before the span). */
  startTime?: number;
}

const TRACEPARENT_RE = /^00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

function parentContext(options: SpanOptions): Context {
  if (!("parent" in options)) return context.active();
  const traceparent = options.parent;
  if (traceparent === undefined || !TRACEPARENT_RE.test(traceparent)) {
    return ROOT_CONTEXT;
  }
  return propagation.extract(ROOT_CONTEXT, { traceparent });
}

function fail(s: Span, err: unknown): void {
  s.recordException(err instanceof Error ? err : String(err));
  s.setStatus({
    code: SpanStatusCode.ERROR,
    message: err instanceof Error ? err.message : String(err),
  });
}

/**
 * Runs `fn` inside a new active span named `name` with `attrs`; the span ends
 * when `fn` returns or its promise settles, with status ERROR if it throws.
 * With OTel off it is `fn()`.
 *
 * @example Usage
 * ```ts
 * import { span } from "./otel.ts";
 * const n = await span("task.run", { "task.type": "echo" }, () => Promise.resolve(1));
 * ```
 */
export function span<T>(
  name: string,
  attrs: Attributes,
  fn: (s: Span | undefined) => T,
  options: SpanOptions = {},
): T {
  if (!otelEnabled) return fn(undefined);
  return tracer.startActiveSpan(
    name,
    { attributes: attrs, kind: options.kind, startTime: options.startTime },
    parentContext(options),
    (s) => {
      let out: T;
      try {
        out = fn(s);
      } catch (err) {
        fail(s, err);
        s.end();
        throw err;
      }
      if (out instanceof Promise) {
        return out.then(
          (v) => {
            s.end();
            return v;
          },
          (err) => {
            fail(s, err);
            s.end();
            throw err;
          },
        ) as T;
      }
      s.end();
      return out;
    },
  );
}

/**
 * Runs `fn` with the server span of HTTP request `req`: Deno's own when it
 * made one for this request (it has already continued an incoming
 * `traceparent`; a second span per request would double the cost), else a
 * new SERVER span continuing the request's `traceparent`. The caller names it
 * `{METHOD} {route}` and sets `http.route` once routed. With OTel off it is
 * `fn(undefined)`.
 *
 * @example Usage
 * ```ts
 * import { serverSpan } from "./otel.ts";
 * const req = new Request("http://localhost/health");
 * serverSpan(req, (s) => s?.setAttribute("http.route", "/health"));
 * ```
 */
export function serverSpan<T>(
  req: Request,
  fn: (s: Span | undefined) => T,
): T {
  if (!otelEnabled) return fn(undefined);
  const deno = trace.getActiveSpan();
  if (deno) return fn(deno);
  return span(req.method, { "http.request.method": req.method }, fn, {
    kind: Kind.SERVER,
    parent: req.headers.get("traceparent") ?? "",
  });
}

/**
 * Returns `work` and, with OTel on, records a span named `name` from now
 * until it settles (ERROR if it rejects), a child of the active span. Unlike
 * {@linkcode span} the span is not made active, so what `work` starts does
 * not inherit it (a plugin's setup starts loops that outlive it).
 *
 * @example Usage
 * ```ts
 * import { timed } from "./otel.ts";
 * await timed("plugin.stop", { "plexus.plugin": "p" }, Promise.resolve());
 * ```
 */
export function timed<T>(
  name: string,
  attrs: Attributes,
  work: Promise<T>,
): Promise<T> {
  if (!otelEnabled) return work;
  const s = tracer.startSpan(name, { attributes: attrs });
  work.then(() => s.end(), (err) => {
    fail(s, err);
    s.end();
  });
  return work;
}

/**
 * The W3C `traceparent` of the active span, to carry in a message or a stored
 * task; undefined with OTel off or outside any span.
 *
 * @example Usage
 * ```ts
 * import { currentTraceparent, span } from "./otel.ts";
 * span("task.submit", {}, () => currentTraceparent());
 * ```
 */
export function currentTraceparent(): string | undefined {
  if (!otelEnabled) return undefined;
  const carrier: Record<string, string> = {};
  propagation.inject(context.active(), carrier);
  return carrier.traceparent;
}

/**
 * The trace and span ids of the active span (for log records); undefined
 * with OTel off or outside any span.
 *
 * @example Usage
 * ```ts
 * import { activeIds } from "./otel.ts";
 * const ids = activeIds(); // { traceId, spanId } inside a span
 * ```
 */
export function activeIds(): { traceId: string; spanId: string } | undefined {
  if (!otelEnabled) return undefined;
  const s = trace.getActiveSpan();
  if (!s) return undefined;
  const { traceId, spanId } = s.spanContext();
  return { traceId, spanId };
}

/**
 * The trace id of a W3C `traceparent`, or undefined when it is malformed
 * (all-zero ids are invalid too).
 *
 * @example Usage
 * ```ts
 * import { traceIdOf } from "./otel.ts";
 * traceIdOf(`00-${"ab".repeat(16)}-${"cd".repeat(8)}-01`); // "abab…"
 * ```
 */
export function traceIdOf(traceparent: string | null | undefined):
  | string
  | undefined {
  if (!traceparent) return undefined;
  const m = TRACEPARENT_RE.exec(traceparent);
  if (!m || /^0+$/.test(m[1]) || /^0+$/.test(m[2])) return undefined;
  return m[1];
}

const meter = metrics.getMeter("plexus");
const LABEL_PAIR = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

function labelAttrs(key: string): Attributes {
  const out: Attributes = {};
  for (const m of key.matchAll(LABEL_PAIR)) {
    out[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
  }
  return out;
}

/**
 * Exports one series family of the Prometheus registry through the OTel
 * meter: an observable instrument that runs `read` at each OTel collection
 * and reports its `[labelKey, value]` pairs (`k="v",…`, as the registry keys
 * them). Counters are monotonic; gauges are not. A no-op with OTel off.
 *
 * @example Usage
 * ```ts
 * import { observeMetric } from "./otel.ts";
 * observeMetric("plexus_jobs_total", "Jobs done", true, () => [['kind="a"', 1]]);
 * ```
 */
export function observeMetric(
  name: string,
  help: string,
  monotonic: boolean,
  read: () => Iterable<[string, number]>,
): void {
  if (!otelEnabled) return;
  const instrument = monotonic
    ? meter.createObservableCounter(name, { description: help })
    : meter.createObservableGauge(name, { description: help });
  instrument.addCallback((result) => {
    for (const [key, value] of read()) result.observe(value, labelAttrs(key));
  });
}

/**
 * Wraps a transport so that, with OTel on, each publish is a PRODUCER span
 * whose W3C `traceparent` travels in the envelope's headers, and each
 * delivery to a subscriber is a CONSUMER span continuing it — on whichever
 * node receives it. Everything else passes through. With OTel off it returns
 * `transport` itself.
 *
 * @example Usage
 * ```ts ignore
 * import { tracedTransport } from "./otel.ts";
 * const api = tracedTransport(await connect(config));
 * ```
 */
export function tracedTransport<T extends Transport>(transport: T): T {
  if (!otelEnabled) return transport;
  const system = transport.name;
  const attrs = (topic: string, id: string): Attributes => ({
    "messaging.system": system,
    "messaging.destination.name": topic,
    "messaging.message.id": id,
  });
  const publish: Transport["publish"] = (topic, envelope, opts) =>
    span(`${topic} publish`, attrs(topic, envelope.id), () => {
      const traceparent = currentTraceparent();
      const sent = traceparent
        ? { ...envelope, headers: { ...envelope.headers, traceparent } }
        : envelope;
      return transport.publish(topic, sent, opts);
    }, { kind: Kind.PRODUCER });
  const subscribe: Transport["subscribe"] = (topic, handler, opts) =>
    transport.subscribe(topic, (d) =>
      span(
        `${d.topic} deliver`,
        { ...attrs(d.topic, d.envelope.id), "messaging.attempt": d.attempts },
        () => handler(d),
        { kind: Kind.CONSUMER, parent: d.envelope.headers?.traceparent },
      ), opts);
  return new Proxy(transport, {
    get(target, prop) {
      if (prop === "publish") return publish;
      if (prop === "subscribe") return subscribe;
      const v = Reflect.get(target, prop, target);
      // Bound to the transport itself: its methods may use private fields.
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}
