// The public test entry as a test author outside this repository uses it:
// everything comes from `./mod.ts` (`@plexus/host/testing`), nothing from
// core/ or tests/.
import assert from "node:assert/strict";
import {
  CASES,
  conformance,
  linearizability,
  MemoryBroker,
  memoryTransport,
  Sim,
  SimClock,
  SimKv,
  stopBroker,
  type Transport,
} from "./mod.ts";

// The reference transport passes the suite: every transport the suite makes
// is one node on the same broker.
const broker = new MemoryBroker();
conformance("memory", () => memoryTransport({ broker }));

Deno.test("testing entry: a case run directly fails a transport that breaks its promise", async () => {
  const b = new MemoryBroker();
  const group = CASES.find((c) => c.name.includes("one group shares"));
  assert.ok(group, "the group case is exported");
  try {
    await assert.rejects(
      group.run(
        (): Transport =>
          memoryTransport({
            broker: b,
            faults: { doubleDeliverInGroup: true },
          }),
        3000,
      ),
      /delivered more than once in group 'workers'/,
    );
  } finally {
    stopBroker(b);
  }
});

Deno.test("testing entry: the simulated KV runs on virtual time", async () => {
  const sim = new Sim();
  const kv = new SimKv(sim);
  const client = kv.client(new SimClock(sim), { latencyMs: () => 5 });
  const commit = client.atomic().check({ key: ["k"], versionstamp: null })
    .set(["k"], 1).commit();
  await sim.run(100);
  assert.equal((await commit).ok, true);
  assert.equal(kv.get(["k"]).value, 1);
  assert.equal(sim.now, 100);
});

Deno.test("testing entry: the linearizability checker tells a stale read from a fresh one", () => {
  const { check, HistoryRecorder, kvModel } = linearizability;
  // A write of 2 returned before the read was called: the read must see 2,
  // not the initial null.
  const history = (readValue: linearizability.KvValue) => {
    const rec = new HistoryRecorder<
      linearizability.KvInput,
      linearizability.KvOutput
    >();
    const w = rec.call(1, { op: "write", key: "x", value: 2 }, 0);
    rec.ret(w, { ok: true }, 1);
    const r = rec.call(2, { op: "read", key: "x" }, 2);
    rec.ret(r, { value: readValue }, 3);
    return rec.history();
  };
  assert.equal(check(kvModel(), history(2)), "ok");
  assert.equal(check(kvModel(), history(null)), "illegal");
});

Deno.test("testing entry: a broker that fails to restart fails the restart case with the reason, not as an uncaught rejection", async () => {
  const b = new MemoryBroker();
  const restart = CASES.find((c) => c.name.startsWith("the broker restarted"));
  assert.ok(restart, "the restart case is exported");
  await assert.rejects(
    restart.run(() => memoryTransport({ broker: b }), 2_000, {
      restartBroker: () =>
        Promise.reject(new Error("services.sh exited 1: kafka exited")),
    }),
    /the broker did not restart: services\.sh exited 1: kafka exited/,
  );
});
