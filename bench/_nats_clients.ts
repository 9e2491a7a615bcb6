/**
 * How the NATS client was chosen: `@nats-io/transport-node` +
 * `@nats-io/jetstream` 3.4.0 and the older all-in-one `nats` 2.29.3, each
 * publishing N 1 KiB messages to a new stream (windows of 256 concurrent
 * `js.publish`, each with a `Nats-Msg-Id`) and consuming them with one
 * durable pull consumer (`consume()`, 256 buffered, JSON-parsing and acking
 * each), on Deno against the services' nats-server.
 *
 *   eval "$(deno task services)"
 *   deno run -A --no-lock bench/_nats_clients.ts [--messages N] [--only v3|v2]
 *
 * Prints one JSON line per client: publish and consume messages/s.
 * `--no-lock` because `nats` 2.x is not a dependency of the project: it is
 * imported by a specifier built at run time (so `deno check` does not fetch
 * it).
 *
 * @module
 */
import { info } from "./_util.ts";

const args = Deno.args;
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const N = Number(flag("--messages", "20000"));
const only = flag("--only", "");
const servers = Deno.env.get("NATS_URL") ?? "nats://127.0.0.1:4222";

/** The parts of either client's API this comparison uses. */
interface Client {
  nc: { close(): Promise<void> };
  js: {
    publish(s: string, d: Uint8Array, o: { msgID: string }): Promise<unknown>;
    consumers: {
      get(stream: string, name: string): Promise<{
        consume(o: { max_messages: number }): Promise<
          AsyncIterable<{ data: Uint8Array; ack(): void }> & { stop(): void }
        >;
      }>;
    };
  };
  jsm: {
    streams: {
      add(c: { name: string; subjects: string[] }): Promise<unknown>;
      delete(name: string): Promise<unknown>;
    };
    consumers: {
      add(stream: string, c: Record<string, unknown>): Promise<unknown>;
    };
  };
}

async function v3(): Promise<Client> {
  const { connect } = await import("@nats-io/transport-node");
  const { jetstream, jetstreamManager } = await import("@nats-io/jetstream");
  const nc = await connect({ servers });
  return {
    nc,
    js: jetstream(nc) as unknown as Client["js"],
    jsm: await jetstreamManager(nc) as unknown as Client["jsm"],
  };
}

async function v2(): Promise<Client> {
  const spec = ["npm:nats", "2.29.3"].join("@");
  // deno-lint-ignore no-explicit-any -- not a dependency: no types here
  const nats: any = await import(spec);
  const nc = await nats.connect({ servers });
  return { nc, js: nc.jetstream(), jsm: await nc.jetstreamManager() };
}

async function measure(name: string, make: () => Promise<Client>) {
  const { nc, js, jsm } = await make();
  const stream = `CLIENTS_${crypto.randomUUID().slice(0, 8)}`;
  await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] });
  await jsm.consumers.add(stream, {
    durable_name: "c",
    ack_policy: "explicit",
    max_ack_pending: 1000,
  });
  const body = new TextEncoder().encode(
    JSON.stringify({ x: "y".repeat(1000) }),
  );
  let t0 = performance.now();
  let window: Promise<unknown>[] = [];
  for (let i = 0; i < N; i++) {
    window.push(js.publish(`${stream}.a`, body, { msgID: `m${i}` }));
    if (window.length >= 256) {
      await Promise.all(window);
      window = [];
    }
  }
  await Promise.all(window);
  const publish = N / ((performance.now() - t0) / 1000);
  t0 = performance.now();
  const msgs = await (await js.consumers.get(stream, "c")).consume({
    max_messages: 256,
  });
  let got = 0;
  for await (const m of msgs) {
    JSON.parse(new TextDecoder().decode(m.data));
    m.ack();
    if (++got >= N) break;
  }
  const consume = N / ((performance.now() - t0) / 1000);
  msgs.stop();
  await jsm.streams.delete(stream);
  await nc.close();
  console.log(JSON.stringify({
    client: name,
    messages: N,
    publishPerS: Math.round(publish),
    consumePerS: Math.round(consume),
  }));
}

info(`nats clients: ${N} messages of 1 KiB each`);
if (only !== "v2") {
  await measure("@nats-io/transport-node+@nats-io/jetstream@3.4.0", v3);
}
if (only !== "v3") await measure("nats@2.29.3", v2);
Deno.exit(0);
