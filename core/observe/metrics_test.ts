import assert from "node:assert/strict";
// @ts-types="./_prometheus_parser.d.ts"
import parsePrometheus from "parse-prometheus-text-format";
import { createMetrics } from "./metrics.ts";

Deno.test("metrics: counters, gauges and histograms render as parseable Prometheus text", () => {
  const m = createMetrics("plexus_");
  const c = m.counter("plexus_jobs_total", "Jobs done");
  c.inc({ kind: "a" });
  c.inc({ kind: "a" }, 2);
  c.inc({ kind: 'we"ird\\\n' });
  let collected = 0;
  const g = m.gauge("plexus_depth", "Queue depth", () => g.set(++collected));
  const h = m.histogram("plexus_latency_seconds", "Latency", [0.1, 1]);
  h.observe(0.05, { route: "/x" });
  h.observe(0.5, { route: "/x" });
  h.observe(5, { route: "/x" });
  m.histogram("plexus_plain_seconds", "Unlabelled").observe(0.2);
  const families = parsePrometheus(m.render());
  const byName = Object.fromEntries(families.map((f) => [f.name, f]));
  assert.equal(byName.plexus_jobs_total.type, "COUNTER");
  const a = byName.plexus_jobs_total.metrics.find((s) =>
    s.labels?.kind === "a"
  );
  assert.equal(a?.value, "3");
  assert.ok(
    byName.plexus_jobs_total.metrics.some((s) =>
      s.labels?.kind === 'we"ird\\\n'
    ),
  );
  assert.equal(
    byName.plexus_depth.metrics[0].value,
    "1",
    "collect runs at render",
  );
  // The npm parser flattens labelled histograms to their buckets, so count
  // and sum are checked on an unlabelled one.
  const hist = byName.plexus_latency_seconds;
  assert.equal(hist.type, "HISTOGRAM");
  assert.deepEqual(hist.metrics[0].buckets, {
    "0.1": "1",
    "1": "2",
    "+Inf": "3",
  });
  assert.equal(byName.plexus_plain_seconds.metrics[0].count, "1");
  assert.equal(byName.plexus_plain_seconds.metrics[0].sum, "0.2");
  assert.deepEqual(h.get({ route: "/x" }), { count: 3, sum: 5.55 });
});

Deno.test("metrics: bad names, label names and negative increments are refused", () => {
  const m = createMetrics("plexus_");
  assert.throws(
    () => m.counter("jobs_total", "x"),
    /start with 'plexus_', got 'jobs_total'/,
  );
  assert.throws(
    () => m.counter("plexus_bad-name", "x"),
    /got 'plexus_bad-name'/,
  );
  const c = m.counter("plexus_ok_total", "x");
  assert.throws(() => c.inc({ "bad-label": "1" }), /invalid name 'bad-label'/);
  assert.throws(() => c.inc({}, -1), /Cannot decrease counter/);
  assert.throws(() => m.gauge("plexus_ok_total", "x"), /already a counter/);
  m.counter("plexus_ok_total", "x").inc();
  assert.equal(c.get(), 1, "registering the same name again shares the series");
});

Deno.test("metrics: bound series count into the same series as labelled calls", () => {
  const m = createMetrics("plexus_");
  const c = m.counter("plexus_bound_total", "x");
  const bound = c.labels({ route: "/a", method: "GET" });
  bound.inc();
  bound.inc(2);
  c.inc({ method: "GET", route: "/a" });
  assert.equal(c.get({ route: "/a", method: "GET" }), 4);
  assert.throws(() => bound.inc(-1), /Cannot decrease/);
  const h = m.histogram("plexus_bound_seconds", "x", [1]);
  h.labels({ route: "/a" }).observe(0.5);
  h.observe(2, { route: "/a" });
  assert.deepEqual(h.get({ route: "/a" }), { count: 2, sum: 2.5 });
});
