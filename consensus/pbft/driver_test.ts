import assert from "node:assert/strict";
import { ed25519 } from "@noble/curves/ed25519.js";
import { createPbftAuth } from "./auth.ts";
import { PbftDriver, type PbftDriverOptions } from "./driver.ts";
import { PbftFileLog } from "./file_log.ts";
import type { PbftMessage } from "./types.ts";

interface Net {
  drivers: Map<string, PbftDriver>;
  /** Waits until every live replica has executed as far and holds the same state (all quiet); returns it. */
  converged(): Promise<string>;
  ids: string[];
  dirs: string[];
  down: Set<string>;
  close(): Promise<void>;
}

/** Four replicas with real keys and file logs, over an in-memory JSON network. */
async function cluster(
  extra: (id: string) => Partial<PbftDriverOptions> = () => ({}),
  /** Messages the network loses. */
  lose: (m: PbftMessage) => boolean = () => false,
): Promise<Net> {
  const ids = ["a", "b", "c", "d"];
  const keys = new Map(ids.map((id) => [id, ed25519.utils.randomSecretKey()]));
  const publicKeys = new Map(
    ids.map((id) => [id, ed25519.getPublicKey(keys.get(id)!)]),
  );
  const drivers = new Map<string, PbftDriver>();
  const down = new Set<string>();
  const dirs: string[] = [];
  for (const id of ids) {
    const dir = await Deno.makeTempDir({ prefix: `pbft-${id}-` });
    dirs.push(dir);
    const d = new PbftDriver({
      id,
      replicas: ids,
      auth: createPbftAuth({ id, privateKey: keys.get(id)!, publicKeys }),
      storage: await PbftFileLog.open(dir),
      send: (to, ms: PbftMessage[]) => {
        if (down.has(id) || down.has(to)) return;
        const wire = JSON.stringify(ms.filter((m) => !lose(m)));
        setTimeout(() => {
          if (!down.has(to)) drivers.get(to)?.receive(JSON.parse(wire));
        }, 0);
      },
      tickMs: 10,
      viewChangeTicks: 15,
      checkpointInterval: 4,
      requestTimeoutMs: 10_000,
      retryMs: 300,
      ...extra(id),
    });
    drivers.set(id, d);
  }
  for (const d of drivers.values()) d.start();
  return {
    drivers,
    ids,
    dirs,
    down,
    async converged() {
      const until = performance.now() + 20_000;
      for (;;) {
        const live = ids.filter((id) => !down.has(id));
        await Promise.all(live.map((id) => drivers.get(id)!.idle()));
        const s = live.map((id) => drivers.get(id)!.state.serialize());
        const quiet = live.every((id) => !drivers.get(id)!.node.hasReady());
        if (quiet && s.every((x) => x === s[0])) return s[0];
        if (performance.now() > until) {
          throw new Error(
            `replica states did not converge in 20 s: ${
              live.map((id) => JSON.stringify(drivers.get(id)!.status()))
            }`,
          );
        }
        await new Promise((res) => setTimeout(res, 10));
      }
    },
    async close() {
      for (const d of drivers.values()) d.stop();
      for (const dir of dirs) await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("pbft driver: writes and reads resolve on f + 1 matching results and every replica holds the same state", async () => {
  const net = await cluster();
  try {
    const a = net.drivers.get("a")!, c = net.drivers.get("c")!;
    const w = await c.submit({ op: "write", key: "x", value: "1" });
    assert.deepEqual(w.result, { ok: true, value: "1", previous: null });
    assert(w.matching.length >= 2, `matching: ${w.matching}`);
    const cas = await a.submit({
      op: "cas",
      key: "x",
      expect: "1",
      value: "2",
    });
    assert.equal((cas.result as { ok: boolean }).ok, true);
    const r = await net.drivers.get("d")!.submit({ op: "read", key: "x" });
    assert.deepEqual(r.result, { value: "2" });
    // Concurrent writes from every replica: batched, all answered.
    const many = await Promise.all(
      net.ids.flatMap((id) =>
        Array.from(
          { length: 10 },
          (_, i) =>
            net.drivers.get(id)!.submit({
              op: "write",
              key: `k${i}`,
              value: id,
            }),
        )
      ),
    );
    assert.equal(many.length, 40);
    // Replicas may still be executing the last batch: wait for all to agree.
    const s = await net.converged();
    assert.match(s, /k9/);
  } finally {
    await net.close();
  }
});

Deno.test("pbft driver: a primary that equivocates and then goes silent is replaced, and every acknowledged write reads back", async () => {
  const net = await cluster((id) =>
    id === "a" ? { byzantine: { silentAfterMs: 200 } } : {}
  );
  try {
    const b = net.drivers.get("b")!;
    const acked: [string, string][] = [];
    for (let i = 0; i < 6; i++) {
      const value = `v${i}`;
      const w = await b.submit({ op: "write", key: `k${i}`, value });
      assert.equal((w.result as { ok: boolean }).ok, true);
      acked.push([`k${i}`, value]);
    }
    const honest = ["b", "c", "d"].map((id) => net.drivers.get(id)!);
    for (const d of honest) assert(d.node.view >= 1, `view ${d.node.view}`);
    for (const [key, value] of acked) {
      const r = await net.drivers.get("c")!.submit({ op: "read", key });
      assert.deepEqual(r.result, { value });
    }
  } finally {
    await net.close();
  }
});

Deno.test("pbft driver: a replica restarted from its file log rejoins with its executed state", async () => {
  const net = await cluster();
  try {
    const b = net.drivers.get("b")!;
    for (let i = 0; i < 5; i++) {
      await b.submit({ op: "write", key: `k${i}`, value: `${i}` });
    }
    // All quiet and equal: nothing of d's is half persisted.
    const before = await net.converged();
    net.down.add("d");
    net.drivers.get("d")!.stop();
    const ids = net.ids;
    // A fresh driver on the same directory replays what it persisted.
    const log = await PbftFileLog.open(net.dirs[3]);
    assert(log.records().length > 0);
    const keys = ed25519.utils.randomSecretKey();
    const d2 = new PbftDriver({
      id: "d",
      replicas: ids,
      auth: createPbftAuth({
        id: "d",
        privateKey: keys,
        publicKeys: new Map(ids.map((id) => [id, ed25519.getPublicKey(keys)])),
      }),
      storage: log,
      send: () => {},
      tickMs: 0,
      checkpointInterval: 4,
    });
    d2.start();
    await d2.idle();
    assert.equal(d2.state.serialize(), before);
    d2.stop();
  } finally {
    await net.close();
  }
});

Deno.test("pbft driver: operations submitted while requests are outstanding leave together, each answered with its own result", async () => {
  const net = await cluster(() => ({ maxOutstanding: 1 }));
  try {
    const b = net.drivers.get("b")!;
    const before = b.requests;
    // 1 request goes out at once; the other 29 wait for it and leave as one.
    const writes = Array.from(
      { length: 30 },
      (_, i) => b.submit({ op: "write", key: `g${i}`, value: `${i}` }),
    );
    const results = await Promise.all(writes);
    assert.equal(b.requests - before, 2);
    results.forEach((r, i) =>
      assert.deepEqual(r.result, { ok: true, value: `${i}`, previous: null })
    );
    // Two reads in flight at once: each gets its own answer.
    const [read, other] = await Promise.all([
      b.submit({ op: "read", key: "g7" }),
      b.submit({ op: "read", key: "g8" }),
    ]);
    assert.deepEqual(read.result, { value: "7" });
    assert.deepEqual(other.result, { value: "8" });
    assert.equal(b.status().waiting, 0);
  } finally {
    await net.close();
  }
});

Deno.test("pbft driver: a node whose own replica has not executed its request takes the result whole from the others once it asks again", async () => {
  // b never gets a commit, so its replica never executes: the others'
  // first answers are digests only, which b cannot turn into a result; it
  // asks again (its stalled replica re-sends what waits, or the retry).
  const net = await cluster(
    () => ({}),
    (m) => m.to === "b" && m.payload.type === "commit",
  );
  try {
    const b = net.drivers.get("b")!;
    const w = await b.submit({ op: "write", key: "x", value: "1" });
    assert.deepEqual(w.result, { ok: true, value: "1", previous: null });
    assert.equal(b.executed, 0, "b's replica executed nothing");
    assert(!w.matching.includes("b"), `matching: ${w.matching}`);
    assert(w.matching.length >= 2, `matching: ${w.matching}`);
  } finally {
    await net.close();
  }
});
