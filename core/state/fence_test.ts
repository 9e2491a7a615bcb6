import assert from "node:assert/strict";
import { electionEpochKey } from "./keys.ts";
import { fenceCheck, guardedAtomic, NotLeaderError } from "./fence.ts";

Deno.test("fence: a guarded write commits while the term is current and fails once a new term begins", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { versionstamp } = await kv.set(electionEpochKey("e"), {
    epoch: 1,
    holder: "a",
    nonce: "x",
  });
  const token = { election: "e", epoch: 1, holder: "a", versionstamp };
  assert.equal(
    (await guardedAtomic(kv, token).set(["r"], 1).commit()).ok,
    true,
  );
  // Another acquisition rewrites the fencing record.
  await kv.set(electionEpochKey("e"), { epoch: 2, holder: "b", nonce: "y" });
  assert.deepEqual(
    await guardedAtomic(kv, token).set(["r"], 2).commit(),
    { ok: false },
  );
  assert.equal((await kv.get(["r"])).value, 1);
});

Deno.test("fence: the check names the election's fencing key and the term's versionstamp", () => {
  assert.deepEqual(
    fenceCheck({ election: "e", epoch: 3, holder: "a", versionstamp: "0001" }),
    { key: ["election", "e", "epoch"], versionstamp: "0001" },
  );
});

Deno.test("fence: NotLeaderError carries a code, the leader seen and retryable", () => {
  const err = new NotLeaderError("not the leader", "b");
  assert.equal(err.name, "NotLeaderError");
  assert.equal(err.code, "NOT_LEADER");
  assert.equal(err.leader, "b");
  assert.equal(err.retryable, true);
  assert.ok(err instanceof Error);
});
