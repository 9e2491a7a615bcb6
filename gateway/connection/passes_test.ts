import assert from "node:assert/strict";
import { serialPasses } from "./passes.ts";

Deno.test("passes: a request made at any point of a pass, even as it ends, resolves only after a pass that started after it", async () => {
  // For each number of microtask turns after a pass finishes, make a
  // request then and check a pass started after it before it resolved.
  for (let turns = 0; turns < 12; turns++) {
    let started = 0;
    let release!: () => void;
    const { request } = serialPasses(() => {
      started++;
      return new Promise<void>((r) => release = r);
    }, { more: () => true, fail: (err) => assert.fail(String(err)) });
    const first = request();
    release();
    for (let i = 0; i < turns; i++) await Promise.resolve();
    const startedBefore = started;
    const second = request();
    let resolved = false;
    second.then(() => resolved = true);
    // Let everything but a new pass's own completion run.
    for (let i = 0; i < 20; i++) await Promise.resolve();
    if (started === startedBefore) {
      assert.equal(
        resolved,
        false,
        `after ${turns} turns: no new pass, yet resolved`,
      );
    }
    assert.equal(
      started,
      startedBefore + 1,
      `after ${turns} turns: one new pass`,
    );
    release();
    await Promise.all([first, second]);
    assert.equal(resolved, true);
  }
});

Deno.test("passes: requests during a pass coalesce into one more pass; a failing pass is reported and the next request runs again", async () => {
  let passes = 0;
  const errors: unknown[] = [];
  let fail = false;
  const { request } = serialPasses(async () => {
    passes++;
    await new Promise((r) => setTimeout(r, 5));
    if (fail) throw new Error("boom");
  }, { more: () => true, fail: (err) => errors.push(err) });
  await Promise.all([request(), request(), request(), request()]);
  assert.equal(passes, 2);
  fail = true;
  await request();
  assert.equal(errors.length, 1);
  fail = false;
  await request();
  assert.equal(passes, 4);
});

Deno.test("passes: when more() turns false, requested passes stop after the current one", async () => {
  let passes = 0;
  let open = true;
  const { request } = serialPasses(async () => {
    passes++;
    open = false;
    await Promise.resolve();
  }, { more: () => open, fail: () => {} });
  await Promise.all([request(), request()]);
  assert.equal(passes, 1);
});
