import assert from "node:assert/strict";
import { gatewayConfigSchema } from "./config.ts";
import {
  canPublish,
  canSubscribe,
  channelPolicy,
  channelsSchema,
  DEFAULT_CHANNELS,
  isDurable,
} from "./policy.ts";

Deno.test("policy: a channel's entry is its full name, else its first segment; anything else is denied", () => {
  const channels = {
    policies: { subscribe: ["agent"] },
    "policies.secret": { subscribe: ["admin"] },
  };
  assert.deepEqual(channelPolicy(channels, "policies.v2"), {
    subscribe: ["agent"],
  });
  assert.deepEqual(channelPolicy(channels, "policies.secret"), {
    subscribe: ["admin"],
  });
  assert.equal(channelPolicy(channels, "other"), undefined);
  // Object prototype names are not channels.
  assert.equal(channelPolicy(channels, "constructor"), undefined);
  assert.equal(channelPolicy(channels, "__proto__"), undefined);
  assert.equal(canSubscribe(undefined, ["agent"]), false);
  assert.equal(canPublish(undefined, ["agent"]), false);
  assert.equal(canSubscribe({ subscribe: ["agent"] }, ["worker"]), false);
  assert.equal(
    canSubscribe({ subscribe: ["agent"] }, ["worker", "agent"]),
    true,
  );
  assert.equal(canPublish({ subscribe: ["agent"] }, ["agent"]), false);
});

Deno.test("policy: durable unless said otherwise", () => {
  assert.equal(isDurable({}), true);
  assert.equal(isDurable(undefined), true);
  assert.equal(isDurable({ durable: false }), false);
});

Deno.test("policy: the config defaults are the built-in channels; a channels block replaces them and is validated", () => {
  const defaults = gatewayConfigSchema.parse({});
  assert.deepEqual(defaults.channels, DEFAULT_CHANNELS);
  assert.equal(defaults.handshakeTimeoutMs, 5000);
  assert.equal(defaults.maxMessageBytes, 1 << 20);
  assert.equal(defaults.heartbeatMs, 30_000);
  assert.equal(canSubscribe(defaults.channels.tasks, ["agent"]), false);
  assert.equal(canSubscribe(defaults.channels.tasks, ["worker"]), true);
  const mine = gatewayConfigSchema.parse({
    channels: { jobs: { subscribe: ["runner"] } },
  }).channels;
  assert.deepEqual(Object.keys(mine), ["jobs"]);
  for (
    const bad of [
      { "has space": {} },
      { ok: { publish: ["Upper"] } },
      { ok: { unknown: true } },
      { "a..b": {} },
    ]
  ) {
    assert.equal(
      channelsSchema.safeParse(bad).success,
      false,
      JSON.stringify(bad),
    );
  }
});
