import assert from "node:assert/strict";
import { z } from "zod";
import { createTestKernel } from "./testing.ts";
import {
  type NodeIdentity,
  transportPlugin,
  type TransportTelemetry,
} from "./plugin.ts";
import type { Transport } from "./transport.ts";

/** A transport that only records what was done to it. */
function fakeTransport(name: string, events: string[]) {
  let reachable = true;
  const transport = {
    name,
    caps: {
      durable: false,
      ordering: "none",
      groups: false,
      maxMessageBytes: 1024,
    },
    publish: () => Promise.resolve(),
    subscribe: () => Promise.reject(new Error("not in this fake")),
    close: () => {
      events.push("close");
      return Promise.resolve();
    },
    ping: () =>
      reachable
        ? Promise.resolve()
        : Promise.reject(new Error("broker unreachable")),
    cut: () => reachable = false,
  } satisfies Transport & Record<string, unknown>;
  return transport;
}

const config = z.strictObject({
  prefix: z.string().default("plexus."),
  url: z.string().optional(),
});

Deno.test("transportPlugin: the manifest is a transport providing transport:NAME", () => {
  const plugin = transportPlugin({
    name: "fake",
    config,
    permissions: { net: true, env: ["FAKE_URL"] },
    connect: () => Promise.resolve(fakeTransport("fake", [])),
  });
  assert.deepEqual(plugin.manifest, {
    name: "fake",
    version: "1.0.0",
    kind: "transport",
    api: "^1",
    provides: ["transport:fake"],
    config,
    permissions: { net: true, env: ["FAKE_URL"] },
  });
  assert.equal(
    transportPlugin({
      name: "v",
      version: "2.1.0",
      config,
      connect: () => Promise.resolve(fakeTransport("v", [])),
    })
      .manifest.version,
    "2.1.0",
  );
});

Deno.test("transportPlugin: connect gets the validated config, the node's telemetry and identity; stop closes", async () => {
  const events: string[] = [];
  let seen: (z.infer<typeof config> & TransportTelemetry) | undefined;
  let node: NodeIdentity | undefined;
  const plugin = transportPlugin({
    name: "fake",
    config,
    connect: (options, n) => {
      seen = options;
      node = n;
      return Promise.resolve(fakeTransport("fake", events));
    },
    probe: { name: "ping", run: (t) => t.ping() },
    logFields: (c) => ({ prefix: c.prefix }),
  });
  const t = await createTestKernel([plugin], {
    pluginConfig: { fake: { url: "fake://x" } },
  });
  try {
    assert.equal(seen?.prefix, "plexus.");
    assert.equal(seen?.url, "fake://x");
    assert.equal(typeof seen?.log.info, "function");
    assert.equal(seen?.metrics, t.metrics);
    assert.equal(node?.id, "test-node");
    assert.equal(t.kernel.get("transport:fake").name, "fake");
    const line = t.logs.find((r) => r.msg === "fake transport connected");
    assert.equal(line?.prefix, "plexus.");
    assert.equal(line?.plugin, "fake");
  } finally {
    await t.close();
  }
  assert.deepEqual(events, ["close"]);
});

Deno.test("transportPlugin: health is the probe's round trip, or its error when it fails", async () => {
  const transport = fakeTransport("fake", []);
  const plugin = transportPlugin({
    name: "fake",
    config,
    connect: () => Promise.resolve(transport),
    probe: { name: "ping", run: (t) => t.ping() },
  });
  await using t = await createTestKernel([plugin]);
  const up = (await t.kernel.health()).fake;
  assert.equal(up.status, "up");
  assert.match(up.detail ?? "", /^ping \d+\.\d ms$/);
  transport.cut();
  const down = (await t.kernel.health()).fake;
  assert.deepEqual([down.status, down.detail], ["down", "broker unreachable"]);
});

Deno.test("transportPlugin: without a probe the plugin reports up while running", async () => {
  const plugin = transportPlugin({
    name: "fake",
    config,
    connect: () => Promise.resolve(fakeTransport("fake", [])),
  });
  await using t = await createTestKernel([plugin]);
  assert.deepEqual((await t.kernel.health()).fake, {
    name: "fake",
    status: "up",
  });
});
