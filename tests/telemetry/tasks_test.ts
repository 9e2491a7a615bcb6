/**
 * One trace across two real nodes: a task submitted over HTTP on node A and
 * run on node B (sharing one KV file) is one trace in the OTLP receiver —
 * A's route and submit spans, B's claim, run and ack spans as their children
 * — with log records carrying its trace id and `plexus_*` metrics exported.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { startPlexus } from "../integration/_process.ts";
import {
  assertContinues,
  otelEnv,
  type ReceivedSpan,
  startReceiver,
} from "./_receiver.ts";

Deno.test("telemetry: a task submitted on node A and run on node B is one trace with route, submit, claim, run and ack spans; its log records and plexus_* metrics arrive", async () => {
  await using rx = startReceiver();
  const dir = await Deno.makeTempDir({ prefix: "plexus-otel-" });
  const kv = join(dir, "shared.kv");
  const node = (id: string, config: unknown) => {
    const file = join(dir, `${id}.json`);
    Deno.writeTextFileSync(file, JSON.stringify(config));
    return startPlexus({
      args: ["--kv", kv, "--node-id", id, "--config", file],
      allowWrite: [dir],
      env: otelEnv(rx.url, `plexus-${id}`),
    });
  };
  // A runs one task at a time and is kept busy, so only B can claim the next.
  const a = await node("a", { tasks: { concurrency: 1 } });
  let b: Awaited<ReturnType<typeof node>> | undefined;
  try {
    const post = (body: unknown, headers: Record<string, string> = {}) =>
      a.api("/api/v1/tasks", {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: JSON.stringify(body),
      }, "analyst");
    const blocker = await (await post({
      type: "sleep",
      payload: { ms: 600_000 },
    })).json();
    await rx.until(
      () =>
        rx.spans.some((s) =>
          s.name === "task.claim" && s.service === "plexus-a" &&
          s.attributes["plexus.task.id"] === blocker.id
        ),
      "node A's claim of the blocking task",
    );
    b = await node("b", {});

    const traceId = "5b8efff798038103d269b633813fc60c";
    const caller = "eee19b7ec3c1b174";
    const res = await post({ type: "echo", payload: { n: 1 } }, {
      traceparent: `00-${traceId}-${caller}-01`,
    });
    const { id } = await res.json();
    assert.equal(res.status, 202);

    const inTrace = (name: string, service: string) =>
      rx.spans.find((s) =>
        s.traceId === traceId && s.name === name && s.service === service
      );
    // Each node exports on its own schedule: wait for all five.
    await rx.until(
      () =>
        [
          inTrace("POST /api/v1/tasks", "plexus-a"),
          inTrace("task.submit", "plexus-a"),
          inTrace("task.claim", "plexus-b"),
          inTrace("task.run", "plexus-b"),
          inTrace("task.ack", "plexus-b"),
        ].every((s) => s !== undefined),
      "A's route and submit spans and B's claim, run and ack spans in one trace",
    );
    const route = inTrace("POST /api/v1/tasks", "plexus-a")!;
    const submit = inTrace("task.submit", "plexus-a")!;
    const claim = inTrace("task.claim", "plexus-b")!;
    const run = inTrace("task.run", "plexus-b")!;
    const ack = inTrace("task.ack", "plexus-b")!;
    const names = () =>
      rx.spans.filter((s: ReceivedSpan) => s.traceId === traceId)
        .map((s) => `${s.service}:${s.name}`).join(", ");
    for (const [name, s] of Object.entries({ route, submit, claim, run })) {
      assert.ok(s, `${name} span missing: ${names()}`);
    }
    await assertContinues(rx, route, caller);
    assert.equal(route.attributes["http.route"], "/api/v1/tasks");
    assert.equal(submit.parentSpanId, route.spanId);
    assert.equal(submit.kind, 4); // PRODUCER
    assert.equal(submit.attributes["plexus.task.id"], id);
    for (const s of [claim, run]) {
      assert.equal(s.parentSpanId, submit.spanId, s.name);
      assert.equal(s.kind, 5); // CONSUMER
      assert.equal(s.attributes["plexus.task.id"], id);
      assert.equal(s.attributes["plexus.task.type"], "echo");
      assert.equal(s.attributes["plexus.node"], "b");
      assert.equal(s.attributes["plexus.task.attempt"], 1);
    }
    assert.equal(ack.parentSpanId, run.spanId);
    // Nothing of this trace ran on A after the submit.
    assert.deepEqual(
      rx.spans.filter((s) =>
        s.traceId === traceId && s.service === "plexus-a" && s.name !== "POST"
      ).map((s) => s.name).sort(),
      ["POST /api/v1/tasks", "task.submit"],
    );

    await rx.until(
      () => rx.logs.some((l) => l.traceId === traceId),
      "a log record with the task's trace id",
    );
    const log = rx.logs.find((l) => l.traceId === traceId)!;
    assert.equal(log.service, "plexus-a");
    assert.equal(log.spanId, route.spanId);
    assert.match(log.body, new RegExp(`"trace_id":"${traceId}"`));

    // The Prometheus registry's families, through the OTel meter too.
    const exported = (name: string, service: string) =>
      rx.metrics.get(name)?.has(service) ?? false;
    await rx.until(
      () =>
        exported("plexus_http_requests_total", "plexus-a") &&
        exported("plexus_http_request_duration_seconds_bucket", "plexus-a") &&
        exported("plexus_tasks_completed_total", "plexus-b"),
      "plexus_* metrics from both nodes",
    );
    await rx.until(
      () =>
        rx.points.some((p) =>
          p.name === "plexus_tasks_completed_total" &&
          p.service === "plexus-b" && p.attributes.type === "echo" &&
          p.attributes.outcome === "done" && p.value === 1
        ),
      "node B's count of the echo task it completed, with its labels",
    );
  } finally {
    await b?.close();
    await a.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/** A task type only the node that loads it runs: `whoami` answers the node id. */
const WORKER_PLUGIN = `// generated by tests/telemetry/tasks_test.ts
export default {
  manifest: { name: "worker", version: "1.0.0", kind: "extension", api: "^1",
    provides: ["extension:worker"], requires: ["tasks:local"] },
  setup(ctx) {
    ctx.kernel.get("tasks:local").register("whoami", () => Promise.resolve(ctx.node.id));
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
};
`;

Deno.test("telemetry: a task node A claims and routes to node B continues its trace on B: B's route span of /api/v1/cluster/tasks/run under A's run, and B's own task.run under it", async () => {
  await using rx = startReceiver();
  const dir = await Deno.makeTempDir({ prefix: "plexus-otel-routed-" });
  const kv = join(dir, "shared.kv");
  const plugin = join(dir, "worker.js");
  await Deno.writeTextFile(plugin, WORKER_PLUGIN);
  const node = (id: string, args: string[]) =>
    startPlexus({
      args: ["--kv", kv, "--node-id", id, "--balancer", "round-robin", ...args],
      allowWrite: [dir],
      env: otelEnv(rx.url, `plexus-${id}`),
    });
  const b = await node("b", ["--plugin", plugin]);
  const a = await node("a", []); // cannot run whoami: routes what it claims
  try {
    // Until A has read B's heartbeat with its task types, A gives a claimed
    // whoami back; afterwards it routes it.
    await new Promise((r) => setTimeout(r, 1500));
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    for (let i = 0; i < 20; i++) {
      const res = await a.api("/api/v1/tasks", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          traceparent: `00-${traceId}-b7ad6b7169203331-01`,
        },
        body: JSON.stringify({ type: "whoami", payload: null }),
      }, "analyst");
      assert.equal(res.status, 202, await res.text());
    }
    const inTrace = () => rx.spans.filter((s) => s.traceId === traceId);
    // A routed run: A's task.run → B's server span → B's task.run (routed).
    const chain = () => {
      for (const run of inTrace()) {
        if (
          run.service !== "plexus-b" || run.name !== "task.run" ||
          run.attributes["plexus.task.routed"] !== true
        ) continue;
        const route = inTrace().find((s) => s.spanId === run.parentSpanId);
        if (!route) continue;
        const from = inTrace().find((s) => s.spanId === route.parentSpanId);
        if (from) return { run, route, from };
      }
      return undefined;
    };
    await rx.until(
      () => chain() !== undefined,
      "a routed run on B whose route span hangs under A's run",
    );
    const { run, route, from } = chain()!;
    assert.equal(route.service, "plexus-b");
    assert.equal(route.name, "POST /api/v1/cluster/tasks/run");
    assert.equal(route.attributes["http.route"], "/api/v1/cluster/tasks/run");
    assert.equal(from.service, "plexus-a");
    assert.equal(from.name, "task.run");
    assert.equal(run.kind, 5); // CONSUMER
    assert.equal(run.attributes["plexus.task.type"], "whoami");
    assert.equal(
      run.attributes["plexus.task.id"],
      from.attributes["plexus.task.id"],
    );
  } finally {
    await a.close();
    await b.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
