import assert from "node:assert/strict";
import { PUSHED_MEMORY, QueueDelivery } from "./delivery.ts";
import { Outbox } from "../outbox.ts";

Deno.test("delivery: pushed() answers for the last PUSHED_MEMORY ids pushed, oldest forgotten first; a repeat is not counted twice", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const { privateKey } = await crypto.subtle.generateKey("Ed25519", false, [
      "sign",
    ]) as CryptoKeyPair;
    const sent: string[] = [];
    const delivery = new QueueDelivery({
      config: {
        channels: { alerts: { durable: false } },
        maxInFlight: 8,
        ackTimeoutMs: 30_000,
      },
      outbox: new Outbox(kv),
      metrics: { delivery: () => {}, queueDepth: () => {} },
      log: console,
      signingKey: privateKey,
      owner: "n1/c1",
      subs: new Set(["alerts"]),
      agentId: () => "agent-1",
      ready: () => true,
      congested: () => false,
      header: (f) => ({
        sid: "s1",
        from: "node:n1",
        to: "agent-1",
        ch: "",
        ...f,
      }),
      send: (h) => void sent.push(h.id),
      after: () => {},
      fail: (err) => {
        throw err;
      },
    });
    const fields = (id: string) => ({ id, priority: 4, messageType: "n" });
    const body = new Uint8Array(0);
    await delivery.pushEphemeral("alerts", body, fields("first"));
    await delivery.pushEphemeral("alerts", body, fields("first")); // a repeat
    for (let i = 1; i < PUSHED_MEMORY; i++) {
      await delivery.pushEphemeral("alerts", body, fields(`m-${i}`));
    }
    assert.equal(sent.length, PUSHED_MEMORY + 1);
    assert.equal(delivery.pushed("first"), true, "the repeat took no slot");
    await delivery.pushEphemeral("alerts", body, fields("next"));
    assert.equal(delivery.pushed("first"), false, "the oldest went");
    assert.equal(delivery.pushed("m-1"), true);
    assert.equal(delivery.pushed("next"), true);
    await delivery.pushEphemeral("alerts", body, fields("after"));
    assert.equal(delivery.pushed("m-1"), false);
    assert.equal(delivery.pushed(`m-${PUSHED_MEMORY - 1}`), true);
    await delivery.stop(1000);
  } finally {
    kv.close();
  }
});
