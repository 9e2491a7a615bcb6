/**
 * A node with three transports (Redis Streams, Kafka, NATS JetStream)
 * bridging a topic family from Redis to Kafka while it is under load. What
 * was published is counted from the brokers with their own tools (redis-cli
 * XRANGE/XPENDING, Kafka's console consumer), not from the node: every
 * message is on Redis (before the move) or Kafka (after, or bridged), every
 * one published after the move is on Kafka, Redis has nothing pending for the
 * group, and the consumer handled each message exactly once.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { loadConfig } from "../../core/config.ts";
import { startNode } from "../../core/node.ts";
import { createEnvelope } from "../../core/envelope.ts";
import type { RoutedTransport } from "../../core/transport_routing.ts";
import { ROUTED_TRANSPORT } from "../../core/transport_routing_plugin.ts";
import { BUILTINS } from "../../builtins.ts";

const env = Deno.env.toObject();
const libs = env.PLEXUS_KAFKA_LIBS;
const skip = !env.REDIS_URL || !env.KAFKA_BROKERS || !env.NATS_URL
  ? 'REDIS_URL, KAFKA_BROKERS and NATS_URL are needed (run: eval "$(deno task services)")'
  : !libs
  ? "PLEXUS_KAFKA_LIBS (Kafka's console tools) is not set"
  : undefined;
if (skip) console.log(`ignored: transports bridge: ${skip}`);

const decoder = new TextDecoder();

async function redisCli(...args: string[]): Promise<string> {
  const out = await new Deno.Command("redis-cli", {
    args: ["-u", env.REDIS_URL, ...args],
  }).output();
  assert.ok(out.success, decoder.decode(out.stderr));
  return decoder.decode(out.stdout);
}

/**
 * Records of the Kafka topics matching `include` (a regex), read with the
 * console consumer until `count` have come (or 20 s without one).
 */
async function kafkaRecords(include: string, count: number): Promise<string> {
  const out = await new Deno.Command("java", {
    args: [
      "-cp",
      `${libs}/*`,
      "org.apache.kafka.tools.consumer.ConsoleConsumer",
      "--bootstrap-server",
      env.KAFKA_BROKERS,
      "--include",
      include,
      "--from-beginning",
      "--max-messages",
      String(count),
      "--timeout-ms",
      "20000",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  // A timeout (fewer than max) exits non-zero; what was read still counts.
  return decoder.decode(out.stdout);
}

const seqs = (text: string): number[] =>
  [...text.matchAll(/"seq":(\d+)/g)].map((m) => Number(m[1]));

Deno.test({
  name:
    "transports bridge: a family moved from Redis to Kafka under load loses nothing, counted from the brokers, and each message is handled once",
  ignore: skip !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "plexus-bridge-" });
    const run = crypto.randomUUID().slice(0, 8);
    const topics = [`orders.a${run}`, `orders.b${run}`];
    const agents = `agents.${run}`;
    const configFile = join(dir, "config.json");
    await Deno.writeTextFile(
      configFile,
      JSON.stringify({
        routing: {
          rules: [
            {
              pattern: "orders.>",
              transport: "redis-streams",
              delivery: "at-least-once",
            },
            {
              pattern: "agents.>",
              transport: "nats",
              delivery: "at-least-once",
            },
          ],
          default: "kafka",
        },
      }),
    );
    const parsed = loadConfig([
      "--port",
      "0",
      "--kv",
      ":memory:",
      "--data-dir",
      dir,
      "--no-gateway",
      "--log-level",
      "warn",
      "--transport",
      "redis-streams",
      "--transport",
      "kafka",
      "--transport",
      "nats",
      "--config",
      configFile,
    ]);
    assert.ok(!parsed.help);
    const node = await startNode(parsed.config, {
      builtins: BUILTINS,
      sinks: [],
    });
    try {
      const routed = node.kernel.get<RoutedTransport>(ROUTED_TRANSPORT);
      const N = 600;
      const SWITCH = 300;
      const handled = new Map<number, number>();
      let done!: () => void;
      const all = new Promise<void>((r) => (done = r));
      // Held until well after the move, so Redis keeps a backlog to drain.
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      const handle = async (d: { envelope: { payload: unknown } }) => {
        await gate;
        const seq = (d.envelope.payload as { seq: number }).seq;
        handled.set(seq, (handled.get(seq) ?? 0) + 1);
        if (handled.size === N) done();
      };
      for (const topic of topics) {
        await routed.subscribe(topic, handle, {
          group: "ship",
          maxInFlight: 4,
        });
      }
      let agentsSeen = 0;
      await routed.subscribe(agents, () => {
        agentsSeen++;
        return Promise.resolve();
      }, { group: "watch" });

      let bridge;
      const t0 = performance.now();
      for (let seq = 0; seq < N; seq++) {
        if (seq === SWITCH) bridge = await routed.bridge("orders.>", "kafka");
        if (seq === N - 100) open();
        const topic = topics[seq % 2];
        await routed.publish(
          topic,
          createEnvelope({
            type: "event",
            topic,
            source: "bridge-test",
            payload: { seq },
          }),
        );
        if (seq % 6 === 0) {
          await routed.publish(
            agents,
            createEnvelope({
              type: "event",
              topic: agents,
              source: "bridge-test",
              payload: { seq },
            }),
          );
        }
      }
      const publishMs = performance.now() - t0;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        all,
        new Promise((_, reject) =>
          timer = setTimeout(
            () =>
              reject(new Error(`handled ${handled.size} of ${N} within 60 s`)),
            60_000,
          )
        ),
      ]);
      clearTimeout(timer);
      assert.equal(routed.route(topics[0]).transport, "kafka");
      assert.deepEqual(
        [...handled.values()].filter((n) => n !== 1),
        [],
        "a message was handled twice",
      );

      // From the brokers.
      const onRedis = new Set<number>();
      for (const topic of topics) {
        for (
          const s of seqs(await redisCli("XRANGE", `plexus:${topic}`, "-", "+"))
        ) onRedis.add(s);
        const pending = await redisCli("XPENDING", `plexus:${topic}`, "ship");
        assert.match(pending, /^0\n/, `pending on ${topic}: ${pending}`);
      }
      // Both topics at once, until as many records as were published there
      // after the move plus what the bridge says it moved: a shortfall (a
      // loss) shows below; a count met early cannot hide one, since every
      // seq is checked.
      const onKafka = new Set<number>();
      const include = topics.map((t) => `plexus\\.${t.replace(".", "\\.")}`)
        .join("|");
      for (
        const s of seqs(
          await kafkaRecords(include, N - SWITCH + bridge!.moved),
        )
      ) onKafka.add(s);
      const lost: number[] = [];
      for (let seq = 0; seq < N; seq++) {
        if (!onRedis.has(seq) && !onKafka.has(seq)) lost.push(seq);
        if (seq >= SWITCH) {
          assert.ok(
            onKafka.has(seq),
            `message ${seq} (after the move) is not on Kafka`,
          );
        }
        if (seq < SWITCH) {
          assert.ok(
            onRedis.has(seq),
            `message ${seq} (before the move) is not on Redis`,
          );
        }
      }
      assert.deepEqual(lost, []);
      assert.equal(
        onRedis.size,
        SWITCH,
        "Redis holds messages published after the move",
      );
      const bridged = [...onKafka].filter((s) => s < SWITCH).length;
      console.log(
        `  published ${N} orders in ${
          publishMs.toFixed(0)
        } ms; ${SWITCH} on Redis, ${onKafka.size} on Kafka (${bridged} bridged; bridge.moved ${
          bridge!.moved
        }), agents on NATS: ${agentsSeen}`,
      );
      assert.equal(agentsSeen, N / 6);
      assert.ok(bridged > 0, "the bridge moved none of Redis's backlog");
      assert.equal(bridge!.moved, bridged);
      await bridge!.close();
    } finally {
      await node.shutdown("test done");
      await Deno.remove(dir, { recursive: true });
    }
  },
});
