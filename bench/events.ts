/**
 * Event store events/s appended (batched) and replayed, versus raw
 * single-key `kv.atomic()` commits/s on the same KV file in the same run.
 *
 *   deno run -A bench/events.ts [--quick] [--rounds 5] [--events N]
 *     [--burst 100] [--unbatched N] [--raw-seconds S]
 *
 * Phases, on one fresh temporary KV file, each store phase between two raw
 * measurements (the machine is shared and its load drifts):
 * - raw: `kv.atomic().set(["raw"], i).commit()` back to back for a fixed
 *   time; the baseline is the median of all raw runs;
 * - appended (`--rounds` times; the median is the headline value): events
 *   of a node's shape (~250 bytes, `task.*` and `agent.*` streams) appended
 *   in bursts of `--burst` per event-loop turn, the next burst once the
 *   previous is stored; N / time to the last commit;
 * - replayed: the whole log read back from the start in pages, merged
 *   over its streams; N / time;
 * - unbatched: one append awaited at a time (one commit per event).
 *
 * @module
 */
import { join } from "node:path";
import { openStore } from "../core/state/store.ts";
import { createEventStore, type NewEvent } from "../plugins/events/store.ts";
import { info, isQuick, median, numFlag, round, spread } from "./_util.ts";

const quick = isQuick();
const ROUNDS = numFlag("rounds", quick ? 3 : 5);
const EVENTS = numFlag("events", quick ? 5_000 : 20_000);
const BURST = numFlag("burst", 100);
const UNBATCHED = numFlag("unbatched", quick ? 300 : 1_000);
const RAW_SECONDS = numFlag("raw-seconds", quick ? 0.4 : 0.6);

const dir = await Deno.makeTempDir({ prefix: "plexus-bench-events-" });
const kv = await openStore(join(dir, "bench.kv"));

async function raw(): Promise<number> {
  const until = performance.now() + RAW_SECONDS * 1000;
  const t0 = performance.now();
  let n = 0;
  while (performance.now() < until) {
    await kv.atomic().set(["raw"], n++).commit();
  }
  return n / ((performance.now() - t0) / 1000);
}

let seq = 0;
function event(i: number): NewEvent {
  const agent = i % 5 === 0;
  return {
    stream: agent ? "agent" : "task",
    id: crypto.randomUUID(),
    type: agent ? "agent.connected" : "task.completed",
    version: 1,
    at: Date.now(),
    node: "bench",
    seq: ++seq,
    data: agent
      ? {
        agentId: `did:key:z6Mk${i}`,
        session: crypto.randomUUID(),
        channels: ["jobs"],
      }
      : {
        taskId: crypto.randomUUID(),
        type: "resize",
        attempt: 1,
        durationMs: 12.5,
      },
  };
}

async function appendPhase(): Promise<{ rate: number; commits: number }> {
  const store = createEventStore(kv);
  const t0 = performance.now();
  const vs = new Set<string>();
  for (let i = 0; i < EVENTS; i += BURST) {
    const offsets = await Promise.all(
      Array.from(
        { length: Math.min(BURST, EVENTS - i) },
        (_, k) => store.append(event(i + k)),
      ),
    );
    for (const o of offsets) vs.add(o.slice(0, 20));
  }
  const rate = EVENTS / ((performance.now() - t0) / 1000);
  await store.close();
  return { rate, commits: vs.size };
}

async function replayPhase(expected: number): Promise<number> {
  const store = createEventStore(kv);
  const t0 = performance.now();
  let after = "";
  let n = 0;
  for (;;) {
    const page = await store.read({ after });
    n += page.events.length;
    if (page.next === after) break;
    after = page.next;
  }
  const rate = n / ((performance.now() - t0) / 1000);
  if (n !== expected) {
    throw new Error(`replayed ${n} events, expected ${expected}`);
  }
  await store.close();
  return rate;
}

async function unbatchedPhase(): Promise<number> {
  const store = createEventStore(kv);
  const t0 = performance.now();
  for (let i = 0; i < UNBATCHED; i++) await store.append(event(i));
  const rate = UNBATCHED / ((performance.now() - t0) / 1000);
  await store.close();
  return rate;
}

const raws: number[] = [await raw()];
const appended: { rate: number; ratio: number; commits: number }[] = [];
const replayed: { rate: number; ratio: number }[] = [];
let stored = 0;
for (let r = 0; r < ROUNDS; r++) {
  const before = raws.at(-1)!;
  const a = await appendPhase();
  stored += EVENTS;
  const mid = await raw();
  raws.push(mid);
  appended.push({ ...a, ratio: a.rate / ((before + mid) / 2) });
  const p = await replayPhase(stored);
  const after = await raw();
  raws.push(after);
  replayed.push({ rate: p, ratio: p / ((mid + after) / 2) });
  info(
    `round ${r + 1}: appended ${
      round(a.rate)
    }/s in ${a.commits} commits, replayed ${
      round(p)
    }/s (${stored} events), raw ${round(mid)} / ${round(after)} commits/s`,
  );
}
const unbatched = await unbatchedPhase();
raws.push(await raw());

kv.close();
await Deno.remove(dir, { recursive: true });

const baseline = median(raws);
const value = median(appended.map((a) => a.rate));
const replay = median(replayed.map((r) => r.rate));
console.log(JSON.stringify({
  bench: "events",
  metric: "events_appended_per_s",
  unit: "1/s",
  value: round(value),
  baseline: { name: "raw kv.atomic commits", value: round(baseline) },
  ratio: round(value / baseline, 3),
  notes: `value = median of ${ROUNDS} runs appending ${EVENTS} events in ` +
    `bursts of ${BURST} per turn (batched into shared commits); baseline = ` +
    `median of ${raws.length} raw single-key commit runs on the same KV ` +
    `file, around every phase; replay = the whole log read back from the ` +
    `start, merged over its streams`,
  details: {
    appended_per_s: appended.map((a) => round(a.rate)),
    appended_paired_ratio: round(median(appended.map((a) => a.ratio)), 3),
    events_per_commit: round(
      EVENTS / median(appended.map((a) => a.commits)),
      1,
    ),
    replayed_per_s: round(replay),
    replayed_runs: replayed.map((r) => round(r.rate)),
    replay_ratio: round(replay / baseline, 3),
    unbatched_per_s: round(unbatched),
    unbatched_ratio: round(unbatched / baseline, 3),
    raw_commits_per_s: raws.map((r) => round(r)),
    raw_spread: round(spread(raws), 3),
  },
}));
