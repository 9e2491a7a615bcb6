/**
 * How the RabbitMQ client was chosen: npm `amqplib` 2.3.1 and
 * `rabbitmq-client` 5.0.8, each publishing N 1 KiB messages to a new quorum
 * queue through a topic exchange on a confirm channel (windows of 256
 * concurrent publishes, each awaiting its confirm), then consuming them with
 * one consumer (prefetch 256), JSON-parsing and acking each, on Deno against
 * the services' RabbitMQ.
 *
 *   eval "$(deno task services)"
 *   deno run -A --no-lock bench/_rabbitmq_clients.ts [--messages N] [--rounds R]
 *
 * Each client runs in a process of its own (`--only amqplib|rabbitmq-client`
 * runs one, in this process), rounds alternate, and the medians are printed
 * as one JSON line per client: publish and consume messages/s.
 * `--no-lock` because the client not chosen is not a dependency of the
 * project: both are imported by specifiers built at run time (so
 * `deno check` does not fetch them).
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { info, median, round } from "./_util.ts";

const args = Deno.args;
const flag = (name: string, dflt: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const N = Number(flag("--messages", "20000"));
const ROUNDS = Number(flag("--rounds", "3"));
const only = flag("--only", "");
const url = Deno.env.get("AMQP_URL") ?? "amqp://guest:guest@127.0.0.1:5672";
const WINDOW = 256;

/** The two operations compared, on either client. */
interface Client {
  setup(exchange: string, queue: string): Promise<void>;
  publish(exchange: string, key: string, body: Buffer): Promise<void>;
  /** Consumes `n` messages, calling `each` and acking; resolves when done. */
  consume(
    queue: string,
    n: number,
    each: (b: Uint8Array) => void,
  ): Promise<void>;
  teardown(exchange: string, queue: string): Promise<void>;
  close(): Promise<void>;
}

// deno-lint-ignore no-explicit-any -- not dependencies: no types here
type Any = any;

async function amqplib(): Promise<Client> {
  const lib: Any = await import(["npm:amqplib", "2.3.1"].join("@"));
  const conn: Any = await lib.connect(url);
  const pub: Any = await conn.createConfirmChannel();
  const sub: Any = await conn.createChannel();
  return {
    async setup(exchange, queue) {
      await pub.assertExchange(exchange, "topic", { durable: true });
      await pub.assertQueue(queue, {
        durable: true,
        arguments: { "x-queue-type": "quorum" },
      });
      await pub.bindQueue(queue, exchange, "t.#");
    },
    publish: (exchange, key, body) =>
      new Promise((resolve, reject) =>
        pub.publish(
          exchange,
          key,
          body,
          { persistent: true },
          (err: Any) => err ? reject(err) : resolve(),
        )
      ),
    async consume(queue, n, each) {
      await sub.prefetch(WINDOW);
      let got = 0;
      let done = () => {};
      const finished = new Promise<void>((r) => (done = r));
      const { consumerTag } = await sub.consume(queue, (m: Any) => {
        each(m.content);
        sub.ack(m);
        if (++got === n) done();
      });
      await finished;
      await sub.cancel(consumerTag);
    },
    async teardown(exchange, queue) {
      await pub.deleteQueue(queue);
      await pub.deleteExchange(exchange);
    },
    close: () => conn.close(),
  };
}

async function rabbitmqClient(): Promise<Client> {
  const lib: Any = await import(["npm:rabbitmq-client", "5.0.8"].join("@"));
  const rabbit: Any = new lib.Connection(url);
  await rabbit.onConnect(5000);
  const pub: Any = await rabbit.acquire();
  await pub.confirmSelect();
  const sub: Any = await rabbit.acquire();
  return {
    async setup(exchange, queue) {
      await pub.exchangeDeclare({ exchange, type: "topic", durable: true });
      await pub.queueDeclare({
        queue,
        durable: true,
        arguments: { "x-queue-type": "quorum" },
      });
      await pub.queueBind({ queue, exchange, routingKey: "t.#" });
    },
    publish: (exchange, routingKey, body) =>
      pub.basicPublish({ exchange, routingKey, durable: true }, body),
    async consume(queue, n, each) {
      await sub.basicQos({ prefetchCount: WINDOW });
      let got = 0;
      let done = () => {};
      const finished = new Promise<void>((r) => (done = r));
      const { consumerTag } = await sub.basicConsume({ queue }, (m: Any) => {
        each(m.body);
        sub.basicAck({ deliveryTag: m.deliveryTag });
        if (++got === n) done();
      });
      await finished;
      await sub.basicCancel({ consumerTag });
    },
    async teardown(exchange, queue) {
      await pub.queueDelete({ queue });
      await pub.exchangeDelete({ exchange });
    },
    async close() {
      await pub.close();
      await sub.close();
      await rabbit.close();
    },
  };
}

const CLIENTS: Record<string, () => Promise<Client>> = {
  "amqplib": amqplib,
  "rabbitmq-client": rabbitmqClient,
};

async function measure(name: string) {
  const c = await CLIENTS[name]();
  const id = crypto.randomUUID().slice(0, 8);
  const exchange = `clients.${id}`;
  const queue = `clients.${id}`;
  await c.setup(exchange, queue);
  const body = Buffer.from(JSON.stringify({ x: "y".repeat(1000) }));
  let t0 = performance.now();
  for (let i = 0; i < N; i += WINDOW) {
    const window: Promise<void>[] = [];
    for (let j = i; j < Math.min(N, i + WINDOW); j++) {
      window.push(c.publish(exchange, "t.a", body));
    }
    await Promise.all(window);
  }
  const publish = N / ((performance.now() - t0) / 1000);
  t0 = performance.now();
  const decoder = new TextDecoder();
  await c.consume(queue, N, (b) => JSON.parse(decoder.decode(b)));
  const consume = N / ((performance.now() - t0) / 1000);
  await c.teardown(exchange, queue);
  await c.close();
  return { publishPerS: Math.round(publish), consumePerS: Math.round(consume) };
}

if (only) {
  console.log(JSON.stringify(await measure(only)));
  Deno.exit(0);
}

info(`rabbitmq clients: ${N} messages of 1 KiB each, ${ROUNDS} round(s)`);
const runs: Record<string, { publishPerS: number; consumePerS: number }[]> = {
  "amqplib": [],
  "rabbitmq-client": [],
};
for (let r = 0; r < ROUNDS; r++) {
  const order = r % 2 ? ["rabbitmq-client", "amqplib"] : [
    "amqplib",
    "rabbitmq-client",
  ];
  for (const name of order) {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        "--no-lock",
        new URL(import.meta.url).pathname,
        "--only",
        name,
        "--messages",
        String(N),
      ],
      stderr: "inherit",
    }).output();
    const line = new TextDecoder().decode(out.stdout).trim().split("\n").at(
      -1,
    )!;
    runs[name].push(JSON.parse(line));
    info(`  ${name}: ${line}`);
  }
}
for (const [name, rs] of Object.entries(runs)) {
  console.log(JSON.stringify({
    client: name,
    messages: N,
    publishPerS: round(median(rs.map((r) => r.publishPerS))),
    consumePerS: round(median(rs.map((r) => r.consumePerS))),
  }));
}
Deno.exit(0);
