import assert from "node:assert/strict";
import { balancerNames, createBalancer, registerBalancer } from "./registry.ts";
import { createRoundRobin } from "./round_robin.ts";

Deno.test("registry: every built-in strategy resolves by name and by {type, options}", () => {
  assert.deepEqual(balancerNames().slice(0, 6), [
    "round-robin",
    "random",
    "smooth-weighted",
    "least-connections",
    "p2c-ewma",
    "consistent-hash",
  ]);
  for (const name of balancerNames()) {
    const b = createBalancer(name);
    assert.equal(b.name, name);
    assert.ok(["a", "b"].includes(b.pick([{ id: "a" }, { id: "b" }])!.id));
  }
  assert.throws(
    () =>
      createBalancer({ type: "consistent-hash", options: { boundedLoad: 0 } }),
    /boundedLoad must be a finite number ≥ 1, got 0/,
  );
});

Deno.test("registry: a third-party strategy can be registered; unknown names list what exists", () => {
  registerBalancer("always-first", () => ({
    ...createRoundRobin(),
    name: "always-first",
    pick: (c) => c[0],
  }));
  assert.equal(createBalancer("always-first").pick([{ id: "z" }])!.id, "z");
  assert.throws(
    () => createBalancer("nope"),
    /unknown strategy 'nope' \(registered: round-robin, random, .*always-first\)/,
  );
  assert.throws(
    () => registerBalancer("Bad Name", createRoundRobin),
    /'Bad Name'/,
  );
});
