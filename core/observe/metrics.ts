/**
 * A small Prometheus metrics registry: counters, gauges and histograms with
 * labels, rendered in the Prometheus text exposition format (0.0.4).
 *
 * With OTel on (`OTEL_DENO=true`) every family is also exported through the
 * OTel meter, read at each collection (core/observe/otel.ts).
 *
 * @module
 */
import { observeMetric, otelEnabled } from "./otel.ts";

/** Label values keyed by label name. */
export type Labels = Record<string, string>;

/** A monotonically increasing counter. */
export interface Counter {
  /** Adds `by` (default 1, never negative) to the series for `labels`. */
  inc(labels?: Labels, by?: number): void;
  /** The series' current value (0 before the first `inc`). */
  get(labels?: Labels): number;
  /** The series for `labels`, bound once so hot paths skip label encoding. */
  labels(labels: Labels): { inc(by?: number): void };
}
/** A value that goes up and down, or is read on collection. */
export interface Gauge {
  /** Sets the series for `labels` to `value`. */
  set(value: number, labels?: Labels): void;
  /** Adds `by` (default 1; negative to decrease) to the series for `labels`. */
  inc(labels?: Labels, by?: number): void;
  /** The series' current value (0 before it is set). */
  get(labels?: Labels): number;
  /** Drops the series for `labels` (keeps label sets bounded, e.g. per connected client). */
  remove(labels?: Labels): void;
}
/** A histogram with cumulative buckets. */
export interface Histogram {
  /** Records one observation in the series for `labels`. */
  observe(value: number, labels?: Labels): void;
  /** The series for `labels`, bound once so hot paths skip label encoding. */
  labels(labels: Labels): { observe(value: number): void };
  /** Count and sum for one label set. */
  get(labels?: Labels): { count: number; sum: number };
}

/** Registers and renders metrics. Metric names must start with the prefix. */
export interface MetricsRegistry {
  /**
   * The counter `name` with its `help` text, registered on first use (the
   * same one again after that).
   */
  counter(name: string, help: string): Counter;
  /**
   * The gauge `name`, registered on first use; `collect`, if given, runs
   * each time the registry is rendered or read as JSON, to set the value.
   */
  gauge(name: string, help: string, collect?: () => void): Gauge;
  /**
   * The histogram `name`, registered on first use, with the upper bounds of
   * its buckets (default: the Prometheus client's latency buckets, seconds).
   */
  histogram(name: string, help: string, buckets?: number[]): Histogram;
  /** Prometheus text exposition. */
  render(): string;
  /** Every series as plain JSON. */
  toJSON(): Record<string, unknown>;
}

/** Default latency buckets in seconds (Prometheus client defaults). */
export const DEFAULT_BUCKETS = [
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

const validLabels = new Set<string>();

function labelKey(labels: Labels | undefined): string {
  if (!labels) return "";
  const names = Object.keys(labels);
  if (names.length === 0) return "";
  if (names.length > 1) names.sort();
  let out = "";
  for (const n of names) {
    if (!validLabels.has(n)) {
      if (!LABEL_RE.test(n)) {
        throw new TypeError(`Cannot use metric label: invalid name '${n}'`);
      }
      validLabels.add(n);
    }
    out += `${out ? "," : ""}${n}="${escapeLabel(String(labels[n]))}"`;
  }
  return out;
}

const NEEDS_ESCAPE = /[\\\n"]/;

function escapeLabel(v: string): string {
  if (!NEEDS_ESCAPE.test(v)) return v;
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function fmt(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}

type Family =
  | {
    type: "counter" | "gauge";
    help: string;
    series: Map<string, number>;
    collect?: () => void;
  }
  | {
    type: "histogram";
    help: string;
    buckets: number[];
    series: Map<string, { counts: number[]; count: number; sum: number }>;
  };

// The same series through OTel (OTEL_DENO=true), read at each collection;
// a histogram as Prometheus shows it: cumulative _bucket{le}, _sum, _count.
function exportFamily(name: string, f: Family): void {
  if (f.type !== "histogram") {
    observeMetric(name, f.help, f.type === "counter", () => {
      f.collect?.();
      return f.series;
    });
    return;
  }
  const sep = (k: string) => (k ? "," : "");
  observeMetric(`${name}_bucket`, f.help, true, function* () {
    for (const [k, s] of f.series) {
      for (let i = 0; i < f.buckets.length; i++) {
        yield [`${k}${sep(k)}le="${fmt(f.buckets[i])}"`, s.counts[i]];
      }
      yield [`${k}${sep(k)}le="+Inf"`, s.count];
    }
  });
  observeMetric(`${name}_sum`, f.help, true, function* () {
    for (const [k, s] of f.series) yield [k, s.sum];
  });
  observeMetric(`${name}_count`, f.help, true, function* () {
    for (const [k, s] of f.series) yield [k, s.count];
  });
}

/**
 * Creates a registry whose metric names must all start with `prefix`.
 *
 * @example Usage
 * ```ts
 * import { createMetrics } from "./metrics.ts";
 * const m = createMetrics("plexus_");
 * m.counter("plexus_jobs_total", "Jobs done").inc({ kind: "a" });
 * m.render().includes('plexus_jobs_total{kind="a"} 1');
 * ```
 */
export function createMetrics(prefix = "plexus_"): MetricsRegistry {
  const families = new Map<string, Family>();

  function register<F extends Family>(name: string, family: F): F {
    if (!NAME_RE.test(name) || !name.startsWith(prefix)) {
      throw new TypeError(
        `Cannot register metric: name must match ${NAME_RE} and start with '${prefix}', got '${name}'`,
      );
    }
    const existing = families.get(name);
    if (existing) {
      if (existing.type !== family.type) {
        throw new TypeError(
          `Cannot register metric '${name}' as ${family.type}: already a ${existing.type}`,
        );
      }
      return existing as F;
    }
    families.set(name, family);
    if (otelEnabled) exportFamily(name, family);
    return family;
  }

  return {
    counter(name, help) {
      const f = register(name, { type: "counter", help, series: new Map() });
      return {
        inc(labels, by = 1) {
          if (by < 0) {
            throw new RangeError(`Cannot decrease counter '${name}' by ${by}`);
          }
          const k = labelKey(labels);
          f.series.set(k, (f.series.get(k) ?? 0) + by);
        },
        get: (labels) => f.series.get(labelKey(labels)) ?? 0,
        labels(labels) {
          const k = labelKey(labels);
          if (!f.series.has(k)) f.series.set(k, 0);
          return {
            inc(by = 1) {
              if (by < 0) {
                throw new RangeError(
                  `Cannot decrease counter '${name}' by ${by}`,
                );
              }
              f.series.set(k, f.series.get(k)! + by);
            },
          };
        },
      };
    },
    gauge(name, help, collect) {
      const f = register(name, {
        type: "gauge",
        help,
        series: new Map(),
        collect,
      });
      return {
        set(value, labels) {
          f.series.set(labelKey(labels), value);
        },
        inc(labels, by = 1) {
          const k = labelKey(labels);
          f.series.set(k, (f.series.get(k) ?? 0) + by);
        },
        get: (labels) => f.series.get(labelKey(labels)) ?? 0,
        remove(labels) {
          f.series.delete(labelKey(labels));
        },
      };
    },
    histogram(name, help, buckets = DEFAULT_BUCKETS) {
      const sorted = [...buckets].sort((a, b) => a - b);
      const f = register(name, {
        type: "histogram",
        help,
        buckets: sorted,
        series: new Map(),
      });
      const series = (k: string) => {
        let s = f.series.get(k);
        if (!s) {
          s = { counts: new Array(f.buckets.length).fill(0), count: 0, sum: 0 };
          f.series.set(k, s);
        }
        return s;
      };
      const record = (
        s: { counts: number[]; count: number; sum: number },
        value: number,
      ) => {
        s.count++;
        s.sum += value;
        for (let i = 0; i < f.buckets.length; i++) {
          if (value <= f.buckets[i]) s.counts[i]++;
        }
      };
      return {
        observe(value, labels) {
          record(series(labelKey(labels)), value);
        },
        labels(labels) {
          const s = series(labelKey(labels));
          return { observe: (value: number) => record(s, value) };
        },
        get(labels) {
          const s = f.series.get(labelKey(labels));
          return { count: s?.count ?? 0, sum: s?.sum ?? 0 };
        },
      };
    },
    render() {
      const lines: string[] = [];
      for (const [name, f] of families) {
        if (f.type !== "histogram") f.collect?.();
        lines.push(
          `# HELP ${name} ${
            f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")
          }`,
        );
        lines.push(`# TYPE ${name} ${f.type}`);
        if (f.type === "histogram") {
          for (const [k, s] of f.series) {
            const sep = k ? "," : "";
            for (let i = 0; i < f.buckets.length; i++) {
              lines.push(
                `${name}_bucket{${k}${sep}le="${fmt(f.buckets[i])}"} ${
                  s.counts[i]
                }`,
              );
            }
            lines.push(`${name}_bucket{${k}${sep}le="+Inf"} ${s.count}`);
            lines.push(`${name}_sum${k ? `{${k}}` : ""} ${fmt(s.sum)}`);
            lines.push(`${name}_count${k ? `{${k}}` : ""} ${s.count}`);
          }
        } else {
          for (const [k, v] of f.series) {
            lines.push(`${name}${k ? `{${k}}` : ""} ${fmt(v)}`);
          }
        }
      }
      return lines.join("\n") + "\n";
    },
    toJSON() {
      const out: Record<string, unknown> = {};
      for (const [name, f] of families) {
        if (f.type !== "histogram") f.collect?.();
        out[name] = {
          type: f.type,
          series: [...f.series].map(([k, v]) => ({ labels: k, value: v })),
        };
      }
      return out;
    },
  };
}
