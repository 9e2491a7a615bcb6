/**
 * A test OTLP/HTTP receiver (JSON encoding): what Deno exports from nodes run
 * with `OTEL_DENO=true`, flattened into spans, log records and metric names.
 *
 * @module
 */

/** One exported span. */
export interface ReceivedSpan {
  service: string;
  name: string;
  kind: number;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  attributes: Record<string, unknown>;
}

/** One metric data point (sum or gauge). */
export interface ReceivedPoint {
  service: string;
  name: string;
  attributes: Record<string, unknown>;
  value: number;
}

/** One exported log record. */
export interface ReceivedLog {
  service: string;
  traceId: string;
  spanId: string;
  body: string;
  /** OTLP `severityText` (INFO, WARN, ERROR, DEBUG). */
  severity: string;
}

/** The receiver and what it has collected so far. */
export interface OtlpReceiver extends AsyncDisposable {
  /** `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`. */
  url: string;
  spans: ReceivedSpan[];
  logs: ReceivedLog[];
  /** Metric name → the services that exported it. */
  metrics: Map<string, Set<string>>;
  /** Every data point received, in order. */
  points: ReceivedPoint[];
  /** Resolves once `ok()` holds after some export; fails after `ms` naming `what`. */
  until(ok: () => boolean, what: string, ms?: number): Promise<void>;
}

type AnyValue = {
  stringValue?: string;
  intValue?: string | number;
  doubleValue?: number;
  boolValue?: boolean;
};
type KeyValue = { key: string; value: AnyValue };

function value(v: AnyValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue);
  if (v.doubleValue !== undefined) return v.doubleValue;
  return v.boolValue;
}

function attrs(list: KeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of list ?? []) out[kv.key] = value(kv.value);
  return out;
}

/** The environment that makes a node export to `url`. */
export function otelEnv(url: string, service: string): Record<string, string> {
  return {
    OTEL_DENO: "true",
    OTEL_EXPORTER_OTLP_ENDPOINT: url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: service,
    OTEL_BSP_SCHEDULE_DELAY: "100",
    OTEL_BLRP_SCHEDULE_DELAY: "100",
    OTEL_METRIC_EXPORT_INTERVAL: "500",
  };
}

/** Starts a receiver on a free loopback port. */
export function startReceiver(): OtlpReceiver {
  const spans: ReceivedSpan[] = [];
  const logs: ReceivedLog[] = [];
  const metrics = new Map<string, Set<string>>();
  const points: ReceivedPoint[] = [];
  const waiters = new Set<() => void>();
  // deno-lint-ignore no-explicit-any -- OTLP JSON, read field by field below
  const ingest = (path: string, body: any) => {
    if (path === "/v1/traces") {
      for (const rs of body.resourceSpans ?? []) {
        const service = String(attrs(rs.resource?.attributes)["service.name"]);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              service,
              name: s.name,
              kind: s.kind,
              traceId: s.traceId,
              spanId: s.spanId,
              parentSpanId: s.parentSpanId ?? "",
              attributes: attrs(s.attributes),
            });
          }
        }
      }
    } else if (path === "/v1/logs") {
      for (const rl of body.resourceLogs ?? []) {
        const service = String(attrs(rl.resource?.attributes)["service.name"]);
        for (const sl of rl.scopeLogs ?? []) {
          for (const r of sl.logRecords ?? []) {
            logs.push({
              service,
              traceId: r.traceId ?? "",
              spanId: r.spanId ?? "",
              body: String(r.body?.stringValue ?? ""),
              severity: String(r.severityText ?? ""),
            });
          }
        }
      }
    } else if (path === "/v1/metrics") {
      for (const rm of body.resourceMetrics ?? []) {
        const service = String(attrs(rm.resource?.attributes)["service.name"]);
        for (const sm of rm.scopeMetrics ?? []) {
          for (const m of sm.metrics ?? []) {
            let set = metrics.get(m.name);
            if (!set) metrics.set(m.name, set = new Set());
            set.add(service);
            for (const p of (m.sum ?? m.gauge)?.dataPoints ?? []) {
              points.push({
                service,
                name: m.name,
                attributes: attrs(p.attributes),
                value: Number(p.asInt ?? p.asDouble),
              });
            }
          }
        }
      }
    }
    for (const w of waiters) w();
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    async (req) => {
      ingest(new URL(req.url).pathname, await req.json());
      return Response.json({});
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    spans,
    logs,
    metrics,
    points,
    until(ok, what, ms = 30_000) {
      if (ok()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const check = () => {
          if (!ok()) return;
          done();
          resolve();
        };
        const timer = setTimeout(() => {
          done();
          reject(new Error(`OTLP receiver: timed out after ${ms} ms: ${what}`));
        }, ms);
        const done = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
      });
    },
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

/**
 * Asserts that the route span `route` continues the caller's span `caller`
 * as a server span: Deno's own span for the request, renamed by the route, or
 * Plexus's where Deno made none. A route span under another server span
 * (what an earlier version made) is accepted when that one continues `caller`.
 */
export async function assertContinues(
  rx: OtlpReceiver,
  route: ReceivedSpan,
  caller: string,
): Promise<void> {
  if (route.parentSpanId === caller) {
    if (route.kind !== 2) throw new Error(`${route.name}: not a server span`);
    return;
  }
  const isParent = (s: ReceivedSpan) => s.spanId === route.parentSpanId;
  await rx.until(() => rx.spans.some(isParent), `${route.name}'s parent span`);
  const deno = rx.spans.find(isParent)!;
  if (deno.parentSpanId !== caller || deno.kind !== 2) {
    throw new Error(
      `${route.name}'s parent ${deno.name} (kind ${deno.kind}) does not continue ${caller}`,
    );
  }
}
