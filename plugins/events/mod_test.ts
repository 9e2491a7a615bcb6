import assert from "node:assert/strict";
import { createTestKernel } from "../../core/testing.ts";
import events, { type EventBus } from "./mod.ts";

/** Reads SSE frames from `res` until `n` events came (or the stream ends). */
async function readSse(res: Response, n: number) {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const frames: { id?: string; event?: string; data?: string }[] = [];
  let buf = "";
  try {
    while (frames.filter((f) => f.event !== undefined).length < n) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let k;
      while ((k = buf.indexOf("\n\n")) >= 0) {
        const frame = buf.slice(0, k);
        buf = buf.slice(k + 2);
        const f: Record<string, string> = {};
        for (const line of frame.split("\n")) {
          const m = /^(id|event|data): (.*)$/.exec(line);
          if (m) f[m[1]] = m[2];
        }
        if (f.event) frames.push(f);
      }
    }
  } finally {
    await reader.cancel();
  }
  return frames;
}

const publish = (type: string, data: unknown) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ type, data }),
});

Deno.test("events plugin: SSE replays from an offset (or Last-Event-ID) exactly the matching events after it", async () => {
  await using t = await createTestKernel([events]);
  const offsets: string[] = [];
  for (let i = 0; i < 12; i++) {
    const res = await t.api(
      "/api/v1/events",
      publish(`custom.${i % 2 ? "odd" : "even"}`, { i }),
      "analyst",
    );
    assert.equal(res.status, 202);
    offsets.push((await res.json()).offset);
  }
  const filter = encodeURIComponent('type == "custom.odd" and data.i >= 3');
  const res = await t.api(
    `/api/v1/events?filter=${filter}&from=${offsets[4]}`,
    {},
    "viewer",
  );
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  const frames = await readSse(res, 4);
  assert.deepEqual(frames.map((f) => JSON.parse(f.data!).data.i), [
    5,
    7,
    9,
    11,
  ]);
  assert.deepEqual(
    frames.map((f) => f.id),
    [5, 7, 9, 11].map((i) => offsets[i]),
  );
  assert.equal(frames[0].event, "custom.odd");
  // Resuming with Last-Event-ID continues after it.
  const again = await t.api(`/api/v1/events?filter=${filter}&from=start`, {
    headers: { "last-event-id": offsets[9] },
  }, "viewer");
  assert.deepEqual((await readSse(again, 1)).map((f) => f.id), [offsets[11]]);
});

Deno.test("events plugin: a live SSE client gets the node's own events as they happen", async () => {
  await using t = await createTestKernel([events]);
  // From a known offset, so the subscription need not be in place first.
  const from = await t.kernel.get<EventBus>("events:bus").publish(
    "custom.mark",
    {},
  );
  const res = await t.api(
    `/api/v1/events?from=${from}&filter=${
      encodeURIComponent('type ^= "task."')
    }`,
    {},
    "viewer",
  );
  const frames = readSse(res, 2);
  await t.tasks.runHere({ id: "t1", type: "echo", payload: 1, attempt: 1 });
  assert.deepEqual((await frames).map((f) => f.event), [
    "task.started",
    "task.completed",
  ]);
});

Deno.test("events plugin: bad filters and bad input get 400 naming the problem; reading needs a token", async () => {
  await using t = await createTestKernel([events]);
  const cases: [string, RegExp][] = [
    ['type ~ "x"', /unexpected character "~" at position 5/],
    ['{"path":"type","op":"regex","value":"x"}', /unknown operator 'regex'/],
    ["(".repeat(100) + "a == 1" + ")".repeat(100), /nests deeper than 16/],
    ["a == 1 or ".repeat(100_000) + "a == 1", /limit is 4096/],
  ];
  for (const [filter, re] of cases) {
    const res = await t.api(
      `/api/v1/events?filter=${encodeURIComponent(filter)}`,
      {},
      "viewer",
    );
    const body = await res.json();
    assert.equal(res.status, 400, filter.slice(0, 40));
    assert.equal(body.error.code, "bad_filter");
    assert.match(body.error.message, re);
  }
  const badFrom = await t.api("/api/v1/events?from=yesterday", {}, "viewer");
  assert.equal(badFrom.status, 400);
  assert.match(
    (await badFrom.json()).error.message,
    /from: expected start, end/,
  );
  assert.equal((await t.request("/api/v1/events")).status, 401);
  const notCustom = await t.api(
    "/api/v1/events",
    publish("task.started", {}),
    "analyst",
  );
  assert.equal(notCustom.status, 400);
  assert.equal(
    (await t.api("/api/v1/events", publish("custom.x", {}), "viewer")).status,
    403,
  );
});

Deno.test("events plugin: events:bus is the bus, with the store's counts", async () => {
  await using t = await createTestKernel([events]);
  const bus = t.kernel.get<EventBus>("events:bus");
  await bus.publish("custom.a", {});
  await bus.publish("custom.b", {});
  assert.equal((await bus.store.counts()).custom, 2);
});
