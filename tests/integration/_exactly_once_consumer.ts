/**
 * A consumer process for transports_exactly_once_test.ts: subscribes through
 * the routing facade on Redis Streams with group `billing` on TOPIC, where
 * `pay.>` has the guarantee DELIVERY. Its handler adds one to
 * `["paid", id]` in the KV file at KV_PATH in the same atomic commit as the
 * dedup mark (exactly-once) or on its own (at-least-once). With MODE
 * `crash` it prints `committed ID` and then hangs before the ack, for the
 * parent to SIGKILL it; with `serve` it returns (the ack follows). It prints
 * `duplicate ID` for each delivery acked without calling the handler.
 *
 * Usage: `deno run ... _exactly_once_consumer.ts KV_PATH TOPIC DELIVERY MODE CONSUMER`
 *
 * @module
 */
import { openStore } from "../../core/state/store.ts";
import { connectRedisStreams } from "../../transports/redis-streams/transport.ts";
import {
  type DeliveryGuarantee,
  type IdempotentDelivery,
  routedTransport,
} from "../../core/transport_routing.ts";

const [kvPath, topic, delivery, mode, consumer] = Deno.args;
const kv = await openStore(kvPath);
const redis = await connectRedisStreams({
  url: Deno.env.get("REDIS_URL"),
  consumerName: consumer,
  ackWaitMs: 500,
  claimIntervalMs: 100,
  blockMs: 200,
});
const routed = routedTransport({
  transports: { redis },
  rules: [{
    pattern: "pay.>",
    transport: "redis",
    delivery: delivery as DeliveryGuarantee,
  }],
  kv,
  onDuplicate: ({ id }) => console.log(`duplicate ${id}`),
});
await routed.subscribe(topic, async (d) => {
  const op = "atomic" in d ? (d as IdempotentDelivery).atomic() : kv.atomic();
  op.sum(["paid", d.envelope.id], 1n);
  const r = await op.commit();
  console.log(`${r.ok ? "committed" : "refused"} ${d.envelope.id}`);
  if (mode === "crash") await new Promise(() => {});
}, { group: "billing" });
console.log("ready");
