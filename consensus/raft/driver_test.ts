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

Deno.test("raft driver: writes forwarded to a leader that stops answering are re-sent to the new leader, answered long before the timeout and applied once", async () => {
  const queue: Message[] = [];
  const held: Message[] = [];
  let paused = "";
  const drivers = new Map<string, RaftDriver>();
  const applies = new Map<string, number>();
  for (const id of ["a", "b", "c"]) {
    const d = new RaftDriver({
      id,
      voters: ["a", "b", "c"],
      storage: new MemoryStorage(),
      send: (_to, ms) => queue.push(...ms),
      tickMs: 0,
      requestTimeoutTicks: 200,
      random: () => (id === "a" ? 0 : 0.9),
    });
    const apply = d.machine.apply.bind(d.machine);
    d.machine.apply = (cmd) => {
      const k = `${id} ${JSON.stringify(cmd)}`;
      applies.set(k, (applies.get(k) ?? 0) + 1);
      return apply(cmd);
    };
    drivers.set(id, d);
    d.start();
  }
  const [a, b, c] = ["a", "b", "c"].map((id) => drivers.get(id)!);
  // Delivers until quiet; `drop` loses messages, a paused node's are held.
  const settle = async (drop: (m: Message) => boolean = () => false) => {
    for (let round = 0; round < 50; round++) {
      for (let i = 0; i < 5; i++) await Promise.resolve();
      const batch = queue.splice(0);
      for (const m of batch) {
        if (drop(m)) continue;
        if (m.from === paused || m.to === paused) held.push(m);
        else drivers.get(m.to)!.receive([m]);
      }
      if (batch.length === 0 && ![...drivers.values()].some((d) => d.busy)) {
        return;
      }
    }
  };
  while (!a.isLeader()) {
    a.tick();
    await settle();
  }
  await settle();

  // y: the leader appends it and replicates it to c, but learns of no ack
  // before it stops, so it is in c's log uncommitted.
  const y = b.propose({ op: "write", key: "y", value: "1" });
  await settle((m) =>
    m.type === "appResp" || (m.type === "app" && m.to === "b")
  );
  assert.equal(c.node.log.lastIndex(), 2);
  assert.equal(c.node.log.committed, 1);
  paused = "a";
  // x: forwarded to the stopped leader, where it waits.
  const x = b.propose({ op: "write", key: "x", value: "1" });
  const answeredAt = new Map<string, number>();
  let ticks = 0;
  x.then(() => answeredAt.set("x", ticks));
  y.then(() => answeredAt.set("y", ticks));
  await settle();
  assert.equal(held.filter((m) => m.type === "prop").length, 1);

  // c (whose log is longer) is elected after its 19-tick election timeout;
  // b re-sends both writes to it.
  while (ticks < 25 && answeredAt.size < 2) {
    ticks++;
    b.tick();
    c.tick();
    await settle();
  }
  assert.ok(c.isLeader(), `c is ${c.node.role}`);
  assert.ok(
    answeredAt.size === 2,
    `after ${ticks} ticks (timeout 200) answered only ${[
      ...answeredAt.keys(),
    ]}`,
  );
  assert.equal((await x).value, "1");
  assert.equal((await y).value, "1");

  // The old leader comes back: the held proposal reaches it, and its term-1
  // copy of y commits through c as well as c's re-sent copy.
  paused = "";
  for (const m of held.splice(0)) queue.push(m);
  for (let i = 0; i < 20; i++) {
    for (const d of drivers.values()) d.tick();
    await settle();
  }
  assert.equal(a.leader(), "c");
  const copies = (key: string) =>
    c.node.log.entries.filter((e) => e.data.includes(`"key":"${key}"`))
      .length;
  assert.equal(
    copies("y"),
    2,
    "the re-sent y and the old leader's y are both in the log",
  );
  for (const d of drivers.values()) {
    assert.equal(d.applied, c.node.log.lastIndex());
    assert.equal(d.machine.get("x"), "1");
    assert.equal(d.machine.get("y"), "1");
  }
  for (const [k, n] of applies) assert.equal(n, 1, `${k} applied ${n} times`);
  assert.equal(applies.size, 6);
  for (const d of drivers.values()) d.stop();
});

Deno.test("raft driver: a read forwarded to a leader that stops answering is asked again of the new leader", async () => {
  const t = trio();
  await t.elect();
  const w = t.drivers.get("a")!.propose({ op: "write", key: "x", value: "1" });
  await t.settle();
  await w;
  let answered = -1;
  let ticks = 0;
  const r = t.drivers.get("b")!.read("x").then((v) => {
    answered = ticks;
    return v;
  });
  // a stops: the forwarded ReadIndex request and everything after is lost.
  t.drivers.get("a")!.stop();
  while (ticks < 25 && answered < 0) {
    ticks++;
    t.queue.splice(0, t.queue.length, ...t.queue.filter((m) => m.to !== "a"));
    // b's clock runs slower, so c campaigns first and b votes for it.
    if (ticks % 3 !== 0) t.drivers.get("b")!.tick();
    t.drivers.get("c")!.tick();
    await t.settle();
  }
  assert.ok(answered >= 0, `not answered in ${ticks} ticks (timeout 30)`);
  assert.equal((await r).value, "1");
});
