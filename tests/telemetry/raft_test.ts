/**
 * A Raft proposal is a span of the request that made it: a write through
 * `PUT /api/v1/raft/kv/{key}` on a one-node Raft cluster is a `raft.propose`
 * span under the route span, in the caller's trace.
 */
import assert from "node:assert/strict";
import { poll, startPlexus } from "../integration/_process.ts";
import { otelEnv, startReceiver } from "./_receiver.ts";

Deno.test("telemetry: a Raft write is a raft.propose span under its route span", async () => {
  await using rx = startReceiver();
  const node = await startPlexus({
    args: ["--consensus", "raft"],
    env: {
      ...otelEnv(rx.url, "plexus-raft"),
      PLEXUS_MESH_SECRET: "telemetry-secret-0123456789",
    },
  });
  try {
    const traceId = "7d1e5a0f3c2b4a6d8e9f0a1b2c3d4e5f";
    // Until the lone node has elected itself the write is refused (503).
    await poll(async () => {
      const res = await node.api("/api/v1/raft/kv/otel", {
        method: "PUT",
        headers: { traceparent: `00-${traceId}-1a2b3c4d5e6f7081-01` },
        body: JSON.stringify({ value: "v1" }),
      });
      await res.body?.cancel();
      return res.status === 200;
    }, "a Raft leader accepting the write");
    const propose = () =>
      rx.spans.find((s) => s.traceId === traceId && s.name === "raft.propose");
    const routeOf = (id: string) =>
      rx.spans.find((s) => s.spanId === id && s.traceId === traceId);
    await rx.until(
      () =>
        propose() !== undefined &&
        routeOf(propose()!.parentSpanId) !== undefined,
      "the raft.propose span and its route span",
    );
    const p = propose()!;
    assert.equal(p.attributes["raft.op"], "write");
    assert.equal(typeof p.attributes["raft.term"], "number");
    const route = routeOf(p.parentSpanId)!;
    assert.equal(route.attributes["http.route"], "/api/v1/raft/kv/:key");
  } finally {
    await node.close();
  }
});
