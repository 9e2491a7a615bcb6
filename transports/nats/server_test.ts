import assert from "node:assert/strict";
import { createEnvelope } from "../../core/envelope.ts";
import { TransportError } from "../../core/transport.ts";
import { waitFor } from "../../testing/conformance.ts";
import { connectNats } from "./transport.ts";

const hasServer = await new Deno.Command("nats-server", { args: ["--version"] })
  .output().then((o) => o.success, () => false);
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";
if (!hasServer && !required) {
  console.log(
    "ignored: nats server without JetStream: nats-server is not installed (deno task services installs it)",
  );
}

Deno.test({
  name:
    "nats: a server without JetStream is refused in jetstream mode with what to do, and serves mode core",
  ignore: !hasServer && !required,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    assert.ok(hasServer, "nats-server is not installed");
    const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (probe.addr as Deno.NetAddr).port;
    probe.close();
    const server = new Deno.Command("nats-server", {
      args: ["-a", "127.0.0.1", "-p", String(port)], // no -js
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const servers = `nats://127.0.0.1:${port}`;
    try {
      await waitFor("the server to accept connections", async () => {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          return true;
        } catch {
          return false;
        }
      }, 10_000);
      await assert.rejects(
        () => connectNats({ servers }),
        (e) =>
          e instanceof TransportError && e.code === "unavailable" &&
          /has no JetStream \(start nats-server with -js, or use mode "core"\)/
            .test(e.message),
      );
      const t = await connectNats({ servers, mode: "core" });
      try {
        const got: string[] = [];
        await t.subscribe("plain.t", async (d) => {
          got.push(d.envelope.id);
          await d.ack();
        });
        const e = createEnvelope({
          type: "event",
          topic: "plain.t",
          source: "t",
          payload: 1,
        });
        await t.publish("plain.t", e);
        await waitFor("the core message", () => got.length === 1, 5000);
        assert.deepEqual(got, [e.id]);
        assert.equal(t.caps.durable, false);
        assert.equal(t.deadLetters, undefined);
      } finally {
        await t.close();
      }
    } finally {
      server.kill("SIGTERM");
      await server.output();
    }
  },
});
