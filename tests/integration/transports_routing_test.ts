/**
 * A node with several transports: `--transport` twice plus routing rules in
 * the config file. A rule naming a transport that is not loaded, or a
 * guarantee its transport's declared caps cannot give, stops the node with
 * exit 2 and a line naming rule, transport and what is missing.
 */
import assert from "node:assert/strict";
import { runToExit, writeConfig } from "./_process.ts";

const url = Deno.env.get("REDIS_URL");
const ignore = !url;
if (ignore) {
  console.log(
    'ignored: transports routing: REDIS_URL is not set (run: eval "$(deno task services)")',
  );
}

async function startWith(routing: unknown) {
  const dir = await Deno.makeTempDir({ prefix: "plexus-routing-" });
  const config = await writeConfig(dir, { routing });
  try {
    return await runToExit({
      args: [
        "--transport",
        "websocket-mesh",
        "--transport",
        "redis-streams",
        "--config",
        config,
        "--no-gateway",
      ],
      env: { REDIS_URL: url!, PLEXUS_MESH_SECRET: "routing-test-secret-0123" },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name:
    "transports routing: at-least-once on a non-durable transport exits 2 naming rule, transport and the missing capability",
  ignore,
  async fn() {
    const r = await startWith({
      rules: [
        {
          pattern: "orders.>",
          transport: "redis-streams",
          delivery: "exactly-once",
        },
        {
          pattern: "agents.>",
          transport: "websocket-mesh",
          delivery: "at-least-once",
        },
      ],
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /routing\.rules\[1\] \('agents\.>' → websocket-mesh\): delivery 'at-least-once' on transport 'websocket-mesh' needs durable \(it declares durable: false\)/,
    );
  },
});

Deno.test({
  name:
    "transports routing: a rule naming a transport not loaded exits 2 naming it",
  ignore,
  async fn() {
    const r = await startWith({
      rules: [{ pattern: "orders.>", transport: "kafka" }],
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /routing\.rules\[0\] \('orders\.>' → kafka\): unknown transport 'kafka' \(loaded: websocket-mesh, redis-streams\)/,
    );
  },
});
