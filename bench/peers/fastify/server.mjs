// Fastify's side of bench/peers/fastify.ts: serves GET /health with the
// body and headers a Plexus node answered (captured by the bench), so both
// servers send the same bytes. Prints {"ready":true,"url","pid"} once
// listening; exits when stdin closes.
//
//   node server.mjs BODY_FILE HEADERS_FILE   (run from the install folder)
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.cwd() + "/");
const Fastify = require("fastify");
const body = readFileSync(process.argv[2]);
const headers = Object.fromEntries(
  JSON.parse(readFileSync(process.argv[3], "utf8")),
);
const app = Fastify({ logger: false });
app.get("/health", (_req, reply) => {
  reply.headers(headers).send(body);
});
await app.listen({ host: "127.0.0.1", port: 0 });
const { port } = app.server.address();
process.stdout.write(
  JSON.stringify({
    ready: true,
    url: `http://127.0.0.1:${port}`,
    pid: process.pid,
  }) + "\n",
);
process.stdin.resume();
process.stdin.on("end", () => app.close().then(() => process.exit(0)));
