import assert from "node:assert/strict";
import {
  createNodeEvents,
  NODE_EVENT_SCHEMAS,
  type NodeEvent,
  type NodeEvents,
} from "./events.ts";

Deno.test("events: every listener gets each event with the node id, a version and a rising seq", () => {
  const events = createNodeEvents("n7", { now: () => 42 });
  const a: NodeEvent[] = [];
  const b: NodeEvent[] = [];
  events.listen((e) => a.push(e));
  events.listen((e) => b.push(e));
  events.emit("task.started", { taskId: "t1", type: "echo", attempt: 1 });
  events.emit("cluster.leader.changed", { leader: null, epoch: 3 });
  assert.deepEqual(a, b);
  assert.deepEqual(
    a.map(({ type, version, at, node, seq, data }) => ({
      type,
      version,
      at,
      node,
      seq,
      data,
    })),
    [
      {
        type: "task.started",
        version: 1,
        at: 42,
        node: "n7",
        seq: 1,
        data: { taskId: "t1", type: "echo", attempt: 1 },
      },
      {
        type: "cluster.leader.changed",
        version: 1,
        at: 42,
        node: "n7",
        seq: 2,
        data: { leader: null, epoch: 3 },
      },
    ],
  );
  assert.notEqual(a[0].id, a[1].id);
});

Deno.test("events: with nobody listening emit builds nothing and counts nothing", () => {
  const events = createNodeEvents("n1");
  assert.equal(events.listening, false);
  events.emit("plugin.started", { plugin: "x" });
  const seen: NodeEvent[] = [];
  events.listen((e) => seen.push(e));
  events.emit("plugin.started", { plugin: "y" });
  assert.equal(seen.length, 1);
  assert.equal(seen[0].seq, 1);
});

Deno.test("events: data that fails its schema is dropped and reported, never thrown", () => {
  const invalid: string[] = [];
  const events = createNodeEvents("n1", {
    onInvalid: (type, error) => invalid.push(`${type}: ${error}`),
  });
  const seen: NodeEvent[] = [];
  events.listen((e) => seen.push(e));
  events.emit(
    "task.started",
    { taskId: "t1", type: "echo", attempt: 0 },
  );
  assert.equal(seen.length, 0);
  assert.equal(invalid.length, 1);
  assert.match(invalid[0], /^task\.started: attempt:/);
});

Deno.test("events: every type name is dot-separated lower case and has a version", () => {
  for (const [type, s] of Object.entries(NODE_EVENT_SCHEMAS)) {
    assert.match(type, /^[a-z]+(\.[a-z]+)+$/);
    assert.ok(Number.isInteger(s.version) && s.version >= 1, type);
  }
});

Deno.test("events: a node emits task.started/completed/failed around each run and plugin.started", async () => {
  const { createTestKernel } = await import("./testing.ts");
  const { definePlugin } = await import("./plugin.ts");
  const seen: NodeEvent[] = [];
  const listener = definePlugin({
    manifest: {
      name: "listener",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:listener"],
    },
    setup(ctx) {
      const stop = ctx.kernel.get<NodeEvents>("events:local").listen((e) =>
        seen.push(e)
      );
      ctx.kernel.get("tasks:local").register(
        "boom",
        () => Promise.reject(new Error("it broke")),
      );
      return Promise.resolve({ stop: () => Promise.resolve(stop()) });
    },
  });
  await using t = await createTestKernel([listener]);
  await t.tasks.runHere({ id: "t1", type: "echo", payload: 1, attempt: 1 });
  await assert.rejects(
    t.tasks.runHere({ id: "t2", type: "boom", payload: 1, attempt: 2 }),
    /it broke/,
  );
  assert.deepEqual(seen.map((e) => e.type), [
    "plugin.started",
    "task.started",
    "task.completed",
    "task.started",
    "task.failed",
  ]);
  assert.deepEqual(seen[0].data, { plugin: "listener" });
  assert.deepEqual(seen[2].data, {
    taskId: "t1",
    type: "echo",
    attempt: 1,
    durationMs: (seen[2].data as { durationMs: number }).durationMs,
  });
  assert.equal((seen[4].data as { error: string }).error, "it broke");
  assert.equal((seen[4].data as { attempt: number }).attempt, 2);
});
