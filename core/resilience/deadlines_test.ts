import assert from "node:assert/strict";
import { Deadlines } from "./deadlines.ts";

Deno.test("deadlines: each fires once, never before its time", async () => {
  const deadlines = new Deadlines(5);
  const t0 = Date.now();
  const fired = new Map<number, number>();
  const all = [0, 1, 7, 20, 33].map((ms) =>
    new Promise<void>((resolve) =>
      deadlines.add(ms, () => {
        assert.ok(!fired.has(ms), `${ms} fired twice`);
        fired.set(ms, Date.now() - t0);
        resolve();
      })
    )
  );
  assert.equal(deadlines.size, 5);
  await Promise.all(all);
  for (const [ms, at] of fired) {
    assert.ok(at >= ms, `the ${ms} ms deadline fired after ${at} ms`);
  }
  assert.equal(deadlines.size, 0);
});

Deno.test("deadlines: a cancelled deadline never fires; an idle set lets the test end", async () => {
  const deadlines = new Deadlines(5);
  const cancelled = deadlines.add(5, () => assert.fail("cancelled, fired"));
  const kept = new Promise<string>((r) => deadlines.add(15, () => r("kept")));
  deadlines.cancel(cancelled);
  deadlines.cancel(cancelled); // twice: nothing
  assert.equal(deadlines.size, 1);
  assert.equal(await kept, "kept");
  assert.equal(deadlines.size, 0);
  // Deno.test's sanitizer fails this test if the timer still held the process.
  const last = deadlines.add(1000, () => assert.fail("cancelled, fired"));
  deadlines.cancel(last);
});

/** Runs `code` (which gets `Deadlines` and `t0`) in a fresh process: its stdout. */
async function inProcess(code: string): Promise<{ out: string }> {
  const url = new URL("./deadlines.ts", import.meta.url).href;
  const { stdout, success } = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { Deadlines } from "${url}"; const t0 = Date.now(); ${code}`,
    ],
    stdout: "piped",
    stderr: "inherit",
    // A timer that held an idle process would make it run forever.
    signal: AbortSignal.timeout(20_000),
  }).output();
  assert.ok(success);
  return { out: new TextDecoder().decode(stdout).trim() };
}

Deno.test("deadlines: a pending deadline keeps the process alive until it fires; none pending, the process may end", async () => {
  // Nothing else keeps this process: the deadline must.
  const pending = await inProcess(
    `new Deadlines().add(300, () => console.log("fired", Date.now() - t0 >= 300));`,
  );
  assert.equal(pending.out, "fired true");
  // Cancelled right away, with a long deadline: the process does not wait
  // for it (the timer lets go as the set goes idle).
  const idle = await inProcess(
    `const d = new Deadlines(); d.cancel(d.add(60_000, () => console.log("fired"))); console.log("idle", d.size);`,
  );
  assert.equal(idle.out, "idle 0");
});

Deno.test("deadlines: buckets follow the given clock; a bucket fires once its time has come", async () => {
  let now = 1_000_000;
  const deadlines = new Deadlines(5, () => now);
  const fired: string[] = [];
  const add = (ms: number, name: string) => {
    const d = deadlines.add(ms, () => fired.push(name));
    // Never early: the bucket's time is at or after the deadline.
    assert.ok(d.bucket * 5 >= now + ms, `${name}: bucket ${d.bucket}`);
    return d.bucket;
  };
  assert.equal(add(3, "a"), 200_001);
  assert.equal(add(5, "b"), 200_001);
  assert.equal(add(6, "c"), 200_002);
  assert.equal(add(0, "zero"), 200_001); // the next bucket, never a swept one
  /** Moves the clock to a bucket's time and waits for the sweep there. */
  const at = async (t: number) => {
    now = t;
    await new Promise<void>((r) => deadlines.add(0, r));
    return fired.splice(0);
  };
  assert.deepEqual(await at(1_000_005), ["a", "b", "zero"]);
  assert.deepEqual(await at(1_000_010), ["c"]);
  assert.equal(deadlines.size, 0);
});

Deno.test("deadlines: one deadline that throws does not keep the others of its tick from firing", async () => {
  const deadlines = new Deadlines(5);
  const fired: string[] = [];
  const errors: unknown[] = [];
  const onError = (e: ErrorEvent) => {
    e.preventDefault();
    errors.push(e.error);
  };
  globalThis.addEventListener("error", onError);
  try {
    const done = new Promise<void>((resolve) => {
      deadlines.add(1, () => fired.push("a"));
      deadlines.add(1, () => {
        throw new Error("boom");
      });
      deadlines.add(1, () => fired.push("b"));
      deadlines.add(30, resolve);
    });
    await done;
  } finally {
    globalThis.removeEventListener("error", onError);
  }
  assert.deepEqual(fired, ["a", "b"]);
  assert.equal((errors[0] as Error)?.message, "boom");
  assert.equal(deadlines.size, 0);
});

Deno.test("deadlines: a tick under 1 ms is refused", () => {
  assert.throws(() => new Deadlines(0), /tickMs must be at least 1, got 0/);
});
