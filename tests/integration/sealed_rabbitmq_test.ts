/**
 * Sealed payloads on RabbitMQ: what the broker routes (read with
 * `rabbitmqadmin get` from a tap queue bound to the `plexus` exchange, and
 * from the dead-letter queue) holds no plaintext, and each refusal is
 * dead-lettered with its reason (tests/integration/_sealed.ts).
 */
import assert from "node:assert/strict";
import {
  adminPeek,
  adminPublish,
  RABBITMQADMIN,
  rabbitmqadmin,
} from "../../transports/rabbitmq/_test_util.ts";
import { connectRabbitmq } from "../../transports/rabbitmq/transport.ts";
import { dlqQueue } from "../../transports/rabbitmq/wire.ts";
import {
  refusesAndDeadLetters,
  type SealedBroker,
  storesNoPlaintext,
} from "./_sealed.ts";

const url = Deno.env.get("AMQP_URL");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !url
  ? 'AMQP_URL is not set (run: eval "$(deno task services)")'
  : !RABBITMQADMIN
  ? "PLEXUS_RABBITMQADMIN (rabbitmqadmin with the management plugin, set up by deno task services) is not set"
  : undefined;
if (skip) console.log(`ignored: sealed rabbitmq: ${skip}`);

/**
 * A broker whose every routed message is also kept in a tap queue bound to
 * the `plexus` exchange under `family.#`, so the bytes stay readable after
 * the subscribers consumed them.
 */
function tapped(family: string, tap: string): SealedBroker {
  let declared: Promise<void> | undefined;
  const declare = () =>
    declared ??= (async () => {
      await rabbitmqadmin([
        "declare",
        "queue",
        `name=${tap}`,
        "durable=false",
        "auto_delete=false",
      ]);
      await rabbitmqadmin([
        "declare",
        "binding",
        "source=plexus",
        `destination=${tap}`,
        `routing_key=${family}.#`,
      ]);
    })();
  return {
    async connect() {
      // The transport declares the `plexus` exchange; on a fresh broker it
      // exists only from then on, so the tap is bound after connecting.
      const transport = await connectRabbitmq({ url, groupExpiresMs: 600_000 });
      await declare();
      return transport;
    },
    async stored(topic, messages, dead) {
      const routed = await adminPeek(tap, 100);
      const ours = routed.filter((m) => m.routing_key === topic);
      assert.ok(ours.length >= messages, `the tap holds ${ours.length}`);
      let out = ours.map((m) => m.payload).join("\n");
      if (dead > 0) {
        const letters = await adminPeek(dlqQueue("plexus", topic), 100);
        assert.ok(letters.length >= 1, "the DLQ as read is empty");
        out += "\n" + letters.map((m) => m.payload).join("\n");
      }
      return out;
    },
    // As an operator with broker access would: the stored bytes again.
    replay: async (topic, envelope) => {
      assert.ok(
        await adminPublish("plexus", topic, JSON.stringify(envelope)),
        "the replay was routed",
      );
    },
    timeoutMs: 15_000,
  };
}

const opts = {
  ignore: skip !== undefined && !(required && !url),
  sanitizeOps: false,
  sanitizeResources: false,
};

for (
  const [what, run] of [
    [
      "the subscriber gets the plaintext while `rabbitmqadmin get` shows only ciphertext",
      storesNoPlaintext,
    ],
    [
      "a non-recipient, a tampered, re-addressed, replayed, late or plain message is dead-lettered with its reason, and the node keeps serving",
      refusesAndDeadLetters,
    ],
  ] as const
) {
  Deno.test({
    ...opts,
    name: `sealed rabbitmq: ${what}`,
    async fn() {
      assert.ok(!skip, skip);
      const family = `sealedrmq${crypto.randomUUID().slice(0, 8)}`;
      const tap = `sealed.tap.${family}`;
      try {
        await run(tapped(family, tap), family);
      } finally {
        await rabbitmqadmin(["delete", "queue", `name=${tap}`]).catch(
          () => {},
        );
      }
    },
  });
}
