import assert from "node:assert/strict";
import {
  RaftDriver,
  RaftTimeoutError,
  RaftUnavailableError,
} from "./driver.ts";
import { MemoryStorage } from "./storage.ts";
import type { Message, Ready } from "./types.ts";

/** Three drivers on manual ticks; messages queue until `deliver()`. */
function trio() {
  const queue: Message[] = [];
  const storages = new Map(
    ["a", "b", "c"].map((id) => [id, new MemoryStorage()]),
  );
  const drivers = new Map<string, RaftDriver>();
  const make = (id: string) => {
    const d = new RaftDriver({
      id,
      voters: ["a", "b", "c"],
      storage: storages.get(id)!,
      send: (_to, ms) => queue.push(...ms),
      tickMs: 0,
      requestTimeoutTicks: 30,
      random: () => (id === "a" ? 0 : 0.9),
    });
    drivers.set(id, d);
    d.start();
    return d;
  };
  for (const id of ["a", "b", "c"]) make(id);
  const settle = async () => {
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 5; i++) await Promise.resolve();
      const batch = queue.splice(0);
      for (const m of batch) drivers.get(m.to)?.receive([m]);
      if (batch.length === 0 && ![...drivers.values()].some((d) => d.busy)) {
        return;
      }
    }
  };
  const elect = async () => {
    while (!drivers.get("a")!.isLeader()) {
      drivers.get("a")!.tick();
      await settle();
    }
    await settle();
  };
  return { drivers, storages, queue, make, settle, elect };
}

Deno.test("raft driver: a write proposed on a follower is forwarded, committed and applied on every node", async () => {
  const t = trio();
  await t.elect();
  const p = t.drivers.get("b")!.propose({ op: "write", key: "x", value: "1" });
  await t.settle();
  const r = await p;
  assert.deepEqual({ ok: r.ok, value: r.value, previous: r.previous }, {
    ok: true,
    value: "1",
    previous: null,
  });
  for (const d of t.drivers.values()) {
    // Followers learn the commit with the next heartbeat.
    d.tick();
    d.tick();
  }
  await t.settle();
  for (const d of t.drivers.values()) assert.equal(d.machine.get("x"), "1");
});

Deno.test("raft driver: a read on a follower waits for ReadIndex and sees the latest write", async () => {
  const t = trio();
  await t.elect();
  const w = t.drivers.get("a")!.propose({ op: "write", key: "x", value: "2" });
  await t.settle();
  await w;
  let served = false;
  const r = t.drivers.get("c")!.read("x").then((v) => {
    served = true;
    return v;
  });
  await Promise.resolve();
  assert.equal(served, false); // not from local state
  await t.settle();
  t.drivers.get("a")!.tick();
  t.drivers.get("a")!.tick();
  await t.settle();
  assert.equal((await r).value, "2");
});

Deno.test("raft driver: without a leader a proposal is refused at once, and a lost one times out as unknown", async () => {
  const t = trio();
  await assert.rejects(
    t.drivers.get("b")!.propose({ op: "write", key: "x", value: "1" }),
    RaftUnavailableError,
  );
  await t.elect();
  const p = t.drivers.get("b")!.propose({ op: "write", key: "x", value: "1" });
  t.queue.length = 0; // the forwarded proposal is lost
  for (let i = 0; i < 30; i++) t.drivers.get("b")!.tick();
  await assert.rejects(p, RaftTimeoutError);
});

Deno.test("raft driver: every Ready is persisted before its messages are sent", async () => {
  const order: string[] = [];
  const storage = new MemoryStorage();
  const save = storage.save.bind(storage);
  storage.save = (rd: Ready) => {
    order.push(`save ${rd.entries.length} ${rd.hardState?.term ?? "-"}`);
    save(rd);
  };
  const d = new RaftDriver({
    id: "a",
    voters: ["a", "b", "c"],
    storage,
    send: (to, ms) => order.push(`send ${to} ${ms.map((m) => m.type)}`),
    tickMs: 0,
    random: () => 0,
  });
  d.start();
  for (let i = 0; i < 10; i++) d.tick();
  for (let i = 0; i < 5; i++) await Promise.resolve();
  d.receive([{ type: "preVoteResp", from: "b", to: "a", term: 1 }]);
  for (let i = 0; i < 5; i++) await Promise.resolve();
  // The vote request (term 1, vote for self) leaves only after it is stored.
  const firstVote = order.findIndex((s) =>
    s.includes("vote") && !s.includes("preVote")
  );
  const savedTerm = order.findIndex((s) =>
    s.startsWith("save") && s.endsWith(" 1")
  );
  assert.ok(savedTerm >= 0 && firstVote > savedTerm, order.join("; "));
  d.stop();
});

Deno.test("raft driver: a node restarted from its storage replays the log into its state machine", async () => {
  const t = trio();
  await t.elect();
  const p = t.drivers.get("a")!.propose({ op: "write", key: "k", value: "v" });
  await t.settle();
  await p;
  t.drivers.get("a")!.stop();
  const again = t.make("a");
  assert.equal(again.machine.get("k"), null);
  await t.settle();
  assert.equal(again.machine.get("k"), "v");
  assert.equal(again.node.term, 1);
});
