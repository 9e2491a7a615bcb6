import assert from "node:assert/strict";
import { ManualClock } from "../clock.ts";
import type { Consensus } from "../consensus.ts";
import { nodeKey } from "./keys.ts";
import {
  clusterView,
  createRegistry,
  memberStatus,
  type NodeRecord,
  type RegistryOptions,
} from "./registry.ts";

const T0 = 1_700_000_000_000;
const FAST = { heartbeatMs: 100, suspectAfterMs: 500, downAfterMs: 1_500 };

/** Lets woken tasks run their KV ops and schedule their next sleep. */
const settle = () => new Promise((r) => setTimeout(r, 0));

/** Polls until `fn` holds; fails after 5 s of real time (never on a fast machine). */
async function waitFor(fn: () => Promise<boolean>, what: string) {
  const deadline = Date.now() + 5_000;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  await settle();
}

async function record(kv: Deno.Kv, id: string) {
  return (await kv.get<NodeRecord>(nodeKey(id))).value;
}

function options(
  nodeId: string,
  clock: ManualClock,
  extra: Partial<RegistryOptions> = {},
): RegistryOptions {
  return {
    nodeId,
    address: `http://${nodeId}.local:8080`,
    version: "1.2.3",
    clock,
    load: () => ({ inflight: 3, rss: 1024 }),
    ...FAST,
    ...extra,
  };
}

Deno.test("registry: memberStatus follows the heartbeat age and the thresholds", () => {
  const t = { suspectAfterMs: 5_000, downAfterMs: 15_000 };
  const at = (now: number) => memberStatus({ heartbeatAt: 10_000 }, now, t);
  assert.equal(at(10_000), "up");
  assert.equal(at(14_999), "up");
  assert.equal(at(15_000), "suspect");
  assert.equal(at(24_999), "suspect");
  assert.equal(at(25_000), "down");
  assert.equal(at(1_000), "up"); // heartbeat from the future: clock skew
  assert.equal(
    memberStatus({ heartbeatAt: 10_000, leftAt: 10_000 }, 10_000, t),
    "down",
  );
});

Deno.test("registry: a node without heartbeats turns suspect, then down", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const clock = new ManualClock(T0);
    const registry = createRegistry(kv, options("node-a", clock));
    await registry.heartbeat();
    const status = async () => (await registry.members())[0].status;
    assert.equal(await status(), "up");
    await clock.advance(499);
    assert.equal(await status(), "up");
    await clock.advance(1);
    assert.equal(await status(), "suspect");
    await clock.advance(999);
    assert.equal(await status(), "suspect");
    await clock.advance(1);
    assert.equal(await status(), "down");
    assert.deepEqual(await registry.members(), [{
      id: "node-a",
      address: "http://node-a.local:8080",
      status: "down",
      lastSeen: T0,
    }]);
    await registry.heartbeat();
    assert.equal(await status(), "up");
  } finally {
    kv.close();
  }
});

Deno.test("registry: the heartbeat loop writes the record on schedule", async () => {
  const kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(T0);
  let inflight = 0;
  const registry = createRegistry(
    kv,
    options("node-a", clock, {
      load: () => ({ inflight: inflight++, rss: 7 }),
    }),
  );
  try {
    await registry.start();
    assert.deepEqual(await record(kv, "node-a"), {
      id: "node-a",
      address: "http://node-a.local:8080",
      version: "1.2.3",
      load: { inflight: 0, rss: 7 },
      heartbeatAt: T0,
      startedAt: T0,
    });
    for (let beat = 1; beat <= 5; beat++) {
      await clock.advance(99);
      await settle();
      assert.equal((await record(kv, "node-a"))?.heartbeatAt, clock.now() - 99);
      await clock.advance(1);
      await waitFor(
        async () => (await record(kv, "node-a"))?.heartbeatAt === clock.now(),
        `heartbeat ${beat}`,
      );
      const r = await record(kv, "node-a");
      assert.equal(r?.load.inflight, beat);
      assert.equal(r?.startedAt, T0);
    }
    // Steady heartbeats keep the node up however long it runs.
    assert.equal((await registry.members())[0].status, "up");
  } finally {
    await registry.stop();
    kv.close();
  }
});

Deno.test("registry: stop() ends the heartbeats and the node shows down at once", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const clock = new ManualClock(T0);
    const registry = createRegistry(kv, options("node-a", clock));
    await registry.start();
    await clock.advance(50);
    await registry.stop();
    const left = await record(kv, "node-a");
    assert.equal(left?.leftAt, T0 + 50);
    assert.deepEqual(await registry.members(), [{
      id: "node-a",
      address: "http://node-a.local:8080",
      status: "down",
      lastSeen: T0 + 50,
    }]);
    for (let i = 0; i < 5; i++) {
      await clock.advance(100);
      await settle();
    }
    assert.deepEqual(await record(kv, "node-a"), left);
    await registry.stop(); // a second stop does nothing
    assert.deepEqual(await record(kv, "node-a"), left);
    // Starting again rejoins, without leftAt.
    await registry.start();
    const back = await record(kv, "node-a");
    assert.equal(back?.leftAt, undefined);
    assert.equal(back?.startedAt, clock.now());
    assert.equal((await registry.members())[0].status, "up");
    await registry.stop();
  } finally {
    kv.close();
  }
});

Deno.test("registry: two nodes on one KV see each other", async () => {
  const kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(T0);
  const b = createRegistry(kv, options("node-b", clock));
  const a = createRegistry(kv, options("node-a", clock));
  try {
    await b.start();
    await a.start();
    for (const r of [a, b]) {
      assert.deepEqual(
        (await r.members()).map((m) => [m.id, m.status]),
        [["node-a", "up"], ["node-b", "up"]],
      );
    }
    const records = await a.nodes();
    assert.deepEqual(records.map((r) => r.address), [
      "http://node-a.local:8080",
      "http://node-b.local:8080",
    ]);
    assert.deepEqual(Object.keys(records[0]).sort(), [
      "address",
      "heartbeatAt",
      "id",
      "load",
      "startedAt",
      "version",
    ]);
    await b.stop();
    assert.deepEqual(
      (await a.members()).map((m) => [m.id, m.status]),
      [["node-a", "up"], ["node-b", "down"]],
    );
  } finally {
    await a.stop();
    await b.stop();
    kv.close();
  }
});

Deno.test("registry: an address getter is read at every heartbeat", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const clock = new ManualClock(T0);
    let address = "http://0.0.0.0:0";
    const registry = createRegistry(
      kv,
      options("node-a", clock, { address: () => address }),
    );
    address = "http://127.0.0.1:41234"; // known once the server listens
    await registry.start();
    assert.equal((await record(kv, "node-a"))?.address, address);
    await registry.stop();
  } finally {
    kv.close();
  }
});

Deno.test("registry: a failed heartbeat goes to onError and the loop goes on", async () => {
  const kv = await Deno.openKv(":memory:");
  const clock = new ManualClock(T0);
  const errors: unknown[] = [];
  let calls = 0;
  const registry = createRegistry(
    kv,
    options("node-a", clock, {
      load: () => {
        if (++calls === 2) throw new Error("load probe failed");
        return { inflight: 0, rss: 1 };
      },
      onError: (err) => errors.push(err),
    }),
  );
  try {
    await registry.start();
    await clock.advance(100);
    await waitFor(() => Promise.resolve(errors.length === 1), "the error");
    assert.match((errors[0] as Error).message, /load probe failed/);
    assert.equal((await record(kv, "node-a"))?.heartbeatAt, T0);
    await clock.advance(100);
    await waitFor(
      async () => (await record(kv, "node-a"))?.heartbeatAt === T0 + 200,
      "the next heartbeat",
    );
    assert.equal(errors.length, 1);
  } finally {
    await registry.stop();
    kv.close();
  }
});

Deno.test("registry: a failed first heartbeat rejects start() and leaves nothing running", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const clock = new ManualClock(T0);
    const errors: unknown[] = [];
    const registry = createRegistry(
      kv,
      options("node-a", clock, {
        load: () => {
          throw new Error("no load");
        },
        onError: (err) => errors.push(err),
      }),
    );
    await assert.rejects(registry.start(), /no load/);
    await clock.advance(1_000);
    await settle();
    assert.deepEqual(await registry.members(), []);
    assert.deepEqual(errors, []);
    await registry.stop(); // nothing to stop, nothing written
    assert.deepEqual(await registry.members(), []);
  } finally {
    kv.close();
  }
});

Deno.test("registry: thresholds and identity are validated", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const clock = new ManualClock(T0);
    assert.throws(
      () => createRegistry(kv, options("a", clock, { heartbeatMs: 500 })),
      (e) =>
        e instanceof RangeError &&
        e.message.includes(
          "need heartbeatMs < suspectAfterMs < downAfterMs, got 500, 500, 1500",
        ),
    );
    assert.throws(
      () => createRegistry(kv, options("a", clock, { downAfterMs: 400 })),
      (e) => e instanceof RangeError && /got 100, 500, 400/.test(e.message),
    );
    assert.throws(
      () => createRegistry(kv, options("a", clock, { heartbeatMs: 0 })),
      (e) => e instanceof RangeError && /heartbeatMs .* got 0/.test(e.message),
    );
    assert.throws(
      () =>
        createRegistry(kv, {
          nodeId: "a",
          address: "x",
          version: "1",
          suspectAfterMs: 20_000,
        }),
      (e) =>
        e instanceof RangeError && /got 1000, 20000, 15000/.test(e.message),
    );
    assert.throws(
      () => createRegistry(kv, options("", clock)),
      (e) => e instanceof TypeError && /nodeId .* ''/.test(e.message),
    );
    assert.throws(
      () =>
        createRegistry(kv, {
          nodeId: "a",
          address: 8080 as unknown as string,
          version: "1",
        }),
      (e) => e instanceof TypeError && /got number/.test(e.message),
    );
    // The defaults (1000 / 5000 / 15000) are consistent.
    assert.deepEqual(
      createRegistry(kv, { nodeId: "a", address: "x", version: "1" })
        .thresholds,
      { suspectAfterMs: 5_000, downAfterMs: 15_000 },
    );
  } finally {
    kv.close();
  }
});

Deno.test("registry: clusterView builds the CONTRACTS body", () => {
  const members = [
    { id: "a", address: "http://a:1", status: "up" as const, lastSeen: T0 },
    { id: "b", address: "http://b:1", status: "down" as const, lastSeen: 0 },
  ];
  const none = clusterView({ nodeId: "a", members });
  assert.deepEqual(none, {
    nodeId: "a",
    leader: null,
    epoch: 0,
    consensus: "none",
    members: [
      {
        id: "a",
        address: "http://a:1",
        status: "up",
        lastSeen: new Date(T0).toISOString(),
      },
      {
        id: "b",
        address: "http://b:1",
        status: "down",
        lastSeen: "1970-01-01T00:00:00.000Z",
      },
    ],
  });
  assert.deepEqual(Object.keys(JSON.parse(JSON.stringify(none))), [
    "nodeId",
    "leader",
    "epoch",
    "consensus",
    "members",
  ]);
  const consensus: Consensus = {
    name: "kv-lease",
    leader: () => "b",
    isLeader: () => false,
    epoch: () => 7,
    onLeaderChange: () => () => {},
    members: () => Promise.resolve(members),
  };
  const led = clusterView({ nodeId: "a", consensus, members });
  assert.equal(led.leader, "b");
  assert.equal(led.epoch, 7);
  assert.equal(led.consensus, "kv-lease");
  assert.equal(led.members.length, 2);
});
