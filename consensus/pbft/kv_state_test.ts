import assert from "node:assert/strict";
import { PbftKvState } from "./kv_state.ts";

const req = (t: number, op: unknown) => ({
  client: "a/1",
  t,
  op: JSON.stringify(op),
  sig: "",
});

Deno.test("pbft kv state: a request holding a list of operations runs each in order and answers a list, once", () => {
  const s = new PbftKvState();
  const r = req(1, [
    { op: "write", key: "x", value: "1" },
    { op: "read", key: "x" },
    { op: "nope" },
    { op: "cas", key: "x", expect: "1", value: "2" },
  ]);
  const out = JSON.parse(s.execute(r)!);
  assert.equal(out.length, 4);
  assert.deepEqual(out[0], { ok: true, value: "1", previous: null });
  assert.deepEqual(out[1], { value: "1" });
  assert.match(out[2].error, /Cannot parse KV command/);
  assert.equal(out[3].ok, true);
  assert.equal(s.get("x"), "2");
  // Ordered twice or retried: not run again, answered from the last reply.
  assert.equal(s.execute(r), undefined);
  assert.equal(s.lastReply("a/1", 1), JSON.stringify(out));
  // A single operation (not a list) still answers one result.
  assert.deepEqual(JSON.parse(s.execute(req(2, { op: "read", key: "x" }))!), {
    value: "2",
  });
});
