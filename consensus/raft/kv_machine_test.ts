import assert from "node:assert/strict";
import { KvMachine, parseKvCommand } from "./kv_machine.ts";

Deno.test("raft kv: write, compare-and-set and delete return the values before and after", () => {
  const m = new KvMachine();
  assert.deepEqual(m.apply({ op: "write", key: "x", value: "1" }), {
    ok: true,
    value: "1",
    previous: null,
  });
  assert.deepEqual(m.apply({ op: "cas", key: "x", expect: "0", value: "2" }), {
    ok: false,
    value: "1",
    previous: "1",
  });
  assert.equal(m.get("x"), "1");
  assert.equal(
    m.apply({ op: "cas", key: "x", expect: "1", value: "2" }).ok,
    true,
  );
  assert.equal(
    m.apply({ op: "cas", key: "y", expect: null, value: "new" }).ok,
    true,
  );
  assert.equal(
    m.apply({ op: "cas", key: "y", expect: null, value: "again" }).ok,
    false,
  );
  assert.deepEqual(m.apply({ op: "delete", key: "x" }), {
    ok: true,
    value: null,
    previous: "2",
  });
  assert.equal(m.get("x"), null);
});

Deno.test("raft kv: a snapshot restores the same map", () => {
  const m = new KvMachine();
  m.apply({ op: "write", key: "a", value: "1" });
  m.apply({ op: "write", key: "b", value: "2" });
  const copy = new KvMachine();
  copy.restore(m.snapshot());
  assert.equal(copy.get("b"), "2");
  assert.equal(copy.size, 2);
  copy.restore("");
  assert.equal(copy.size, 0);
});

Deno.test("raft kv: a proposal applies once, and its snapshot remembers which were applied", () => {
  const m = new KvMachine();
  const w = { op: "write", key: "x", value: "1" } as const;
  assert.deepEqual(m.applyProposal("n1/ab/1", w), {
    ok: true,
    value: "1",
    previous: null,
  });
  m.apply({ op: "write", key: "x", value: "2" });
  // A re-sent copy committed later must not overwrite the newer value.
  assert.equal(m.applyProposal("n1/ab/1", w), undefined);
  assert.equal(m.get("x"), "2");
  const copy = new KvMachine();
  copy.restore(m.snapshot());
  assert.equal(copy.applyProposal("n1/ab/1", w), undefined);
  assert.equal(copy.get("x"), "2");
  assert.equal(copy.applyProposal("n1/ab/2", w)?.value, "1");
});

Deno.test("raft kv: a snapshot taken before proposal ids were kept still restores", () => {
  const m = new KvMachine();
  m.restore(JSON.stringify([["a", "1"]]));
  assert.equal(m.get("a"), "1");
  assert.equal(
    m.applyProposal("n1/ab/1", { op: "delete", key: "a" })?.ok,
    true,
  );
});

Deno.test("raft kv: malformed commands are refused with the value seen", () => {
  assert.throws(() => parseKvCommand({ op: "put", key: "x" }), /got "put"/);
  assert.throws(() => parseKvCommand({ op: "write", key: "" }), /non-empty/);
  assert.throws(
    () => parseKvCommand({ op: "write", key: "x", value: 3 }),
    /got 3/,
  );
  assert.throws(
    () => parseKvCommand({ op: "cas", key: "x", expect: 1, value: "v" }),
    /expect must be a string or null, got 1/,
  );
});
