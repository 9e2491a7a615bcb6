/**
 * One side of `bench/services.ts` (and `bench/peers/moleculer.ts`): a mesh
 * node with a service broker, as `server` (defines `bench.echo`, `{s}` in and out, answers the
 * bare `bench.raw` topic, prints `{"url"}`) or `client` (dials the server,
 * prints `{"ready":true}`, then runs each `{"cmd":"run","mode":"services"|"raw",
 * "ms","concurrency","bytes"}` read on stdin and replies
 * `{"n","ms","p50","p99"}`). Exits when stdin closes.
 *
 *   deno run -A bench/_services_node.ts server|client [URL]
 *
 * @module
 */
import { z } from "zod";
import { startMesh } from "../transports/websocket-mesh/mod.ts";
import { createServiceBroker } from "../core/services.ts";
import { commands, percentile, reply } from "./_util.ts";

const [role, url] = Deno.args;
const SECRET = "bench-services-secret-0123456789";

if (role === "server") {
  const mesh = await startMesh({ nodeId: "server", secret: SECRET });
  const broker = createServiceBroker({ nodeId: "server" });
  await broker.attach(mesh);
  await broker.define(
    "bench.echo",
    z.object({ s: z.string().max(4096) }),
    (p) => p,
  );
  await mesh.respond!("bench.raw", (body) => Promise.resolve(body));
  reply({ url: mesh.url });
  for await (const _ of commands()) { /* until EOF */ }
  await broker.close();
  await mesh.close();
} else {
  const mesh = await startMesh({
    nodeId: "client",
    secret: SECRET,
    listen: false,
    peers: [url],
  });
  const broker = createServiceBroker({ nodeId: "client" });
  await broker.attach(mesh);
  while (mesh.responders!("svc.bench.echo").length === 0) {
    await new Promise((r) => setTimeout(r, 5));
  }
  reply({ ready: true });
  for await (const cmd of commands()) {
    const ms = cmd.ms as number;
    const payload = { s: "x".repeat(cmd.bytes as number) };
    const call = cmd.mode === "raw"
      ? () =>
        mesh.request!("server", "bench.raw", payload, { timeoutMs: 10_000 })
      : () => broker.call("bench.echo", payload);
    const lat: number[] = [];
    let n = 0;
    const t0 = performance.now();
    const end = t0 + ms;
    await Promise.all(
      Array.from({ length: cmd.concurrency as number }, async () => {
        while (performance.now() < end) {
          const s = performance.now();
          await call();
          lat.push(performance.now() - s);
          n++;
        }
      }),
    );
    const took = performance.now() - t0;
    lat.sort((a, b) => a - b);
    reply({
      n,
      ms: took,
      p50: percentile(lat, 0.5),
      p99: percentile(lat, 0.99),
    });
  }
  await broker.close();
  await mesh.close();
}
