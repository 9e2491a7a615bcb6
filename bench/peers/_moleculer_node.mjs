// One side of bench/peers/moleculer.ts, run with the node installed in the
// folder scripts/peers/moleculer.sh prints (MOLECULER_DIR): a Moleculer broker on
// the TCP transporter (static urls, no UDP discovery, JSON serializer), as
// `server PORT` (service `bench` with action `echo` returning its params,
// prints {"ready":true} once started) or `client PORT SERVER_PORT` (prints
// {"ready":true} once `bench.echo` is available, then runs each
// {"cmd":"run","ms","concurrency","bytes"} read on stdin and replies
// {"n","ms","p50","p99"}). Exits when stdin closes.
import { createRequire } from "node:module";
import { join } from "node:path";
import { createInterface } from "node:readline";

const require = createRequire(join(process.env.MOLECULER_DIR, "package.json"));
const { ServiceBroker } = require("moleculer");
const [role, port, serverPort] = process.argv.slice(2);
const reply = (o) => process.stdout.write(JSON.stringify(o) + "\n");

const broker = new ServiceBroker({
  nodeID: role,
  logger: false,
  transporter: {
    type: "TCP",
    options: {
      udpDiscovery: false,
      port: Number(port),
      urls: role === "client"
        ? [`127.0.0.1:${serverPort}/server`]
        : [`127.0.0.1:${serverPort ?? port}/server`],
    },
  },
});
if (role === "server") {
  broker.createService({
    name: "bench",
    actions: { echo: (ctx) => ctx.params },
  });
}
await broker.start();
if (role === "client") await broker.waitForServices(["bench"]);
reply({ ready: true });

const percentile = (s, p) =>
  s[Math.min(s.length - 1, Math.floor(p * s.length))];
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  const cmd = JSON.parse(line);
  const payload = { s: "x".repeat(cmd.bytes) };
  const lat = [];
  let n = 0;
  const t0 = performance.now();
  const end = t0 + cmd.ms;
  await Promise.all(Array.from({ length: cmd.concurrency }, async () => {
    while (performance.now() < end) {
      const s = performance.now();
      await broker.call("bench.echo", payload);
      lat.push(performance.now() - s);
      n++;
    }
  }));
  const ms = performance.now() - t0;
  lat.sort((a, b) => a - b);
  reply({ n, ms, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99) });
}
await broker.stop();
process.exit(0);
