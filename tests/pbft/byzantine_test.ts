/**
 * Real processes: four PBFT replicas (f = 1). The first primary runs the
 * test-only Byzantine build: it sends half the replicas a different batch
 * for each sequence number, then goes silent, while clients write through
 * the others. Once it is replaced it is SIGKILLed and comes back honest;
 * then the primary of the moment is SIGKILLed too and restarted. In the
 * end every replica holds the same state, and every acknowledged write
 * reads back.
 */
import assert from "node:assert/strict";
import {
  check,
  HistoryRecorder,
  type KvInput,
  kvModel,
  type KvOutput,
} from "../../testing/linearizability.ts";
import { PbftCluster } from "./_pbft_cluster.ts";

interface Writers {
  acked: Map<string, string>;
  failed: () => number;
  stop: () => Promise<void>;
}

/** `n` clients writing unique keys through the running replicas in `via`. */
function startWriters(c: PbftCluster, n: number, via: () => number[]): Writers {
  const acked = new Map<string, string>();
  let failed = 0;
  let stop = false;
  let seq = 0;
  const one = async (w: number) => {
    while (!stop) {
      const targets = via().filter((i) => c.running(i));
      if (targets.length === 0) {
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      const i = targets[seq % targets.length];
      const key = `w${w}-${seq++}`;
      const value = `${key}@${c.nodes[i].id}`;
      try {
        const res = await c.api(i, `/api/v1/pbft/kv/${key}`, {
          method: "PUT",
          body: JSON.stringify({ value }),
        });
        if (res.ok && (await res.json()).ok === true) acked.set(key, value);
        else {
          await res.body?.cancel();
          failed++;
        }
      } catch {
        failed++;
      }
    }
  };
  const all = Array.from({ length: n }, (_, w) => one(w));
  return {
    acked,
    failed: () => failed,
    stop: async () => {
      stop = true;
      await Promise.all(all);
    },
  };
}

/** Clients running read/write/cas on two shared keys, recorded for the linearizability checker. */
function startRegisterClients(
  c: PbftCluster,
  n: number,
  via: () => number[],
) {
  const rec = new HistoryRecorder<KvInput, KvOutput>();
  let stop = false;
  let ops = 0;
  const one = async (client: number) => {
    let k = 0;
    while (!stop) {
      const targets = via().filter((i) => c.running(i));
      const i = targets[(client + k++) % targets.length];
      const key = k % 2 === 0 ? "x" : "y";
      const roll = Math.random();
      const value = `c${client}.${k}`;
      let input: KvInput;
      let init: RequestInit = {};
      if (roll < 0.4) input = { op: "read", key };
      else if (roll < 0.8) {
        input = { op: "write", key, value };
        init = { method: "PUT", body: JSON.stringify({ value }) };
      } else {
        const expected = Math.random() < 0.5 ? null : `c${client}.${k - 2}`;
        input = { op: "cas", key, expected, value };
        init = {
          method: "POST",
          body: JSON.stringify({ expect: expected, value }),
        };
      }
      const id = rec.call(client, input, performance.now());
      try {
        const res = await c.api(i, `/api/v1/pbft/kv/${key}`, init);
        if (res.status === 503) {
          await res.body?.cancel();
          rec.fail(id);
          continue;
        }
        if (!res.ok) {
          await res.body?.cancel();
          rec.abandon(id);
          continue;
        }
        const body = await res.json();
        const out: KvOutput = input.op === "read"
          ? { value: body.value }
          : { ok: body.ok };
        rec.ret(id, out, performance.now());
        ops++;
      } catch {
        rec.abandon(id);
      }
    }
  };
  const all = Array.from({ length: n }, (_, w) => one(w));
  return {
    ops: () => ops,
    stop: async () => {
      stop = true;
      await Promise.all(all);
      return rec.history();
    },
  };
}

Deno.test({
  name:
    "pbft: a primary that equivocates then goes silent, and a SIGKILLed primary after it, lose no acknowledged write and leave every replica with the same state",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const c = await PbftCluster.start(4, [0]);
    try {
      const honest = [1, 2, 3];
      const writers = startWriters(c, 3, () => honest);
      const registers = startRegisterClients(c, 2, () => honest);
      // The Byzantine primary of view 0 is replaced.
      const replaced = await c.until(
        "the honest replicas to leave view 0 and commit",
        honest,
        (s) =>
          s.every((x) => x.view >= 1 && !x.changing) &&
          writers.acked.size >= 10,
        90_000,
      );
      const said = (what: string) =>
        c.nodes[0].proc!.lines.some((l) => l.includes(what));
      assert.ok(said("sent conflicting pre-prepares"), "n1 equivocated");
      // Silent from 1.5 s after its first equivocation; writes go on.
      const silentBy = Date.now() + 30_000;
      while (!said("went silent") && Date.now() < silentBy) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(said("went silent"), "n1 went silent");
      const ackedSilent = writers.acked.size;
      await c.until(
        "writes to commit while n1 is silent",
        honest,
        () => writers.acked.size >= ackedSilent + 10,
      );
      console.log(
        `n1 equivocated, was replaced (view ${
          replaced[0].view
        }) and went silent: ${writers.acked.size} writes acknowledged, ${writers.failed()} attempts failed`,
      );

      // It comes back honest (same key, same data dir) and catches up.
      await c.kill(0);
      await c.spawn(0);
      honest.push(0);
      await c.until(
        "n1 to rejoin the current view",
        [0, 1, 2, 3],
        (s) => s.every((x) => x.view === s[1].view && !x.changing),
        60_000,
      );

      // SIGKILL the primary of the moment; the others move on.
      const before = (await c.status(1))!;
      const p = c.nodes.findIndex((n) => n.id === before.primary);
      const ackedBefore = writers.acked.size;
      await c.kill(p);
      const others = [0, 1, 2, 3].filter((i) => i !== p);
      await c.until(
        `a new view without ${before.primary}`,
        others,
        (s) =>
          s.every((x) => x.view > before.view && !x.changing) &&
          writers.acked.size >= ackedBefore + 10,
        90_000,
      );
      await c.spawn(p);
      await writers.stop();
      const history = await registers.stop();
      assert.equal(check(kvModel(), history, { timeoutMs: 30_000 }), "ok");
      assert(registers.ops() > 20, `register operations: ${registers.ops()}`);

      // A few more writes move everyone past a checkpoint (catching up any
      // replica that missed batches), then all agree.
      for (let k = 0; k < 20; k++) {
        const res = await c.api(k % 4, `/api/v1/pbft/kv/tail-${k}`, {
          method: "PUT",
          body: JSON.stringify({ value: `${k}` }),
        });
        if (res.ok && (await res.json()).ok === true) {
          writers.acked.set(`tail-${k}`, `${k}`);
        } else await res.body?.cancel();
      }
      const final = await c.until(
        "every replica to hold the same state",
        [0, 1, 2, 3],
        (s) =>
          s.every((x) =>
            x.executedSeq === s[0].executedSeq &&
            x.stateDigest === s[0].stateDigest
          ),
        60_000,
      );
      console.log(
        `final: view ${final[0].view}, executed ${
          final[0].executedSeq
        } batches, ${writers.acked.size} writes acknowledged, ${writers.failed()} attempts failed, ${history.length} register operations linearizable`,
      );

      const wrong: string[] = [];
      for (const [key, value] of writers.acked) {
        const res = await c.api(2, `/api/v1/pbft/kv/${key}`);
        const body = await res.json();
        if (body.value !== value) {
          wrong.push(`${key}: ${JSON.stringify(body)} (acked ${value})`);
        }
      }
      assert.deepEqual(wrong, [], `${wrong.length} acknowledged writes lost`);
    } finally {
      await c.close();
    }
  },
});
