import assert from "node:assert/strict";
import { createRouter, topicMatches, validateTopic } from "./router.ts";

Deno.test("router: * matches one segment and > the rest", () => {
  assert.ok(topicMatches("agent.*.heartbeat", "agent.a1.heartbeat"));
  assert.ok(!topicMatches("agent.*.heartbeat", "agent.a1.b.heartbeat"));
  assert.ok(topicMatches("backend.>", "backend.a1.policies"));
  assert.ok(!topicMatches("backend.>", "backend"));
  assert.ok(topicMatches("a.b", "a.b"));
  assert.ok(!topicMatches("a.b", "a.b.c"));
  assert.ok(!topicMatches("a.b.c", "a.b"));
});

Deno.test("router: bad topics are refused naming the segment", () => {
  assert.throws(() => validateTopic("a..b"), /segment 2 is empty in 'a\.\.b'/);
  assert.throws(() => validateTopic("a.*"), /segment 2 is '\*'/);
  assert.throws(() => validateTopic(""), /empty/);
  assert.throws(() => validateTopic("a.>.b", true), /segment 2 is '>'/);
  assert.doesNotThrow(() => validateTopic("a.*.>", true));
  const r = createRouter();
  assert.throws(() => r.publish("a b", 1), /segment 1 is 'a b'/);
});

Deno.test("router: publish reaches every matching subscriber until unsubscribed", () => {
  const r = createRouter();
  const got: string[] = [];
  const off = r.subscribe(
    "agent.*.heartbeat",
    (_p, t) => void got.push(`w:${t}`),
  );
  r.subscribe("agent.a1.heartbeat", (_p, t) => void got.push(`x:${t}`));
  assert.equal(r.publish("agent.a1.heartbeat", {}), 2);
  off();
  assert.equal(r.publish("agent.a1.heartbeat", {}), 1);
  assert.deepEqual(got, [
    "w:agent.a1.heartbeat",
    "x:agent.a1.heartbeat",
    "x:agent.a1.heartbeat",
  ]);
});

Deno.test("router: a throwing handler is reported and does not stop the others", async () => {
  const errors: unknown[] = [];
  const r = createRouter({ onError: (e) => errors.push(e) });
  let reached = 0;
  r.subscribe("t", () => {
    throw new Error("sync");
  });
  r.subscribe("t", () => Promise.reject(new Error("async")));
  r.subscribe("t", () => void reached++);
  r.publish("t", 1);
  await new Promise((res) => setTimeout(res, 0));
  assert.equal(reached, 1);
  assert.deepEqual(errors.map((e) => (e as Error).message).sort(), [
    "async",
    "sync",
  ]);
});

Deno.test("router: request resolves with the reply, fails fast with no subscriber, times out", async () => {
  const r = createRouter();
  r.subscribe(
    "math.double",
    (p, _t, replyTo) => void r.publish(replyTo!, (p as number) * 2),
  );
  assert.equal(await r.request("math.double", 21), 42);
  await assert.rejects(
    r.request("nobody.home", 1),
    /No subscriber for request on 'nobody\.home'/,
  );
  r.subscribe("black.hole", () => {});
  await assert.rejects(
    r.request("black.hole", 1, { timeoutMs: 20 }),
    /timed out after 20 ms/,
  );
});
