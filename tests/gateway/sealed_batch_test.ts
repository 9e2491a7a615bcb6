/**
 * Sealed batch frames (docs/protocol.md, "Sealed batch frames") against the
 * real gateway: agents that read them, agents that read the older batched
 * frames and agents that read neither on one broadcast, each getting every
 * message once and in order, across frame types.
 */
import assert from "node:assert/strict";
import type { AgentGateway } from "../../gateway/gateway.ts";
import { connectAgent } from "../../sdk/mod.ts";
import { SEALED_BATCH_TYPE } from "../../sdk/protocol/record.ts";
import {
  connect,
  handshake,
  json,
  newAgentKey,
  TcpFrameSocket,
} from "./_raw_client.ts";
import { startTestNode } from "./_node.ts";
import { enrolledKey, Inbox, seedOf, TEST_BACKOFF } from "./_sdk_helpers.ts";

Deno.test("gateway: one broadcast burst reaches a sealed-batch agent, a batch: true agent, a plain agent and the SDK, each every message once and in order, a big one in its place as a plain record", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-sealed-" });
  const n = await startTestNode({
    dir,
    gateway: {
      channels: { alerts: { subscribe: ["agent"], durable: false } },
    },
  });
  try {
    const raw = await Promise.all(
      ([2, true, undefined] as const).map(async (batch) => {
        const key = await newAgentKey();
        await n.enrol(key);
        const s = await connect(n.ws, key, { batch });
        const ok = await s.sub("alerts");
        assert.equal(ok.header.type, "ok");
        return s;
      }),
    );
    const key = await enrolledKey(n);
    await using sdk = await connectAgent({
      url: n.url,
      id: key.id,
      privateKey: seedOf(key),
      backoff: TEST_BACKOFF,
    });
    const inbox = new Inbox();
    await sdk.subscribe("alerts", inbox.handler);
    const gw = n.handle.kernel.get<AgentGateway>("gateway:agents");
    const big = "b".repeat(80 * 1024); // more than a batch frame holds
    const total = 60;
    const framesBefore = raw.map((s) => s.frameTypes.length);
    const sent = await Promise.all(
      Array.from(
        { length: total },
        (_, i) => gw.broadcast("alerts", i === 30 ? { i, big } : { i }),
      ),
    );
    assert.ok(
      sent.every((r) => r.sentTo.length === 4 && r.failed.length === 0),
    );
    const expected = Array.from({ length: total }, (_, i) => i);
    for (const [k, s] of raw.entries()) {
      const got: number[] = [];
      for (let i = 0; i < total; i++) {
        got.push((json(await s.message("alerts")) as { i: number }).i);
      }
      assert.deepEqual(got, expected, `agent ${k}`);
    }
    const got = await inbox.waitFor(total);
    assert.deepEqual(got.map((m) => (m.payload as { i: number }).i), expected);
    const types = raw.map((s, k) => s.frameTypes.slice(framesBefore[k]));
    // Sealed batch: the burst in few type-3 frames, the big one a plain record.
    assert.ok(types[0].includes(SEALED_BATCH_TYPE), `${types[0]}`);
    assert.ok(types[0].every((t) => t === SEALED_BATCH_TYPE || t === 1));
    assert.ok(types[0].includes(1), "the big one as a plain record");
    assert.ok(types[0].length < 10, `${types[0].length} frames`);
    // batch: true: batched frames of sealed records (type 2), as before.
    assert.ok(types[1].includes(2) && !types[1].includes(SEALED_BATCH_TYPE));
    // No batch: a frame per record.
    assert.deepEqual(types[2], new Array(total).fill(1));
    for (const s of raw) s.close();
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gateway: a sealed-batch reader that stalls under a flood of broadcasts is closed with 4008 once over the send buffer's hard cap; the durable messages it had come again after it reconnects", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-sealed-slow-" });
  const sendBufferBytes = 64 * 1024;
  const n = await startTestNode({
    dir,
    gateway: {
      sendBufferBytes,
      maxInFlight: 40,
      channels: {
        policies: { subscribe: ["agent"] },
        alerts: { subscribe: ["agent"], durable: false },
      },
    },
  });
  try {
    const a = await newAgentKey();
    await n.enrol(a);
    const total = 30;
    const ids = new Set<string>();
    for (let i = 0; i < total; i++) {
      const r = await n.gateway.send(a.id, "policies", { i });
      ids.add(r.messageId);
    }
    const tcp = await TcpFrameSocket.open(n.ws);
    const s = await handshake(tcp, a, { batch: 2 });
    await s.sub("alerts");
    tcp.pause();
    s.send({ type: "sub", ch: `backend.${a.id}.policies` });
    // Broadcast in bursts (each burst leaves in sealed batch frames) until
    // the node gives up on the reader, at most 64 MiB.
    const gw = n.handle.kernel.get<AgentGateway>("gateway:agents");
    const chunk = "f".repeat(8 * 1024);
    let sent = 0;
    const closed = () =>
      n.metric("plexus_gateway_closes_total", { code: "4008" });
    while (await closed() === 0) {
      assert.ok(sent < 8192, `not closed after ${sent} broadcasts of 8 KiB`);
      await Promise.all(
        Array.from({ length: 32 }, () => gw.broadcast("alerts", { chunk })),
      );
      sent += 32;
      await new Promise((r) => setTimeout(r, 0)); // let the slow check run
    }
    tcp.resume();
    const c = await tcp.closed;
    assert.equal(c.code, 4008);
    assert.match(c.reason, /slow consumer/);
    const s2 = await connect(n.ws, a, { batch: 2 });
    await s2.sub("policies");
    const got = new Set<string>();
    while (got.size < total) {
      const m = await s2.message("policies", 10_000);
      got.add(m.header.id);
      s2.ack(m);
    }
    assert.deepEqual([...got].sort(), [...ids].sort());
    assert.ok(s2.frameTypes.includes(SEALED_BATCH_TYPE));
    s2.close();
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("gateway: bursts of broadcasts to a sealed-batch agent that stopped reading arrive complete and in order once it reads again (records that waited for the socket to drain join one frame)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-sealed-behind-" });
  const n = await startTestNode({
    dir,
    gateway: {
      sendBufferBytes: 16 * 1024 * 1024,
      channels: { alerts: { subscribe: ["agent"], durable: false } },
    },
  });
  try {
    const a = await newAgentKey();
    await n.enrol(a);
    const tcp = await TcpFrameSocket.open(n.ws);
    const s = await handshake(tcp, a, { batch: 2 });
    await s.sub("alerts");
    const framesBefore = s.frameTypes.length;
    tcp.pause();
    const gw = n.handle.kernel.get<AgentGateway>("gateway:agents");
    const pad = "p".repeat(2 * 1024);
    const bursts = 40;
    const total = bursts * 16;
    for (let b = 0; b < bursts; b++) {
      const sent = await Promise.all(
        Array.from(
          { length: 16 },
          (_, k) => gw.broadcast("alerts", { i: b * 16 + k, pad }),
        ),
      );
      assert.ok(sent.every((r) => r.sentTo.length === 1));
    }
    tcp.resume();
    const got: number[] = [];
    for (let i = 0; i < total; i++) {
      got.push((json(await s.message("alerts", 10_000)) as { i: number }).i);
    }
    assert.deepEqual(got, Array.from({ length: total }, (_, i) => i));
    const types = s.frameTypes.slice(framesBefore);
    assert.ok(types.every((t) => t === SEALED_BATCH_TYPE), `${types}`);
    s.close();
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
