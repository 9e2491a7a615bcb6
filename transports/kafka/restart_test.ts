import assert from "node:assert/strict";
import { type Consumer, PartitionAssigners } from "kafkajs";
import { createEnvelope } from "../../core/envelope.ts";
import { waitFor } from "../../testing/conformance.ts";
import {
  connectKafka,
  type KafkaOptions,
  type KafkaTransport,
} from "./transport.ts";
import { groupId, kafkaTopic } from "./wire.ts";

const brokers = Deno.env.get("KAFKA_BROKERS");
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
const skip = brokers
  ? undefined
  : 'KAFKA_BROKERS is not set (run: eval "$(deno task services)")';
if (skip && !required) console.log(`ignored: kafka restart: ${skip}`);

const opts = {
  ignore: skip !== undefined && !required,
  sanitizeOps: false,
  sanitizeResources: false,
};
const one: KafkaOptions = {
  brokers,
  partitions: 1,
  sessionTimeoutMs: 6000,
  heartbeatIntervalMs: 300,
  rebalanceTimeoutMs: 10_000,
  fetchMaxWaitMs: 200,
  closeTimeoutMs: 300,
};

/**
 * Faults for the next consumer `t` creates, through its public KafkaJS
 * client: while `failing`, each fetched batch throws (KafkaJS retries the
 * fetch, then crashes the consumer and restarts it); while `gated`, the
 * group leader's assignment waits, which holds a restarted consumer between
 * its restart and its rejoin. `onCrash` runs when KafkaJS reports the crash.
 */
function faults(t: KafkaTransport, onCrash: () => void) {
  const f = {
    failing: false,
    gate: Promise.resolve(),
    gated: false,
    /** Commit calls made while gated that returned without an error. */
    quietCommits: 0,
  };
  const make = t.kafka.consumer.bind(t.kafka);
  t.kafka.consumer = (config) => {
    const c: Consumer = make({
      ...config,
      // A few quick fetch retries, then the crash and a restart soon after.
      retry: { initialRetryTime: 100, retries: 2 },
      partitionAssigners: [(cfg) => {
        const rr = PartitionAssigners.roundRobin(cfg);
        return {
          ...rr,
          assign: async (group) => {
            await f.gate;
            return rr.assign(group);
          },
        };
      }],
    });
    const run = c.run.bind(c);
    c.run = (cfg) =>
      run({
        ...cfg,
        eachBatch: (p) =>
          f.failing
            ? Promise.reject(new Error("injected fetch failure"))
            : cfg!.eachBatch!(p),
      });
    const commit = c.commitOffsets.bind(c);
    c.commitOffsets = async (offsets) => {
      const gated = f.gated;
      await commit(offsets);
      if (gated) f.quietCommits++;
    };
    c.on(c.events.CRASH, (e) => {
      assert.ok(
        e.payload.restart,
        `KafkaJS will not restart: ${e.payload.error}`,
      );
      onCrash();
    });
    return c;
  };
  return f;
}

Deno.test({
  ...opts,
  name:
    "kafka commits: offsets finished while KafkaJS restarts a crashed consumer are committed once it has rejoined",
  async fn() {
    assert.ok(!skip, skip);
    const topic = `restart.${crypto.randomUUID().slice(0, 8)}`;
    const [a, b] = await Promise.all([connectKafka(one), connectKafka(one)]);
    try {
      let openGate = () => {};
      let crashes = 0;
      const f = faults(a, () => {
        if (crashes++ > 0) return;
        // Before KafkaJS's restart timer fires: the restart rejoins only
        // once the test opens the gate.
        f.failing = false;
        f.gated = true;
        f.gate = new Promise((r) => openGate = r);
      });
      const held: (() => void)[] = [];
      const acked: string[] = [];
      await a.subscribe(topic, async (d) => {
        if ((d.envelope.payload as { trigger?: boolean }).trigger) {
          return new Promise<void>(() => {}); // stays unfinished
        }
        await new Promise<void>((r) => held.push(r));
        acked.push(d.envelope.id);
        await d.ack();
      }, { group: "restart", maxInFlight: 8 });
      for (let i = 0; i < 5; i++) {
        await a.publish(
          topic,
          createEnvelope({
            type: "event",
            topic,
            source: "test",
            payload: { i },
          }),
        );
      }
      await waitFor("5 deliveries in flight", () => held.length === 5, 20_000);

      // The next fetched batch (the trigger) fails until KafkaJS crashes.
      f.failing = true;
      const trigger = createEnvelope({
        type: "event",
        topic,
        source: "test",
        payload: { trigger: true },
      });
      await a.publish(topic, trigger);
      await waitFor("the consumer's crash", () => crashes > 0, 20_000);
      for (const release of held) release();
      await waitFor(
        "a commit call that returned before the restarted consumer rejoined",
        () => f.quietCommits > 0,
        20_000,
      );
      openGate();

      // Offsets 0-4 are finished, 5 (the trigger) never is: 5 is the commit.
      const gid = groupId("plexus.", topic, "restart");
      const name = kafkaTopic("plexus.", topic);
      const committed = async () => {
        const [t] = await a.admin.fetchOffsets({
          groupId: gid,
          topics: [name],
        });
        return Number(t.partitions[0].offset);
      };
      await waitFor(
        "the commit of offset 5",
        async () => await committed() === 5,
        15_000,
      )
        .catch(async (err) => {
          throw new Error(`${err.message}; committed: ${await committed()}`);
        });
      assert.equal(acked.length, 5);

      await a.close();
      const again: string[] = [];
      await b.subscribe(topic, async (d) => {
        again.push(d.envelope.id);
        await d.ack();
      }, { group: "restart" });
      await waitFor(
        "the unfinished trigger again",
        () => again.includes(trigger.id),
        20_000,
      );
      assert.deepEqual(
        again.filter((id) => acked.includes(id)),
        [],
        "a new member received messages already acknowledged",
      );
    } finally {
      await Promise.allSettled([a.close(), b.close()]);
    }
  },
});
