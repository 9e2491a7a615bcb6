/**
 * Sealed payloads on Kafka: what Kafka stores (read with Kafka's console
 * consumer, the DLQ topic too) holds no plaintext, and each refusal is
 * dead-lettered with its reason (tests/integration/_sealed.ts).
 */
import assert from "node:assert/strict";
import { connectKafka } from "../../transports/kafka/transport.ts";
import { dlqTopic, kafkaTopic } from "../../transports/kafka/wire.ts";
import {
  refusesAndDeadLetters,
  type SealedBroker,
  storesNoPlaintext,
} from "./_sealed.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
const libs = Deno.env.get("PLEXUS_KAFKA_LIBS");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = !brokers
  ? 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")'
  : !libs
  ? "PLEXUS_KAFKA_LIBS (Kafka's console tools) is not set"
  : undefined;
if (skip && !required) console.log(`ignored: sealed kafka: ${skip}`);

/** Kafka's console consumer: the first `max` records of `topic`, with headers and keys. */
async function consoleConsume(topic: string, max: number): Promise<string> {
  const out = await new Deno.Command("java", {
    args: [
      "-cp",
      `${libs}/*`,
      "org.apache.kafka.tools.consumer.ConsoleConsumer",
      "--bootstrap-server",
      brokers!,
      "--topic",
      topic,
      "--from-beginning",
      "--max-messages",
      String(max),
      "--timeout-ms",
      "20000",
      "--property",
      "print.key=true",
      "--property",
      "print.headers=true",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  // A timeout (fewer records than max) exits non-zero; the records read still count.
  return new TextDecoder().decode(out.stdout);
}

const broker: SealedBroker = {
  connect: () => connectKafka({ brokers, sessionTimeoutMs: 6000 }),
  async stored(topic, messages, dead) {
    const main = await consoleConsume(kafkaTopic("plexus.", topic), messages);
    assert.equal(
      main.trim().split("\n").filter(Boolean).length,
      messages,
      `the console consumer read ${main}`,
    );
    if (dead === 0) return main;
    const dlq = await consoleConsume(dlqTopic("plexus.", topic), dead);
    assert.ok(dlq.includes("sealed"), `the DLQ as read: ${dlq}`);
    return main + dlq;
  },
  timeoutMs: 30_000,
};

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};

Deno.test({
  ...opts,
  name:
    "sealed kafka: the subscriber gets the plaintext while Kafka's console consumer shows only ciphertext",
  async fn() {
    assert.ok(!skip, skip);
    await storesNoPlaintext(broker, "sealed-kafka");
  },
});

Deno.test({
  ...opts,
  name:
    "sealed kafka: a non-recipient, a tampered, re-addressed, replayed, late or plain message is dead-lettered with its reason, and the node keeps serving",
  async fn() {
    assert.ok(!skip, skip);
    await refusesAndDeadLetters(broker, "sealed-kafka");
  },
});
