/**
 * Sagas across real processes sharing one KV, with kv-lease electing the
 * node that drives them. The side effects are recorded by the task handler
 * (tests/sagas/_shop_plugin.ts) in keys of their own, not read from the saga
 * state:
 *
 * - a failure at step k of n compensates k−1…1 in reverse, each once;
 * - the leader SIGKILLed at a step boundary, mid-step and mid-compensation:
 *   another node finishes the saga, each effect applied once, no step run
 *   again once it was done;
 * - 1,000 sagas started at once across 3 nodes all finish, counted in KV.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  allTasks,
  type Cluster,
  eventually,
  KV_TARGETS,
  startCluster,
} from "../cluster/_cluster.ts";
import type { PlexusProcess } from "../integration/_process.ts";
import type { SagaState } from "../../plugins/sagas/machine.ts";

const FIXTURE = join(import.meta.dirname!, "_shop_plugin.ts");
const LEASE = { leaseMs: 1500, renewDeadlineMs: 1000, retryPeriodMs: 200 };

function start(target: (typeof KV_TARGETS)[number]) {
  return startCluster(target, {
    nodes: 3,
    args: [
      "--consensus",
      "kv-lease",
      "--plugin",
      "builtin:sagas",
      "--plugin",
      FIXTURE,
    ],
    config: {
      pluginConfig: { "kv-lease": LEASE, sagas: { tickMs: 20 } },
      // The fixture writes its log to the raw KV: in-process.
      pluginTrust: { "saga-shop": "trusted" },
      rateLimit: { enabled: false },
      // A task whose node was killed is claimed again after 2 s.
      tasks: { leaseMs: 2000, maxAttempts: 5, concurrency: 16 },
    },
  });
}

interface StepOpts {
  fail?: boolean;
  holdMs?: number;
  undoHoldMs?: number;
}

/** `n` steps s1…sn of `shop.step`, each undone by `undo-s{i}`. */
function definition(n: number, opts: (i: number) => StepOpts = () => ({})) {
  return {
    name: "shop",
    requireCompensation: true,
    steps: Array.from({ length: n }, (_, k) => {
      const i = k + 1;
      const o = opts(i);
      return {
        id: `s${i}`,
        run: {
          kind: "task",
          type: "shop.step",
          payload: { name: `s${i}`, fail: o.fail, holdMs: o.holdMs },
        },
        compensate: {
          kind: "task",
          type: "shop.step",
          payload: { name: `undo-s${i}`, holdMs: o.undoHoldMs },
        },
        // An attempt's deadline counts its time in the queue: generous, so
        // a busy machine does not turn a slow step into a failed one.
        timeoutMs: 120_000,
        retry: { maxAttempts: 1 },
        compensationRetry: { maxAttempts: 5, backoffMs: 100 },
      };
    }),
  };
}

async function post(
  node: PlexusProcess,
  token: string,
  body: unknown,
): Promise<string> {
  const res = await fetch(`${node.url}/api/v1/sagas`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      authorization: `Bearer ${token}`,
    },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 201, JSON.stringify(json));
  return json.id;
}

/** The fixture's effect log of one saga, in commit order. */
async function effects(kv: Deno.Kv, saga: string): Promise<string[]> {
  const out: string[] = [];
  for await (
    const e of kv.list<{ name: string }>({
      prefix: ["test", "sagas", "log", saga],
    })
  ) out.push(e.value.name);
  return out;
}

/** Calls of the task handler per step key of one saga. */
async function calls(kv: Deno.Kv, saga: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const e of kv.list({ prefix: ["test", "sagas", "calls"] })) {
    const key = e.key[3] as string;
    if (key.startsWith(`${saga}:`)) out.set(key, (out.get(key) ?? 0) + 1);
  }
  return out;
}

const state = async (kv: Deno.Kv, id: string) =>
  (await kv.get<SagaState>(["sagas", "saga", id])).value;

const finished = (kv: Deno.Kv, id: string, ms = 90_000) =>
  eventually(
    () => state(kv, id),
    (s) => !!s && !["running", "compensating"].includes(s.status),
    `saga ${id} to finish`,
    ms,
  );

/** The leader as every live node sees it, and its process. */
async function leader(c: Cluster): Promise<PlexusProcess> {
  const live = c.nodes.filter((n) => !n.exited);
  const token = await live[0].token("viewer");
  const views = await eventually(
    () =>
      Promise.all(
        live.map(async (n) =>
          await (await fetch(`${n.url}/api/v1/cluster`, {
            headers: { authorization: `Bearer ${token}` },
          })).json() as { leader: string | null; epoch: number }
        ),
      ),
    (vs) => vs[0].leader !== null && vs.every((v) => v.leader === vs[0].leader),
    "the live nodes to agree on a leader",
  );
  const id = views[0].leader!;
  return c.nodes[Number(id.slice(1)) - 1];
}

for (const target of KV_TARGETS) {
  Deno.test(`sagas (${target.name}): a failure at step k of 4 compensates k−1…1 in reverse, each once by the handler's own log; a cancel through a node that does not lead; bad definitions refused by every node`, async () => {
    await using c = await start(target);
    if (!c) return;
    const token = await c.nodes[0].token("analyst");
    const ids = await Promise.all(
      [1, 2, 3, 4].map((k) =>
        post(c.nodes[k % 3], token, {
          id: `fail-at-${k}`,
          definition: definition(4, (i) => ({ fail: i === k })),
        })
      ),
    );
    for (const [j, id] of ids.entries()) {
      const k = j + 1;
      const s = await finished(c.kv, id);
      assert.equal(s!.status, "compensated", id);
      const done = Array.from({ length: k - 1 }, (_, i) => `s${i + 1}`);
      assert.deepEqual(
        await effects(c.kv, id),
        [...done, ...done.map((x) => `undo-${x}`).reverse()],
        id,
      );
      // Each compensation ran exactly once; steps after k never ran.
      const n = await calls(c.kv, id);
      for (const x of done) assert.equal(n.get(`${id}:${x}:compensate`), 1);
      assert.equal(n.has(`${id}:s${k + 1}`), false);
      assert.match(s!.reason!, new RegExp(`step 's${k}' failed`));
    }
    // Any node answers GET with the steps' attempts and errors.
    const res = await fetch(`${c.nodes[2].url}/api/v1/sagas/fail-at-2`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const view = await res.json();
    assert.equal(view.steps.s2.attempts.length, 1);
    assert.match(view.steps.s2.attempts[0].error, /s2 refused/);
    assert.equal(view.steps.s1.compensations[0].ok, true);
    // Cancelled through a node that does not lead while s2 runs: s2 still
    // finishes, so it is undone too, then s1.
    const lead = await leader(c);
    const [n1, n2] = c.nodes.filter((n) => n !== lead);
    const cancelled = await post(n1, token, {
      id: "cancelled",
      definition: definition(3, (i) => ({ holdMs: i === 2 ? 1500 : 0 })),
    });
    await eventually(
      async () =>
        (await c.kv.get([
          "test",
          "sagas",
          "holding",
          cancelled,
          `${cancelled}:s2`,
        ]))
          .versionstamp,
      (v) => v !== null,
      "s2 holding",
    );
    const cancel = await fetch(`${n2.url}/api/v1/sagas/${cancelled}/cancel`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        authorization: `Bearer ${token}`,
      },
      body: JSON.stringify({ reason: "customer asked" }),
    });
    assert.deepEqual(await cancel.json(), {
      id: cancelled,
      cancelled: true,
      status: "compensating",
    });
    const end = await finished(c.kv, cancelled);
    assert.equal(end!.status, "compensated");
    assert.match(end!.reason!, /cancelled: customer asked/);
    assert.deepEqual(await effects(c.kv, cancelled), [
      "s1",
      "s2",
      "undo-s2",
      "undo-s1",
    ]);
    assert.equal((await calls(c.kv, cancelled)).has(`${cancelled}:s3`), false);
    // Bad definitions are refused at submit on any node, the field named.
    const task = (id: string, type = "shop.step") => ({
      id,
      run: { kind: "task", type },
    });
    const bad: [unknown, string][] = [
      [
        { name: "x", steps: [{ id: "a", run: { kind: "rpc" } }] },
        "definition.steps[0].run.kind",
      ],
      [
        { name: "x", steps: [task("a", "shop.nope")] },
        "definition.steps[0].run",
      ],
      [
        {
          name: "x",
          steps: [{
            id: "a",
            run: { kind: "capability", capability: "oracle" },
          }],
        },
        "definition.steps[0].run",
      ],
      [{ name: "x", steps: [task("a"), task("a")] }, "definition.steps[1].id"],
      [
        {
          name: "x",
          steps: [{ parallel: [task("a"), { parallel: [task("b")] }] }],
        },
        "definition.steps[0].parallel[1]",
      ],
      [
        { name: "x", requireCompensation: true, steps: [task("a")] },
        "definition.steps[0].compensate",
      ],
      [
        {
          name: "x",
          steps: Array.from({ length: 10_000 }, (_, i) => task(`s${i}`)),
        },
        "definition.steps",
      ],
    ];
    for (const [i, [definition, field]] of bad.entries()) {
      const r: Response = await fetch(`${c.nodes[i % 3].url}/api/v1/sagas`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${token}`,
        },
        body: JSON.stringify({ definition }),
      });
      const body = await r.json();
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(body.error.field, field);
    }
  });

  Deno.test(`sagas (${target.name}): the leader SIGKILLed at step boundaries, mid-step and mid-compensation → another node finishes, each effect once`, async () => {
    await using c = await start(target);
    if (!c) return;
    const token = await c.nodes[0].token("analyst");
    const scenarios: {
      name: string;
      def: ReturnType<typeof definition>;
      /** Resolves when the leader is to be killed. */
      when: (id: string) => Promise<unknown>;
      expect: string[];
    }[] = [];
    for (const k of [1, 2]) {
      scenarios.push({
        name: `boundary-${k}`,
        def: definition(3, () => ({ holdMs: 300 })),
        when: (id) =>
          eventually(
            () => state(c.kv, id),
            (s) => s?.steps[`s${k}`].status === "done",
            `s${k} done`,
          ),
        expect: ["s1", "s2", "s3"],
      });
    }
    for (const k of [1, 2, 3]) {
      scenarios.push({
        name: `mid-${k}`,
        def: definition(3, (i) => ({ holdMs: i === k ? 1500 : 0 })),
        when: (id) =>
          eventually(
            async () =>
              (await c.kv.get(["test", "sagas", "holding", id, `${id}:s${k}`]))
                .versionstamp,
            (v) => v !== null,
            `s${k} holding`,
          ),
        expect: ["s1", "s2", "s3"],
      });
    }
    scenarios.push({
      name: "mid-compensation",
      def: definition(3, (i) => ({ fail: i === 3, undoHoldMs: 1500 })),
      when: (id) =>
        eventually(
          async () =>
            (await c.kv.get([
              "test",
              "sagas",
              "holding",
              id,
              `${id}:s2:compensate`,
            ])).versionstamp,
          (v) => v !== null,
          "undo-s2 holding",
        ),
      expect: ["s1", "s2", "undo-s2", "undo-s1"],
    });
    for (const sc of scenarios) {
      const victim = await leader(c);
      const live = c.nodes.filter((n) => !n.exited && n !== victim);
      // Started on a node that does not lead: the leader picks it up.
      const id = await post(live[0], token, {
        id: sc.name,
        definition: sc.def,
      });
      await sc.when(id);
      victim.signal("SIGKILL");
      await victim.status;
      // Keep three nodes: a fresh one joins while the survivors take over.
      const joining = c.add();
      const s = await finished(c.kv, id);
      await joining;
      assert.equal(
        s!.status,
        sc.expect.length === 3 ? "completed" : "compensated",
        sc.name,
      );
      assert.deepEqual(await effects(c.kv, id), sc.expect, sc.name);
      // A step done before the kill never ran again; the one running at the
      // kill ran at most twice (its node may have been the one killed).
      const n = await calls(c.kv, id);
      for (const [key, count] of n) {
        // (The step made to fail is retried by the task service.)
        if (sc.name === "mid-compensation" && key === `${id}:s3`) continue;
        assert.ok(count <= 2, `${sc.name}: ${key} called ${count} times`);
      }
      if (sc.name === "boundary-2") {
        assert.equal(n.get(`${id}:s1`), 1, "s1 not run again");
        assert.equal(n.get(`${id}:s2`), 1, "s2 not run again");
      }
      if (sc.name === "mid-3") {
        assert.equal(n.get(`${id}:s1`), 1);
        assert.equal(n.get(`${id}:s2`), 1);
      }
      // One task per step attempt: the new leader found the old one's task.
      type Body = {
        payload?: {
          saga?: { id: string; idempotencyKey: string; attempt: number };
        };
      };
      const keys: string[] = [];
      for (const t of await allTasks(c.kv)) {
        const saga = (t.payload as Body).payload?.saga;
        if (saga?.id === id) {
          keys.push(`${saga.idempotencyKey}:${saga.attempt}`);
        }
      }
      assert.equal(new Set(keys).size, keys.length, `${sc.name}: ${keys}`);
    }
  });

  Deno.test(`sagas (${target.name}): 1,000 sagas started at once across 3 nodes all finish, none stuck (counted in KV)`, async () => {
    await using c = await start(target);
    if (!c) return;
    const token = await c.nodes[0].token("analyst");
    const n = 1000;
    let next = 0;
    await Promise.all(Array.from({ length: 24 }, async () => {
      while (next < n) {
        const i = next++;
        await post(c.nodes[i % 3], token, {
          id: `bulk-${i}`,
          definition: definition(3),
        });
      }
    }));
    const count = async () => {
      let open = 0;
      for await (const _ of c.kv.list({ prefix: ["sagas", "open"] })) open++;
      const byStatus: Record<string, number> = {};
      for await (
        const e of c.kv.list<SagaState>({ prefix: ["sagas", "saga"] })
      ) byStatus[e.value.status] = (byStatus[e.value.status] ?? 0) + 1;
      return { open, byStatus };
    };
    const t0 = performance.now();
    const last = await eventually(
      count,
      (x) => x.open === 0,
      "every saga to finish",
      300_000,
    );
    console.log(
      `  1,000 sagas finished ${
        Math.round(performance.now() - t0)
      } ms after the last start`,
    );
    const reasons = new Set<string>();
    for await (const e of c.kv.list<SagaState>({ prefix: ["sagas", "saga"] })) {
      if (e.value.reason) {
        reasons.add(e.value.reason.replace(/task \S+/, "task …"));
      }
    }
    assert.deepEqual(last.byStatus, { completed: n }, [...reasons].join("; "));
    let logged = 0;
    for await (const _ of c.kv.list({ prefix: ["test", "sagas", "log"] })) {
      logged++;
    }
    assert.equal(logged, 3 * n, "each of the 3,000 effects once");
  });
}
