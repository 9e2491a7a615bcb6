import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { TransportError } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectRabbitmq, loadRabbitmqDriver } from "./transport.ts";

const url = Deno.env.get("AMQP_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'AMQP_URL is not set (run: eval "$(deno task services)")'
  : undefined;
if (skip && !required) console.log(`ignored: rabbitmq transport: ${skip}`);

Deno.test("rabbitmq: a missing client fails with the install hint", async () => {
  await assert.rejects(
    () => loadRabbitmqDriver(() => Promise.reject(new Error("not found"))),
    (e) =>
      e instanceof TransportError && e.code === "unavailable" &&
      /deno add npm:rabbitmq-client@5\.0\.8/.test(e.message) &&
      /not found/.test(e.message),
  );
});

Deno.test({
  name:
    "rabbitmq: no broker at the URL is refused within connectTimeoutMs, naming the URL without its password",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const t0 = Date.now();
    await assert.rejects(
      () =>
        connectRabbitmq({
          url: `amqp://guest:secret@127.0.0.1:${port}`,
          connectTimeoutMs: 500,
        }),
      (e) =>
        e instanceof TransportError && e.code === "unavailable" &&
        e.message.includes(`amqp://guest:***@127.0.0.1:${port}`) &&
        !e.message.includes("secret"),
    );
    assert.ok(Date.now() - t0 < 5000, "gave up in time");
  },
});

for (const queueType of ["classic", "quorum"] as const) {
  Deno.test({
    name:
      `rabbitmq: with ${queueType} group queues, a message whose member vanished holding it goes to another member as attempt 2`,
    ignore: skip !== undefined && !required,
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      assert.ok(!skip, skip);
      const opts = { url, queueType, groupExpiresMs: 600_000 };
      const [pub, a, b] = await Promise.all([
        connectRabbitmq(opts),
        connectRabbitmq(opts),
        connectRabbitmq(opts),
      ]);
      try {
        const topic = `vanish.${queueType}.${crypto.randomUUID().slice(0, 8)}`;
        const held: string[] = [];
        await a.subscribe(topic, (d) => {
          held.push(d.envelope.id);
          return new Promise<void>(() => {}); // never settles
        }, { group: "g" });
        const e = createEnvelope({
          type: "event",
          topic,
          source: "t",
          payload: 1,
        });
        await pub.publish(topic, e);
        await waitFor(
          "the first member to hold it",
          () => held.length > 0,
          5000,
        );
        // The connection drops as a killed process's would.
        a.connection.unsafeDestroy();
        const got: number[] = [];
        await b.subscribe(topic, async (d) => {
          got.push(d.attempts);
          await d.ack();
        }, { group: "g" });
        await waitFor("the redelivery", () => got.length > 0, 10_000);
        assert.deepEqual(got, [2]);
      } finally {
        // Not a.close(): it would wait for the handler that never settles.
        await Promise.allSettled([pub.close(), b.close()]);
      }
    },
  });
}

Deno.test({
  name:
    "rabbitmq: a keyed message nak'd with a delay is retried in its place: the key's later messages wait for it, and its attempts and error history carry on to its dead letter",
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(!skip, skip);
    const t = await connectRabbitmq({ url, groupExpiresMs: 600_000 });
    try {
      const topic = `inplace.${crypto.randomUUID().slice(0, 8)}`;
      const seen: string[] = [];
      await t.subscribe(topic, async (d) => {
        const { seq } = d.envelope.payload as { seq: number };
        seen.push(`${seq}#${d.attempts}`);
        if (seq !== 1) return await d.ack();
        if (d.attempts < 3) return await d.nak(100, `not yet ${d.attempts}`);
        await d.term("give up");
      }, { group: "g", maxInFlight: 4 });
      for (let seq = 0; seq < 5; seq++) {
        await t.publish(
          topic,
          createEnvelope({
            type: "event",
            topic,
            source: "t",
            payload: { seq },
          }),
          { key: "k" },
        );
      }
      await waitFor("every message", () => seen.length >= 7, 10_000);
      assert.deepEqual(seen, ["0#1", "1#1", "1#2", "1#3", "2#1", "3#1", "4#1"]);
      const [letter] = await waitFor("the dead letter", async () => {
        const l = await t.deadLetters!(topic);
        return l.length > 0 && l;
      }, 5000);
      assert.equal(letter.reason, "give up");
      assert.equal(letter.attempts, 3);
      assert.deepEqual(
        letter.errors.map((e) => [e.attempt, e.error]),
        [[1, "not yet 1"], [2, "not yet 2"]],
      );
    } finally {
      await t.close();
    }
  },
});
