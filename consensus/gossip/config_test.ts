import assert from "node:assert/strict";
import {
  DEFAULT_GOSSIP_CONFIG,
  gossipConfig,
  pushPullIntervalFor,
  retransmitLimit,
} from "./config.ts";

Deno.test("config: the defaults are memberlist's LAN profile with Lifeguard on", () => {
  const c = gossipConfig();
  assert.deepEqual(
    [c.probeIntervalMs, c.probeTimeoutMs, c.indirectChecks, c.suspicionMult],
    [1000, 500, 3, 4],
  );
  assert.deepEqual(
    [
      c.suspicionMaxTimeoutMult,
      c.gossipIntervalMs,
      c.gossipNodes,
      c.retransmitMult,
    ],
    [6, 200, 3, 4],
  );
  assert.equal(c.awarenessMaxMultiplier, 8);
  assert.equal(c.pushPullIntervalMs, 30_000);
  assert.ok(c.awareness && c.suspicionDecay && c.buddy);
  assert.notEqual(c, DEFAULT_GOSSIP_CONFIG);
});

Deno.test("config: a bad field is rejected naming the field and the value", () => {
  assert.throws(
    () => gossipConfig({ probeIntervalMs: 0 }),
    /probeIntervalMs .* got 0/,
  );
  assert.throws(
    () => gossipConfig({ indirectChecks: -1 }),
    /indirectChecks .* got -1/,
  );
  assert.throws(
    () => gossipConfig({ probeIntervalMs: 400, probeTimeoutMs: 500 }),
    /probeTimeoutMs \(500\) must be below probeIntervalMs \(400\)/,
  );
  assert.throws(
    () => gossipConfig({ probeMode: "nearest" as "random" }),
    /probeMode .* got "nearest"/,
  );
});

Deno.test("config: retransmits grow with log10 n and push/pull slows above 32 members", () => {
  assert.equal(retransmitLimit(4, 5), 4);
  assert.equal(retransmitLimit(4, 50), 8);
  assert.equal(retransmitLimit(4, 500), 12);
  assert.equal(pushPullIntervalFor(30_000, 32), 30_000);
  assert.equal(pushPullIntervalFor(30_000, 64), 60_000);
  assert.equal(pushPullIntervalFor(30_000, 500), 150_000);
});
