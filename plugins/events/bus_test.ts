import assert from "node:assert/strict";
import { z } from "zod";
import { createEventBus } from "./bus.ts";
import { createNodeEvents } from "../../core/events.ts";
import type { StoredEvent } from "./store.ts";

/** Resolves once `n` events arrived in `seen`. */
function until(seen: unknown[], n: number, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const check = () => {
      if (seen.length >= n) return resolve();
      if (Date.now() - t0 > 10_000) {
        return reject(new Error(`${what}: ${seen.length} of ${n} after 10 s`));
      }
      setTimeout(check, 5);
    };
    check();
  });
}

Deno.test("bus: a filtered subscriber sees exactly the matching events, in offset order", async () => {
  const kv = await Deno.openKv(":memory:");
  const events = createNodeEvents("n1");
  const bus = createEventBus(kv, { events });
  const seen: StoredEvent[] = [];
  const sub = await bus.subscribe(
    'type == "task.failed" or (type ^= "task." and data.attempt >= 3)',
    (e) => void seen.push(e),
    { from: "start" },
  );
  const expected: string[] = [];
  for (let i = 0; i < 200; i++) {
    const attempt = 1 + (i % 4);
    const type = i % 5 === 0 ? "task.failed" : "task.started";
    const data = type === "task.failed"
      ? { taskId: `t${i}`, type: "x", attempt, durationMs: 1, error: "e" }
      : { taskId: `t${i}`, type: "x", attempt };
    // deno-lint-ignore no-explicit-any -- both shapes are valid for their type
    events.emit(type, data as any);
    if (type === "task.failed" || attempt >= 3) expected.push(`t${i}`);
    if (i % 50 === 0) await new Promise((r) => setTimeout(r, 0));
  }
  await bus.publish("custom.noise", { n: 1 });
  await until(seen, expected.length, "matching events");
  // Nothing more arrives: wait for an event published after all of them.
  const marker: StoredEvent[] = [];
  const m = await bus.subscribe(
    'type == "custom.marker"',
    (e) => void marker.push(e),
    { from: "start" },
  );
  await bus.publish("custom.marker", {});
  await until(marker, 1, "marker");
  await sub.stop();
  await m.stop();
  assert.deepEqual(
    seen.map((e) => (e.data as { taskId: string }).taskId),
    expected,
  );
  const offsets = seen.map((e) => e.offset);
  assert.deepEqual(offsets, [...offsets].sort());
  await bus.close();
  kv.close();
});

Deno.test("bus: a named subscriber resumes from its saved cursor; a throwing handler gets the same event again", async () => {
  const kv = await Deno.openKv(":memory:");
  const bus = createEventBus(kv, { events: createNodeEvents("n1") });
  for (let i = 0; i < 30; i++) await bus.publish("custom.n", { i });
  const first: number[] = [];
  let failures = 0;
  const a = await bus.subscribe("", (e) => {
    const i = (e.data as { i: number }).i;
    if (i === 5 && failures < 2) {
      failures++;
      throw new Error("not yet");
    }
    first.push(i);
  }, { from: "start", name: "audit", ackEvery: 1 });
  await until(first, 20, "first run");
  await a.stop();
  assert.equal(failures, 2);
  const got = first.length;
  assert.deepEqual(first, Array.from({ length: got }, (_, i) => i));
  // A new subscription with the same name starts after what was handled.
  const second: number[] = [];
  const b = await bus.subscribe(
    "",
    (e) => void second.push((e.data as { i: number }).i),
    {
      from: "start",
      name: "audit",
    },
  );
  await until(second, 30 - got, "second run");
  await b.stop();
  assert.deepEqual(second, Array.from({ length: 30 - got }, (_, i) => got + i));
  await bus.close();
  kv.close();
});

Deno.test("bus: defined types are checked, undefined ones refused, transforms change or drop events", async () => {
  const kv = await Deno.openKv(":memory:");
  const bus = createEventBus(kv, { events: createNodeEvents("n1") });
  bus.define("saga.started", 2, z.strictObject({ sagaId: z.string() }));
  assert.throws(
    () => bus.define("task.started", 1, z.object({})),
    /the node emits it/,
  );
  assert.throws(
    () => bus.define("saga.started", 1, z.object({})),
    /defined already/,
  );
  await assert.rejects(
    bus.publish("saga.started", { sagaId: 1 }),
    /event 'saga.started': sagaId: /,
  );
  await assert.rejects(bus.publish("nope.x", {}), /'nope.x' is not defined/);
  await assert.rejects(
    bus.publish("custom.x", [1]),
    /data must be a JSON object/,
  );
  const drop = bus.transform((e) => e.type === "custom.secret" ? null : e);
  bus.transform((e) => ({
    ...e,
    data: { ...(e.data as object), tagged: true },
  }));
  await bus.publish("custom.secret", {});
  const off = await bus.publish("saga.started", { sagaId: "s1" });
  drop();
  const page = await bus.store.read({ after: "" });
  assert.deepEqual(
    page.events.map((e) => [e.type, e.version, e.offset, e.data]),
    [
      ["saga.started", 2, off, { sagaId: "s1", tagged: true }],
    ],
  );
  await bus.close();
  kv.close();
});
