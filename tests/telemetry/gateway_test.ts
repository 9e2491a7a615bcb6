/**
 * A send to an agent through the HTTP API is a `gateway.send` span under the
 * route span, in the caller's trace (the agent is enrolled but offline: the
 * durable channel queues the message).
 */
import assert from "node:assert/strict";
import { generateAgentKey } from "../../sdk/keys.ts";
import { startPlexus } from "../integration/_process.ts";
import { otelEnv, startReceiver } from "./_receiver.ts";

Deno.test("telemetry: a send to an agent is a gateway.send span under its route span", async () => {
  await using rx = startReceiver();
  const node = await startPlexus({ env: otelEnv(rx.url, "plexus-gw") });
  try {
    const key = await generateAgentKey();
    const post = (path: string, body: unknown, traceparent?: string) =>
      node.api(path, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(traceparent ? { traceparent } : {}),
        },
        body: JSON.stringify(body),
      });
    const enrolled = await post("/api/v1/agents", {
      agentId: key.id,
      publicKey: key.publicKey,
      roles: ["agent"],
    });
    assert.equal(enrolled.status, 201, await enrolled.text());
    const traceId = "9a8b7c6d5e4f30211203f4e5d6c7b8a9";
    const res = await post(`/api/v1/agents/${key.id}/send`, {
      channel: "policies",
      message: { rule: 1 },
      message_type: "notification",
    }, `00-${traceId}-0f1e2d3c4b5a6978-01`);
    const body = await res.json();
    assert.equal(res.status, 200, JSON.stringify(body));
    assert.equal(body.status, "queued");

    const find = (name: string) =>
      rx.spans.find((s) => s.traceId === traceId && s.name === name);
    await rx.until(
      () =>
        find("gateway.send") !== undefined &&
        find("POST /api/v1/agents/:id/send") !== undefined,
      "the gateway.send span and its route span",
    );
    const send = find("gateway.send")!;
    assert.equal(
      send.parentSpanId,
      find("POST /api/v1/agents/:id/send")!.spanId,
    );
    assert.equal(send.attributes["plexus.agent"], key.id);
    assert.equal(send.attributes["plexus.channel"], "policies");
  } finally {
    await node.close();
  }
});
