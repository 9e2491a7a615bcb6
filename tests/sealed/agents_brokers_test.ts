/**
 * Agents as recipients of sealed payloads on the other durable brokers:
 * tests/sealed/agents_test.ts covers Redis Streams in depth (refusals, the
 * stored bytes read with redis-cli, a node recipient beside the agent);
 * this runs the same path on Kafka, NATS JetStream and RabbitMQ. A real node
 * on the broker publishes to a topic sealed for an agent; it forwards the
 * message to the agent over the gateway unopened; the SDK agent opens it.
 */
import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import type { Transport } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectSealedAgent, startSealedAgentNode } from "./_agent_node.ts";

const MARKER = "agent-plaintext-marker-9c27";
const run = crypto.randomUUID().slice(0, 8);
const env = (name: string) => Deno.env.get(name);
const unset = (name: string) =>
  env(name)
    ? undefined
    : `${name} is not set (run: eval "$(deno task services)")`;

const CASES: {
  transport: string;
  skip?: string;
  config: () => Record<string, unknown>;
}[] = [
  {
    transport: "kafka",
    skip: unset("KAFKA_BROKERS"),
    config: () => ({
      kafka: { brokers: env("KAFKA_BROKERS"), prefix: `sa${run}.` },
    }),
  },
  {
    transport: "nats",
    skip: unset("NATS_URL"),
    config: () => ({
      nats: {
        servers: env("NATS_URL"),
        prefix: `sa${run}.`,
        storage: "memory",
      },
    }),
  },
  {
    transport: "rabbitmq",
    skip: unset("AMQP_URL"),
    config: () => ({ rabbitmq: { url: env("AMQP_URL"), prefix: `sa${run}` } }),
  },
];

for (const c of CASES) {
  Deno.test({
    name:
      `sealed agents (${c.transport}): a message sealed for an agent reaches it through the broker and the gateway, opened only by the agent`,
    ignore: c.skip !== undefined &&
      env("PLEXUS_REQUIRE_SERVICES") !== "1",
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      assert.ok(!c.skip, c.skip);
      const dir = await Deno.makeTempDir({ prefix: "plexus-sealed-brokers-" });
      const topic = `sealedagents.${run}${c.transport}.keys`;
      const cleanup: (() => Promise<unknown>)[] = [];
      try {
        const { node, key } = await startSealedAgentNode(dir, {
          transport: c.transport,
          pluginConfig: c.config(),
          pattern: `sealedagents.${run}${c.transport}.*`,
          topics: [topic],
        });
        cleanup.push(() => node.shutdown());
        const { agent, opened, refused } = await connectSealedAgent(node, key);
        cleanup.push(() => agent.close());
        const transport = node.handle.kernel.get<Transport>(
          `transport:${c.transport}`,
        );
        // RabbitMQ drops a message no queue is bound for yet, and the
        // node's forwarder joins its group once the gateway is up
        // (docs/wire-format.md): publish again each second until the agent
        // has one. Kafka and NATS keep the first.
        let n = 0;
        const m = await waitFor("the agent's opened message", async () => {
          if (opened[0]) return opened[0];
          await transport.publish(
            topic,
            createEnvelope({
              type: "event",
              topic,
              source: "a",
              payload: { note: MARKER, n: ++n },
            }),
          );
          await new Promise((r) => setTimeout(r, 1000));
          return opened[0];
        }, 30_000);
        assert.deepEqual(m.payload, {
          note: MARKER,
          n: (m.payload as { n: number }).n,
        });
        if (c.transport !== "rabbitmq") {
          // Kept by the broker: the first one arrives too.
          await waitFor(
            "the first message",
            () => opened.find((x) => (x.payload as { n: number }).n === 1),
            30_000,
          );
        }
        assert.equal(m.from, "node:a");
        assert.equal(m.envelope.topic, topic);
        assert.deepEqual(refused, []);
        // The gateway carried the sealed envelope, not the plaintext.
        const carried = JSON.stringify(m.message.payload);
        assert.ok(!carried.includes(MARKER), carried);
        assert.ok(carried.includes('"plexus-sealed":"3"'), carried);
        // The node forwarded it without opening it.
        await waitFor(
          "the forward counted",
          async () =>
            await node.metric("plexus_sealed_forwarded_total", {
              outcome: "forwarded",
            }) >= 1,
          10_000,
        );
        assert.equal(
          await node.metric("plexus_sealed_messages_total", { op: "opened" }),
          0,
        );
      } finally {
        for (const f of cleanup.reverse()) await f().catch(() => {});
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}
