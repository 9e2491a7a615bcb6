import assert from "node:assert/strict";
import { nodeKey } from "../../core/state/keys.ts";
import { memberStatus, readMembers } from "./members.ts";

Deno.test("members: status follows heartbeat age against the thresholds", () => {
  assert.equal(memberStatus(0), "up");
  assert.equal(memberStatus(4_999), "up");
  assert.equal(memberStatus(5_000), "suspect");
  assert.equal(memberStatus(14_999), "suspect");
  assert.equal(memberStatus(15_000), "down");
  const t = { suspectAfterMs: 100, downAfterMs: 200 };
  assert.deepEqual([50, 150, 250].map((a) => memberStatus(a, t)), [
    "up",
    "suspect",
    "down",
  ]);
});

Deno.test("members: reads registry records sorted by id and skips malformed ones", async () => {
  await using kv = await Deno.openKv(":memory:");
  const now = 1_000_000;
  const node = (id: string, heartbeatAt: number) => ({
    id,
    address: `http://${id}:8086`,
    version: "0.1.0",
    load: 0.5,
    heartbeatAt,
    startedAt: 0,
  });
  await kv.set(nodeKey("n3"), node("n3", now - 20_000));
  await kv.set(nodeKey("n1"), node("n1", now - 100));
  await kv.set(nodeKey("n2"), node("n2", now - 6_000));
  await kv.set(nodeKey("bad"), { id: "bad", address: "x" });
  await kv.set(nodeKey("junk"), "not a record");
  await kv.set(["elsewhere", "n9"], node("n9", now));
  assert.deepEqual(await readMembers(kv, { now }), [
    {
      id: "n1",
      address: "http://n1:8086",
      status: "up",
      lastSeen: now - 100,
    },
    {
      id: "n2",
      address: "http://n2:8086",
      status: "suspect",
      lastSeen: now - 6_000,
    },
    {
      id: "n3",
      address: "http://n3:8086",
      status: "down",
      lastSeen: now - 20_000,
    },
  ]);
});
