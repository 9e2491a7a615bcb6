import assert from "node:assert/strict";
import { createTaskService } from "./tasks.ts";
import { createLogger } from "./observe/logger.ts";
import { createMetrics } from "./observe/metrics.ts";

Deno.test("tasks: with commitWindowMs, submits and completions are acknowledged early and stop() stores them", async () => {
  using kv = await Deno.openKv(":memory:");
  let ran!: () => void;
  const finished = new Promise<void>((r) => (ran = r));
  const tasks = createTaskService(kv, {
    nodeId: "n1",
    log: createLogger({ sinks: [] }),
    metrics: createMetrics(),
    // Longer than the test: nothing is stored before stop().
    commitWindowMs: 60_000,
  });
  tasks.register("note", (payload) => {
    queueMicrotask(ran);
    return Promise.resolve({ saw: payload });
  });
  tasks.start();
  const { id } = await tasks.submit({ type: "note", payload: 7 });
  await finished;
  // Not stored yet: acknowledged within the window.
  assert.equal(
    await kv.get(["queue", "tasks", "msg", id]).then((e) => e.value),
    null,
  );
  await tasks.stop();
  const stored = await tasks.get(id);
  assert.equal(stored?.status, "done");
  assert.deepEqual(stored?.result, { saw: 7 });
});
