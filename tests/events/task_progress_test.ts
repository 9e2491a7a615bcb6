/**
 * Task progress and cancel through a plugin sandbox, on real nodes sharing
 * one KV file: a sandboxed handler's `ctx.progress` reports reach the event
 * store in order and `GET /api/v1/tasks/{id}`; a sandboxed handler running
 * on one node sees its `ctx.signal` abort when the task is cancelled
 * through the other.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { eventually, KV_TARGETS, startCluster } from "../cluster/_cluster.ts";
import { FIXTURES } from "../integration/_process.ts";
import { json, storedEvents, submit, view } from "./_util.ts";

const taskEvents = (kv: Deno.Kv) => storedEvents(kv, "task");

Deno.test("tasks (shared KV file, sandboxed handlers): progress 0.25/0.5/1 stored in order and shown by GET; a cancel through another node, or by a sandboxed plugin, aborts the sandboxed handler", async () => {
  await using c = await startCluster(KV_TARGETS[0], {
    nodes: 2,
    args: [
      "--plugin",
      "builtin:events",
      "--plugin",
      join(FIXTURES, "progress_plugin.ts"),
    ],
    config: { rateLimit: { enabled: false } },
  });
  if (!c) return;
  const [n1, n2] = c.nodes;
  const id = await submit(n1, {
    type: "progress.steps",
    payload: { fractions: [0.25, 0.5, 1], gapMs: 150 },
  });
  const done = await eventually(
    () => view(n2, id),
    (v) => v.status === "done",
    "progress.steps done",
  );
  assert.equal(done.progress.fraction, 1);
  assert.equal(done.progress.message, "step 1");
  const events = await eventually(
    () => taskEvents(c.kv),
    (es) =>
      es.some((e) =>
        e.type === "task.completed" &&
        (e.data as { taskId: string }).taskId === id
      ),
    "the task's events stored",
  );
  const mine = events.filter((e) =>
    (e.data as { taskId: string }).taskId === id
  );
  assert.deepEqual(
    mine.map((e) =>
      e.type === "task.progress"
        ? `progress ${(e.data as { progress: number }).progress}`
        : e.type
    ),
    [
      "task.started",
      "progress 0.25",
      "progress 0.5",
      "progress 1",
      "task.completed",
    ],
  );

  const wait = await submit(n1, { type: "progress.wait" });
  const running = await eventually(
    () => view(n1, wait),
    (v) => v.status === "running",
    "progress.wait running",
  );
  const runner = running.node === "n1" ? n1 : n2;
  const other = runner === n1 ? n2 : n1;
  const res = await other.api(`/api/v1/tasks/${wait}/cancel`, {
    method: "POST",
    headers: json,
    body: JSON.stringify({ reason: "enough" }),
  });
  assert.equal(res.status, 200, await res.text());
  const aborted = await eventually(
    () => Promise.resolve(runner.records.find((r) => r.msg === "wait aborted")),
    (r) => r !== undefined,
    "the sandboxed handler to see the abort",
    10_000,
  );
  assert.equal(aborted!.task, wait);
  assert.match(String(aborted!.reason), /was cancelled: enough/);
  assert.equal((await view(n1, wait)).status, "cancelled");

  // A sandboxed plugin cancels through its own task service.
  const wait2 = await submit(n1, { type: "progress.wait" });
  await eventually(
    () => view(n1, wait2),
    (v) => v.status === "running",
    "the second progress.wait running",
  );
  const byPlugin = await submit(n2, {
    type: "progress.cancel",
    payload: { id: wait2 },
  });
  const outcome = await eventually(
    () => view(n2, byPlugin),
    (v) => v.status === "done",
    "progress.cancel done",
  );
  assert.equal(outcome.result.status, "cancelled");
  const v2 = await view(n1, wait2);
  assert.deepEqual([v2.status, v2.reason], [
    "cancelled",
    "cancelled by a plugin",
  ]);
  const again = await submit(n2, {
    type: "progress.cancel",
    payload: { id: wait2 },
  });
  const refused = await eventually(
    () => view(n2, again),
    (v) => v.status === "done",
    "the second progress.cancel done",
  );
  assert.match(refused.result.refused, /is cancelled: only a ready/);
});
