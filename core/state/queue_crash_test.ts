/**
 * SIGKILL against the queue's commit modes, with a real child process
 * (`_queue_crash_child.ts`) producing and consuming on a KV file: what the
 * child's callers were told is compared with what a fresh process reads.
 *
 * - sync: every acknowledged enqueue is stored and every acknowledged ack
 *   is done.
 * - `{ windowMs }`: everything acknowledged more than `windowMs` + a
 *   scheduling margin before the kill survived; only later ones may be
 *   missing. The messages are stored packed in segments (read back
 *   through `get()`), so the check covers that storage.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DurableQueue } from "./queue.ts";
import { openStore } from "./store.ts";

const CHILD = new URL("./_queue_crash_child.ts", import.meta.url).pathname;
/**
 * Slack for the two commits the window allows beside `windowMs` (the one
 * under way and the caller's own) and for the kill reaching the child, on
 * a loaded machine: a commit of 100 messages takes a few ms when idle.
 */
const MARGIN_MS = 1_000;
/** How long the child runs after its first acknowledgement. */
const RUN_MS = 2_500;

interface Seen {
  seq: number;
  /** performance.now() in this process when the line arrived. */
  at: number;
}

/** The lines of `stream`, as they arrive. */
async function* lines(stream: ReadableStream<Uint8Array>) {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop()!;
    yield* parts;
  }
}

async function crash(mode: string) {
  const dir = await Deno.makeTempDir({ prefix: "plexus-queue-crash-" });
  const path = join(dir, "q.kv");
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-kv",
      `--allow-read=${dir}`,
      `--allow-write=${dir}`,
      CHILD,
      path,
      mode,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const enqueued: Seen[] = [];
  const acked: Seen[] = [];
  let killedAt = Infinity;
  let timer: ReturnType<typeof setTimeout> | undefined;
  // Killed RUN_MS after the first acknowledgement, whatever it prints.
  const kill = () => {
    killedAt = performance.now();
    child.kill("SIGKILL");
  };
  // A child that never acknowledges anything is killed too (and fails below).
  const stuck = setTimeout(kill, 60_000);
  try {
    for await (const line of lines(child.stdout)) {
      const at = performance.now();
      const [kind, ...seqs] = line.split(" ");
      if (kind === "ready") continue;
      const into = kind === "E" ? enqueued : acked;
      for (const s of seqs) into.push({ seq: Number(s), at });
      timer ??= setTimeout(kill, RUN_MS);
    }
  } finally {
    clearTimeout(timer);
    clearTimeout(stuck);
  }
  const status = await child.status;
  assert.equal(status.signal, "SIGKILL", `child ended with ${status.code}`);
  // A fresh process's view: what is stored, and in which state.
  const kv = await openStore(path);
  const q = new DurableQueue<number>(kv, "crash");
  const state = new Map<number, string>();
  // Window mode packs enqueues into segments: each message's state as
  // get() reads it (a record, where one exists, wins below).
  let packed = 0;
  for await (
    const e of kv.list<{ id: string; payload: number }[]>({
      prefix: ["queue", "crash", "seg"],
    })
  ) {
    for (const m of e.value) {
      const now = await q.get(m.id);
      if (now) state.set(m.payload, now.state);
      packed++;
    }
  }
  for await (
    const e of kv.list<{ payload: number; state: string }>({
      prefix: ["queue", "crash", "msg"],
    })
  ) state.set(e.value.payload, e.value.state);
  const stats = await q.stats();
  kv.close();
  await Deno.remove(dir, { recursive: true });
  return { enqueued, acked, killedAt, state, stats, packed };
}

Deno.test("queue crash: sync mode loses nothing acknowledged to a SIGKILL", async () => {
  const r = await crash("sync");
  assert.ok(r.enqueued.length >= 200, `only ${r.enqueued.length} enqueues`);
  assert.ok(r.acked.length >= 100, `only ${r.acked.length} acks`);
  const missing = r.enqueued.filter((s) => !r.state.has(s.seq));
  assert.deepEqual(missing.map((s) => s.seq), [], "acknowledged enqueues lost");
  const notDone = r.acked.filter((s) => r.state.get(s.seq) !== "done");
  assert.deepEqual(notDone.map((s) => s.seq), [], "acknowledged acks lost");
});

Deno.test("queue crash: a SIGKILL in window mode loses at most what was acknowledged within the window", async () => {
  const windowMs = 100;
  const r = await crash(String(windowMs));
  const cutoff = r.killedAt - windowMs - MARGIN_MS;
  const old = r.enqueued.filter((s) => s.at < cutoff);
  const oldAcks = r.acked.filter((s) => s.at < cutoff);
  // Enough acknowledged before the cutoff for the check to mean something.
  assert.ok(old.length >= 200, `only ${old.length} enqueues before the cutoff`);
  assert.ok(oldAcks.length >= 100, `only ${oldAcks.length} acks before it`);
  const lostOld = old.filter((s) => !r.state.has(s.seq));
  assert.deepEqual(
    lostOld.map((s) => s.seq),
    [],
    `enqueues acknowledged over ${windowMs} + ${MARGIN_MS} ms before the kill were lost`,
  );
  const undoneOld = oldAcks.filter((s) => r.state.get(s.seq) !== "done");
  assert.deepEqual(
    undoneOld.map((s) => s.seq),
    [],
    `acks acknowledged over ${windowMs} + ${MARGIN_MS} ms before the kill were lost`,
  );
  // What is lost is within the window: no more than was acknowledged in it.
  const lost = r.enqueued.filter((s) => !r.state.has(s.seq));
  const recent = r.enqueued.filter((s) => s.at >= cutoff);
  assert.ok(lost.length <= recent.length);
  // The survivors are consistent: the counters match the records.
  const ready = [...r.state.values()].filter((s) => s === "ready").length;
  assert.equal(r.stats.ready, ready);
  // The window mode stored them packed, in segments.
  assert.ok(r.packed >= 200, `only ${r.packed} messages stored packed`);
  console.log(
    `window ${windowMs} ms: ${r.enqueued.length} enqueues and ${r.acked.length} acks acknowledged, ` +
      `${lost.length} enqueues and ${
        r.acked.filter((s) => r.state.get(s.seq) !== "done").length
      } acks lost (all within the last ${
        windowMs + MARGIN_MS
      } ms); ${r.packed} stored packed`,
  );
});
