/**
 * A consumer in a process of its own, for tests that kill it (started by
 * `spawnConsumer` in conformance.ts):
 * `deno run -A _consumer_child.ts CONNECT_MODULE TOPIC GROUP [ack:MS]`.
 *
 * It imports CONNECT_MODULE (whose default export makes the transport from
 * the environment), subscribes to TOPIC in GROUP, prints `{"ready":true}`,
 * then for each delivery prints `{"got":ID,"attempts":N,"payload":…}`. By
 * default it never settles a delivery: the message stays with this process
 * until the test SIGKILLs it. With `ack:MS` it acks each after MS ms.
 *
 * @module
 */
import type { Transport } from "../core/transport.ts";

const [connectModule, topic, group, mode = "hold"] = Deno.args;
if (!connectModule || !topic || !group) {
  console.error(
    "usage: _consumer_child.ts CONNECT_MODULE TOPIC GROUP [ack:MS]",
  );
  Deno.exit(2);
}
const { default: connect } = await import(connectModule) as {
  default: () => Promise<Transport>;
};
const transport = await connect();
const ackAfter = mode.startsWith("ack:") ? Number(mode.slice(4)) : undefined;
await transport.subscribe(topic, async (d) => {
  console.log(JSON.stringify({
    got: d.envelope.id,
    attempts: d.attempts,
    payload: d.envelope.payload,
  }));
  if (ackAfter === undefined) return new Promise<void>(() => {}); // held until killed
  await new Promise((r) => setTimeout(r, ackAfter));
  await d.ack();
}, { group, maxInFlight: 4 });
console.log(JSON.stringify({ ready: true }));
