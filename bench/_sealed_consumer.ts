/**
 * The receiving node of `sealed_payloads.ts --split`: its own process, its
 * own Redis connections and keys (`node:b`, published in the shared KV
 * file's directory), opening what node `a` sealed in the parent.
 *
 *   deno run -A bench/_sealed_consumer.ts --kv <file>
 *
 * Prints `{"ready":true}` once its keys are in the directory, then takes one
 * command a line on stdin: `{"topic","sealed","n","maxInFlight"}` subscribes
 * (group "g"), prints `{"subscribed":true}`, and once `n` messages are acked
 * prints `{"done":true,"cpuMs","mainMs"}` (this process's CPU and its main
 * thread's over the run) and closes the subscription. Exits on stdin EOF.
 *
 * @module
 */
import { connectRedisStreams } from "../transports/redis-streams/transport.ts";
import type { Transport } from "../core/transport.ts";
import { sealedTransport } from "../core/security/sealed_transport.ts";
import {
  freshSealingKeys,
  kvSealingDirectory,
} from "../core/security/sealing_keys.ts";
import { commands, cpuMs, flag, reply } from "./_util.ts";
import { mainThreadCpuMs, SEALED_POLICY } from "./_sealed_shared.ts";

const url = Deno.env.get("REDIS_URL")!;
const kv = await Deno.openKv(flag("kv")!);
const keys = await freshSealingKeys("node:b", kvSealingDirectory(kv));
reply({ ready: true });

for await (const cmd of commands()) {
  const { topic, sealed, n, maxInFlight } = cmd as {
    topic: string;
    sealed: boolean;
    n: number;
    maxInFlight: number;
  };
  const raw = await connectRedisStreams({ url, prefix: "bench:sealed:" });
  const sub: Transport = sealed
    ? sealedTransport(raw, SEALED_POLICY, keys)
    : raw;
  let acked = 0;
  let done = () => {};
  const finished = new Promise<void>((r) => (done = r));
  await sub.subscribe(topic, async (d) => {
    await d.ack();
    if (++acked === n) done();
  }, { group: "g", maxInFlight });
  reply({ subscribed: true });
  // CPU from here: the parent publishes as soon as it reads the line above.
  const c0 = cpuMs("self");
  const m0 = mainThreadCpuMs();
  await finished;
  reply({
    done: true,
    cpuMs: cpuMs("self") - c0,
    mainMs: mainThreadCpuMs() - m0,
  });
  await sub.close();
}
kv.close();
