/**
 * A consumer in a process of its own, for the conformance case that kills it:
 * `deno run -A _consumer_child.ts CONNECT_MODULE TOPIC GROUP`.
 *
 * It imports CONNECT_MODULE (whose default export makes the transport from
 * the environment), subscribes to TOPIC in GROUP, prints `{"ready":true}`,
 * then for each delivery prints `{"got":ID,"attempts":N}` and never settles
 * it: the message stays with this process until the test SIGKILLs it.
 *
 * @module
 */
import type { Transport } from "../../core/transport.ts";

const [connectModule, topic, group] = Deno.args;
if (!connectModule || !topic || !group) {
  console.error("usage: _consumer_child.ts CONNECT_MODULE TOPIC GROUP");
  Deno.exit(2);
}
const { default: connect } = await import(connectModule) as {
  default: () => Promise<Transport>;
};
const transport = await connect();
await transport.subscribe(topic, (d) => {
  console.log(
    JSON.stringify({ got: d.envelope.id, attempts: d.attempts }),
  );
  return new Promise<void>(() => {}); // held until the process is killed
}, { group });
console.log(JSON.stringify({ ready: true }));
