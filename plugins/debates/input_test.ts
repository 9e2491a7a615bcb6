import assert from "node:assert/strict";
import { DebateInputError, parseDebateInput } from "./input.ts";

const good = {
  topic: "Should the cache be on by default?",
  participants: ["did:key:z6MkA", "debate"],
  rounds: 3,
  consensus: { method: "majority" },
};

const refused = (body: unknown, pattern: RegExp, field: string) => {
  assert.throws(() => parseDebateInput(body), pattern);
  try {
    parseDebateInput(body);
  } catch (e) {
    assert.ok(e instanceof DebateInputError);
    assert.equal(e.field, field);
    assert.equal(e.status, 400);
    assert.equal(e.code, "bad_debate");
  }
};

Deno.test("debate input: a good request gets its defaults", () => {
  const input = parseDebateInput(good);
  assert.equal(input.turnTimeoutMs, 30_000);
  assert.deepEqual(input.consensus, { method: "majority" });
});

Deno.test("debate input: every refusal names the field and the value seen", () => {
  refused({ ...good, rounds: 0 }, /rounds: at least 1 round, got 0/, "rounds");
  refused(
    { ...good, rounds: 10_000 },
    /rounds: at most 50 rounds, got 10000/,
    "rounds",
  );
  refused(
    { ...good, topic: "x".repeat(100_000) },
    /topic: at most 2000 characters, got a string of 100000 characters/,
    "topic",
  );
  refused({ ...good, topic: "  " }, /topic: must not be empty/, "topic");
  refused(
    { ...good, participants: ["a"] },
    /participants: at least 2 participants, got 1 items/,
    "participants",
  );
  refused(
    { ...good, participants: ["a", "b c"] },
    /participants\[1\]: expected an agent id or a capability name/,
    "participants[1]",
  );
  refused(
    { ...good, consensus: { method: "threshold", threshold: 1.5 } },
    /consensus\.threshold: at most 1, got 1.5/,
    "consensus.threshold",
  );
  refused(
    { ...good, consensus: { method: "threshold" } },
    /consensus\.threshold: required for method 'threshold'/,
    "consensus.threshold",
  );
  refused(
    { ...good, consensus: { method: "majority", threshold: 0.5 } },
    /consensus\.threshold: only for method 'threshold'/,
    "consensus.threshold",
  );
  refused(
    { ...good, consensus: { method: "plurality" } },
    /consensus\.method: /,
    "consensus.method",
  );
  refused({ ...good, colour: "red" }, /\(body\): .*colour/, "(body)");
});
