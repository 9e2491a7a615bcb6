import assert from "node:assert/strict";
import { fullResult, PbftKvState } from "./kv_state.ts";

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
  // A command's answer leaves out the value it wrote.
  assert.deepEqual(out[0], { ok: true, previous: null });
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

Deno.test("pbft kv state: a request overtaken by a later one of its client still runs once; one older than the window never does", () => {
  const s = new PbftKvState();
  const w = (t: number) => req(t, { op: "write", key: `k${t}`, value: `${t}` });
  assert.notEqual(s.execute(w(1)), undefined);
  // 2 and 3 are overtaken by 4.
  assert.notEqual(s.execute(w(4)), undefined);
  assert.equal(s.execute(w(1)), undefined, "1 ran already");
  const three = s.execute(w(3));
  assert.notEqual(three, undefined, "3 runs late");
  assert.equal(s.execute(w(3)), undefined, "and only once");
  assert.equal(s.lastReply("a/1", 3), three);
  // The state round-trips with the gap (2) still open.
  const copy = new PbftKvState();
  copy.restore(s.serialize());
  assert.equal(copy.serialize(), s.serialize());
  assert.notEqual(copy.execute(w(2)), undefined);
  assert.equal(copy.execute(w(2)), undefined);
  // 30 is 26 ahead: what lies 16 or more below it (up to 14) never runs.
  assert.notEqual(s.execute(w(30)), undefined);
  assert.equal(s.execute(w(2)), undefined, "2 is now too old");
  assert.notEqual(s.execute(w(20)), undefined, "20 is within the window");
  assert.equal(s.get("k2"), null);
  // In order, nothing but t and result is kept: the old state format.
  const inOrder = new PbftKvState();
  inOrder.execute(w(1));
  inOrder.execute(w(2));
  assert.doesNotMatch(inOrder.serialize(), /gaps|late/);
});

Deno.test("pbft kv state: a command's full result (its value) follows from the command and the answer the replicas agree on", () => {
  const s = new PbftKvState();
  const ops = [
    { op: "write", key: "x", value: "1" },
    { op: "cas", key: "x", expect: "1", value: "2" },
    { op: "cas", key: "x", expect: "1", value: "3" },
    { op: "delete", key: "x" },
    { op: "read", key: "x" },
  ] as const;
  const answers = JSON.parse(s.execute(req(1, ops))!);
  assert.deepEqual(ops.map((op, i) => fullResult(op, answers[i])), [
    { ok: true, value: "1", previous: null },
    { ok: true, value: "2", previous: "1" },
    { ok: false, value: "2", previous: "2" },
    { ok: true, value: null, previous: "2" },
    { value: null },
  ]);
  assert.deepEqual(fullResult(ops[0], { error: "bad" }), { error: "bad" });
});
