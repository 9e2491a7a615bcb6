import assert from "node:assert/strict";
import type { PromptHopContext } from "../../../sdk/prompt_agent.ts";
import { demoRules, detectScenario } from "./agents.ts";

const hop = (
  prompt: string,
  extra: Partial<PromptHopContext> = {},
): PromptHopContext & { asked: [string, unknown][] } => {
  const asked: [string, unknown][] = [];
  return {
    requestId: "r",
    hop: 0,
    prompt,
    sage: false,
    asked,
    signal: new AbortController().signal,
    stream: () => Promise.resolve(),
    ask: (cap, payload) => {
      asked.push([cap, payload]);
      return Promise.resolve(`<${cap}>`);
    },
    ...extra,
  };
};

Deno.test("demo agents: the root routes by scenario, or by keywords when none is named", async () => {
  const h = hop("A room in Lisbon", { scenario: "hotel" });
  assert.equal(
    await demoRules.root(h),
    "Hotel request handled. <plan> <order>",
  );
  assert.deepEqual(h.asked.map(([c]) => c), ["plan", "order"]);
  assert.equal(
    await demoRules.root(hop("buy a lamp")),
    "Order request handled. <order>",
  );
  assert.equal(
    await demoRules.root(hop("plan my trip")),
    "Planning request handled. <plan>",
  );
  assert.equal(
    await demoRules.root(hop("hello")),
    'I can help with hotels, orders and plans. You said "hello".',
  );
  assert.equal(detectScenario("2 nights in Porto"), "hotel");
});

Deno.test("demo agents: planning and ordering answers are deterministic", async () => {
  assert.equal(
    await demoRules.planning(hop("stay: A room in Lisbon")),
    'Plan for "A room in Lisbon": 1) fix the dates; 2) shortlist three hotels; 3) reserve the best one.',
  );
  const a = await demoRules.ordering(
    hop("x", { payload: { item: "hotel room" } }),
  );
  const b = await demoRules.ordering(
    hop("x", { payload: { item: "hotel room" } }),
  );
  assert.equal(a, b);
  assert.match(a, /^Order ORD-[0-9A-F]{8} placed for "hotel room"\.$/);
  assert.notEqual(await demoRules.ordering(hop("y")), a);
});
