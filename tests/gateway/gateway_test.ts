/**
 * The agent gateway end to end: a real node on loopback, agents speaking
 * the wire protocol through tests/gateway/_raw_client.ts.
 */
import assert from "node:assert/strict";
import type { Envelope } from "../../core/envelope.ts";
import type { Router } from "../../core/router.ts";
import { verifyMessageSignature } from "../../sdk/protocol/channels.ts";
import { GatewayRequestError } from "../../gateway/gateway.ts";
import { outboxQueueName } from "../../gateway/outbox.ts";
import { enrolAgent, removeAgent } from "../../gateway/enrolment.ts";
import { DurableQueue } from "../../core/state/queue.ts";
import {
  gatewayBodyKey,
  gatewayOutboxKey,
  gatewayPresenceKey,
} from "../../core/state/keys.ts";
import { type AgentKey, connect, json, newAgentKey } from "./_raw_client.ts";
import { startTestNode, type TestNode, until } from "./_node.ts";

async function withNode(
  gateway: Record<string, unknown>,
  fn: (n: TestNode) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-" });
  const n = await startTestNode({ dir, gateway });
  try {
    await fn(n);
  } finally {
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
}

async function agent(n: TestNode, roles = ["agent"]): Promise<AgentKey> {
  const a = await newAgentKey();
  await n.enrol(a, roles);
  return a;
}

function kvOf(n: TestNode): Deno.Kv {
  return n.handle.kernel.get("state:kv");
}

function router(n: TestNode): Router {
  return n.handle.kernel.get("router:local");
}

const b64 = (s: string) => Uint8Array.fromBase64(s, { alphabet: "base64url" });

Deno.test("gateway: an agent's msg reaches router subscribers as an envelope and is acked", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const seen: Envelope[] = [];
    router(n).subscribe(
      "agent.*.heartbeat",
      (e) => void seen.push(e as Envelope),
    );
    const s = await connect(n.ws, a);
    assert.equal(s.ready.node, "a");
    assert.equal(s.ready.heartbeatMs, 30_000);
    assert.match(s.ready.resume, /^[A-Za-z0-9_-]{43}$/);
    const ack = await s.publish("heartbeat", { uptime: 42 });
    assert.equal(ack.header.type, "ack");
    assert.equal(ack.header.ch, `agent.${a.id}.heartbeat`);
    assert.equal(seen.length, 1);
    const env = seen[0];
    assert.equal(env.topic, `agent.${a.id}.heartbeat`);
    assert.equal(env.source, a.id);
    assert.deepEqual(env.payload, { uptime: 42 });
    assert.equal(env.headers["agent-id"], a.id);
    // The same message id again (a resend after a lost ack) is acked, not republished.
    const { header } = s.send(
      { type: "msg", ch: `agent.${a.id}.heartbeat`, id: env.id },
      { uptime: 42 },
    );
    assert.equal((await s.reply(header.id)).header.type, "ack");
    assert.equal(seen.length, 1);

    const status = await (await n.api(`/api/v1/agents/${a.id}/status`)).json();
    assert.deepEqual(Object.keys(status).sort(), [
      "agent_id",
      "channels",
      "connected",
      "last_seen",
      "session_expires",
    ]);
    assert.equal(status.connected, true);
    assert.ok(Date.parse(status.session_expires) > Date.now() + 86_000_000);
    assert.equal(
      await n.metric("plexus_gateway_messages_total", { direction: "in" }),
      2,
    );
    assert.ok(
      await n.metric("plexus_gateway_bytes_total", { direction: "out" }) > 0,
    );
    assert.equal(
      await n.metric("plexus_gateway_handshakes_total", {
        outcome: "ok",
        reason: "signature",
      }),
      1,
    );
    assert.equal(await n.metric("plexus_gateway_connections"), 1);
    s.close();
    await until(
      async () =>
        !(await (await n.api(`/api/v1/agents/${a.id}/status`)).json())
          .connected,
      "the agent to show disconnected",
    );
    assert.equal(await n.metric("plexus_gateway_connections"), 0);
  });
});

Deno.test("gateway: publishing outside the agent's roles or on an unknown channel gets err forbidden; the socket stays open", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n, ["agent"]);
    const s = await connect(n.ws, a);
    const r1 = await s.publish("results", {}); // workers only
    assert.equal(r1.header.type, "err");
    assert.equal((json(r1) as { code: string }).code, "forbidden");
    const r2 = await s.publish("secrets", {});
    assert.equal((json(r2) as { code: string }).code, "forbidden");
    const r3 = await s.sub("tasks"); // workers only
    assert.equal((json(r3) as { code: string }).code, "forbidden");
    // Not JSON:
    const { header } = s.send(
      { type: "msg", ch: `agent.${a.id}.status` },
      new Uint8Array([0xff, 0x00]),
    );
    assert.equal(
      (json(await s.reply(header.id)) as { code: string }).code,
      "bad_request",
    );
    await s.ping();
    assert.equal(
      await n.metric("plexus_gateway_records_refused_total", {
        reason: "forbidden",
      }),
      3,
    );
    s.close();
  });
});

Deno.test("gateway: agent requests are answered by onRequest handlers, router responders, or err", async () => {
  await withNode({ requestTimeoutMs: 300 }, async (n) => {
    const a = await agent(n);
    const gw = n.gateway;
    const off = gw.onRequest("agent.*.requests", async (req) => {
      const p = req.payload as { op: string };
      if (p.op === "deny") throw new GatewayRequestError("forbidden", "no way");
      if (p.op === "boom") throw new Error("handler broke");
      if (p.op === "slow") await new Promise((r) => setTimeout(r, 1000));
      return { echo: p, agent: req.agentId, roles: req.roles };
    });
    const s = await connect(n.ws, a);
    const res = await s.request("requests", { op: "hi" });
    assert.equal(res.header.type, "res");
    assert.deepEqual(json(res), {
      echo: { op: "hi" },
      agent: a.id,
      roles: ["agent"],
    });
    const deny = await s.request("requests", { op: "deny" });
    assert.deepEqual(json(deny), { code: "forbidden", message: "no way" });
    const boom = await s.request("requests", { op: "boom" });
    assert.equal((json(boom) as { code: string }).code, "unavailable");
    const slow = await s.request("requests", { op: "slow" });
    assert.equal((json(slow) as { code: string }).code, "timeout");
    off();
    // A synchronous handler is answered at once; its throw is an err; a
    // reply JSON cannot encode is an err too. Replacing the handler on the
    // same channel takes effect (the channel's handler is not kept stale).
    const offSync = gw.onRequest("agent.*.requests", (req) => {
      const p = req.payload as { op: string };
      if (p.op === "deny") {
        throw new GatewayRequestError("forbidden", "sync no");
      }
      if (p.op === "bigint") return { n: 1n };
      return { sync: p.op };
    });
    assert.deepEqual(json(await s.request("requests", { op: "hi" })), {
      sync: "hi",
    });
    assert.deepEqual(json(await s.request("requests", { op: "deny" })), {
      code: "forbidden",
      message: "sync no",
    });
    const big = json(await s.request("requests", { op: "bigint" })) as {
      code: string;
      message: string;
    };
    assert.equal(big.code, "unavailable");
    assert.match(big.message, /the reply is not JSON/);
    offSync();
    // Without a handler: the router, then no_handler.
    const none = await s.request("requests", { op: "hi" });
    assert.equal((json(none) as { code: string }).code, "no_handler");
    router(n).subscribe("agent.*.requests", (env, _t, replyTo) => {
      router(n).publish(replyTo!, { via: "router", id: (env as Envelope).id });
    });
    const viaRouter = await s.request("requests", { x: 1 });
    assert.equal((json(viaRouter) as { via: string }).via, "router");
    s.close();
  });
});

Deno.test("gateway: POST /send delivers to a connected agent ('sent'), the agent acks, the queue empties", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const s = await connect(n.ws, a);
    assert.equal((await s.sub("policies")).header.type, "ok");
    const r = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "policies",
      message: { v: 1 },
      message_type: "policy",
      priority: 7,
    });
    assert.equal(r.status, 200);
    assert.equal(r.body.status, "sent");
    const m = await s.message("policies");
    assert.equal(m.header.id, r.body.message_id);
    assert.equal(m.header.from, "node:a");
    assert.equal(m.header.prio, 7);
    assert.equal(m.header.mt, "policy");
    assert.deepEqual(json(m), { v: 1 });
    s.ack(m);
    const q = new DurableQueue(kvOf(n), outboxQueueName(a.id, "policies"));
    await until(
      async () => (await q.get(m.header.id))?.state === "done",
      "the ack to settle the queue message",
    );
    // The full channel form works too.
    const full = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: `backend.${a.id}.policies`,
      message: "two",
    });
    assert.equal(full.body.status, "sent");
    s.ack(await s.message("policies"));
    const status = await (await n.api(`/api/v1/agents/${a.id}/status`)).json();
    assert.deepEqual(status.channels, ["policies"]);
    s.close();
  });
});

Deno.test("gateway: ready says how many ids one ack may carry; one ack record settles several queue messages; a malformed list gets err", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const s = await connect(n.ws, a);
    assert.equal(s.ready.acks, 256);
    await s.sub("policies");
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await n.post(`/api/v1/agents/${a.id}/send`, {
        channel: "policies",
        message: i,
      });
      assert.equal(r.body.status, "sent");
      ids.push(r.body.message_id as string);
    }
    const got = [];
    for (let i = 0; i < 3; i++) got.push(await s.message("policies"));
    assert.deepEqual(got.map((m) => m.header.id), ids);
    s.send({ type: "ack", ch: got[0].header.ch, re: ids[0] }, ids.slice(1));
    const q = new DurableQueue(kvOf(n), outboxQueueName(a.id, "policies"));
    await until(async () => {
      for (const id of ids) {
        if ((await q.get(id))?.state !== "done") return false;
      }
      return true;
    }, "one ack record to settle all three");
    const bad = s.send({ type: "ack", ch: got[0].header.ch, re: "x" }, [1, 2]);
    const err = await s.reply(bad.header.id);
    assert.equal(err.header.type, "err");
    assert.equal((json(err) as { code: string }).code, "bad_request");
    s.close();
  });
});

Deno.test("gateway: POST /send refuses bad input with the right status", async () => {
  await withNode({ maxMessageBytes: 4096 }, async (n) => {
    const a = await agent(n);
    const b = await agent(n);
    const send = (id: string, body: unknown, role?: "viewer") =>
      n.post(`/api/v1/agents/${id}/send`, body, role);
    assert.equal(
      (await send("nobody", { channel: "policies", message: 1 })).status,
      404,
    );
    const forbidden = await send(a.id, { channel: "tasks", message: 1 });
    assert.equal(forbidden.status, 400);
    assert.match(
      String((forbidden.body.error as { message: string }).message),
      /may not subscribe to channel 'tasks'/,
    );
    assert.equal(
      (await send(a.id, { channel: `backend.${b.id}.policies`, message: 1 }))
        .status,
      400,
    );
    assert.equal((await send(a.id, { channel: "policies" })).status, 400);
    assert.equal(
      (await send(a.id, { channel: "policies", message: 1, priority: 10 }))
        .status,
      400,
    );
    assert.equal(
      (await send(a.id, { channel: "policies", message: "x".repeat(5000) }))
        .status,
      413,
    );
    assert.equal(
      (await send(a.id, { channel: "policies", message: 1 }, "viewer")).status,
      403,
    );
    assert.equal(
      (await send(a.id, { channel: "policies", message: 1, extra: 1 })).status,
      400,
    );
  });
});

Deno.test("gateway: signed channels: the node signs what it sends; agents' messages need a valid signature", async () => {
  await withNode({
    channels: {
      commands: { subscribe: ["agent"], signed: true },
      audit: { publish: ["agent"], signed: true },
    },
  }, async (n) => {
    const a = await agent(n);
    const other = await newAgentKey();
    const seen: Envelope[] = [];
    router(n).subscribe("agent.*.audit", (e) => void seen.push(e as Envelope));
    const s = await connect(n.ws, a);
    await s.sub("commands");
    const r = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "commands",
      message: { run: "reboot" },
      message_type: "command",
    });
    assert.equal(r.body.status, "sent");
    const m = await s.message("commands");
    assert.ok(m.signature, "the node signed the command");
    assert.ok(
      await verifyMessageSignature(
        b64(s.nodeKey),
        m.signature!,
        m.headerBytes,
        m.body,
      ),
    );
    s.ack(m);

    const unsigned = await s.publish("audit", { x: 1 });
    assert.equal((json(unsigned) as { code: string }).code, "bad_request");
    const forged = await s.sendSigned(
      { type: "msg", ch: `agent.${a.id}.audit` },
      { x: 2 },
      other.privateKey,
    );
    assert.equal(
      (json(await s.reply(forged.id)) as { code: string }).code,
      "bad_request",
    );
    const good = await s.sendSigned(
      { type: "msg", ch: `agent.${a.id}.audit` },
      { x: 3 },
    );
    assert.equal((await s.reply(good.id)).header.type, "ack");
    assert.equal(seen.length, 1);
    assert.deepEqual(seen[0].payload, { x: 3 });
    assert.equal(seen[0].headers.signature, "ed25519");
    assert.equal(
      await n.metric("plexus_gateway_records_refused_total", {
        reason: "unsigned",
      }),
      1,
    );
    assert.equal(
      await n.metric("plexus_gateway_records_refused_total", {
        reason: "bad_signature",
      }),
      1,
    );
    await s.ping();
    s.close();
  });
});

Deno.test("gateway: a body larger than one KV value is stored in chunks, delivered whole, and its chunks go on ack", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const big = { blob: "z".repeat(300 * 1024) };
    const r = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "policies",
      message: big,
    });
    assert.equal(r.body.status, "queued");
    const s = await connect(n.ws, a);
    await s.sub("policies");
    const m = await s.message("policies");
    assert.deepEqual(json(m), big);
    const chunks = async () => {
      let k = 0;
      for await (
        const _ of kvOf(n).list({
          prefix: gatewayBodyKey(outboxQueueName(a.id, "policies")),
        })
      ) k++;
      return k;
    };
    assert.equal(await chunks(), 6);
    s.ack(m);
    await until(async () => await chunks() === 0, "the chunks to go");
    s.close();
  });
});

Deno.test("gateway: messages sent while the agent was offline arrive after it reconnects, in priority order, exactly once after acks", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const sent: { id: string; prio: number; i: number }[] = [];
    const prios = [1, 9, 4, 9, 0, 4, 7];
    for (const [i, priority] of prios.entries()) {
      const r = await n.post(`/api/v1/agents/${a.id}/send`, {
        channel: "policies",
        message: { i },
        priority,
      });
      assert.equal(r.body.status, "queued");
      sent.push({ id: r.body.message_id as string, prio: priority, i });
    }
    // And one on a channel the agent will not subscribe to.
    const other = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "commands",
      message: "later",
    });
    assert.equal(other.body.status, "queued");
    let s = await connect(n.ws, a);
    await s.sub("policies");
    const got = [];
    for (let k = 0; k < prios.length; k++) {
      const m = await s.message("policies");
      got.push((json(m) as { i: number }).i);
      s.ack(m);
    }
    // 9s first (FIFO among equals), then 7, 4, 4, 1, 0.
    assert.deepEqual(got, [1, 3, 6, 2, 5, 0, 4]);
    await until(
      async () =>
        await n.metric("plexus_gateway_deliveries_total", {
          outcome: "acked",
        }) === prios.length,
      "all acks",
    );
    const depth = { agent: a.id };
    await until(
      async () => await n.metric("plexus_gateway_queue_depth", depth) === 1,
      "the queue depth gauge to show the one waiting message",
    );
    // Reconnect (resuming): nothing is delivered twice; the other channel's message waits for its sub.
    const token = s.ready.resume;
    s.close();
    await s.socket.closed;
    s = await connect(n.ws, a, { resume: token });
    await s.sub("policies");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(
      s.received.filter((r) => r.header.type === "msg").length,
      0,
      "no redelivery after acks",
    );
    await s.sub("commands");
    const later = await s.message("commands");
    assert.equal(later.header.id, other.body.message_id);
    s.ack(later);
    await until(
      async () => await n.metric("plexus_gateway_queue_depth", depth) === 0,
      "an empty queue",
    );
    s.close();
    await until(
      async () =>
        !(await (await fetch(`${n.url}/metrics`)).text()).includes(a.id),
      "the agent's series to go once it disconnected",
    );
  });
});

Deno.test("gateway: an un-acked message comes back with the same id; after maxAttempts it is dead-lettered", async () => {
  await withNode({ ackTimeoutMs: 200, maxAttempts: 2 }, async (n) => {
    const a = await agent(n);
    const s = await connect(n.ws, a);
    await s.sub("policies");
    const r = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "policies",
      message: "again",
    });
    assert.equal(r.body.status, "sent");
    const first = await s.message("policies");
    assert.equal(first.header.att, 1);
    const second = await s.message("policies", 5000); // after 200 ms + 1 s backoff
    assert.equal(second.header.id, first.header.id);
    assert.equal(second.header.att, 2);
    await until(
      async () =>
        await n.metric("plexus_gateway_deliveries_total", {
          outcome: "dead",
        }) === 1,
      "the dead letter",
    );
    const dead = await new DurableQueue(
      kvOf(n),
      outboxQueueName(a.id, "policies"),
    ).dlq();
    assert.deepEqual(dead.map((m) => m.id), [first.header.id]);
    s.close();
  });
});

Deno.test("gateway: a queued message past its TTL is dead-lettered, not delivered", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const r = await n.gateway.send(a.id, "policies", "stale", {
      ttlMs: 30,
    });
    assert.equal(r.status, "queued");
    await new Promise((r) => setTimeout(r, 60));
    const s = await connect(n.ws, a);
    await s.sub("policies");
    await until(
      async () =>
        await n.metric("plexus_gateway_deliveries_total", {
          outcome: "expired",
        }) === 1,
      "the expiry",
    );
    assert.equal(s.received.filter((r) => r.header.type === "msg").length, 0);
    const dead = await new DurableQueue(
      kvOf(n),
      outboxQueueName(a.id, "policies"),
    ).dlq();
    assert.match(dead[0].deadReason ?? "", /expired/);
    s.close();
  });
});

Deno.test("gateway: resumption tokens are single use and rotate; a second connection replaces the first (4409)", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const s1 = await connect(n.ws, a);
    const token = s1.ready.resume;
    const s2 = await connect(n.ws, a, { resume: token });
    assert.deepEqual(await s1.socket.closed, {
      code: 4409,
      reason: "replaced by a newer connection",
    });
    assert.notEqual(s2.ready.resume, token);
    assert.equal(s2.ready.sessionExpiresAt, s1.ready.sessionExpiresAt);
    await assert.rejects(connect(n.ws, a, { resume: token }));
    assert.equal(
      await n.metric("plexus_gateway_handshakes_total", {
        reason: "bad_token",
      }),
      1,
    );
    await s2.ping();
    s2.close();
  });
});

Deno.test("gateway: the node pings; last_seen moves on; a silent agent is closed with 4002", async () => {
  await withNode({ heartbeatMs: 150 }, async (n) => {
    const a = await agent(n);
    const b = await agent(n);
    const s = await connect(n.ws, a); // answers pings
    const t0 = Date.parse(
      (await (await n.api(`/api/v1/agents/${a.id}/status`)).json()).last_seen,
    );
    const mute = await connect(n.ws, b, { autoPong: false });
    assert.equal((await mute.socket.closed).code, 4002);
    await until(
      async () =>
        Date.parse(
          (await (await n.api(`/api/v1/agents/${a.id}/status`)).json())
            .last_seen,
        ) > t0,
      "last_seen to move",
    );
    assert.ok(s.received.some((r) => r.header.type === "ping"));
    s.close();
  });
});

Deno.test("gateway: a session ends with 4001 at its max age", async () => {
  await withNode({ maxSessionAgeMs: 1000 }, async (n) => {
    const a = await agent(n);
    const s = await connect(n.ws, a);
    const t = Date.now();
    assert.equal((await s.socket.closed).code, 4001);
    assert.ok(Date.now() - t < 2000);
    // Its resumption token cannot outlive the session.
    await assert.rejects(connect(n.ws, a, { resume: s.ready.resume }));
  });
});

Deno.test("gateway: broadcast reaches the connected agents subscribed to the channel", async () => {
  await withNode({}, async (n) => {
    const [a, b, c] = await Promise.all([agent(n), agent(n), agent(n)]);
    const sa = await connect(n.ws, a);
    const sb = await connect(n.ws, b);
    const sc = await connect(n.ws, c);
    await sa.sub("policies");
    await sb.sub("policies");
    await sc.sub("commands");
    const r = await n.post("/api/v1/agents/broadcast", {
      channel: "policies",
      message: { all: true },
    });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.sent_to, [a.id, b.id].sort());
    assert.deepEqual(r.body.failed, []);
    for (const s of [sa, sb]) {
      const m = await s.message("policies");
      assert.equal(m.header.id, r.body.message_id);
      s.ack(m);
    }
    assert.equal(
      (await n.post(
        "/api/v1/agents/broadcast",
        { channel: "p", message: 1 },
        "viewer",
      )).status,
      403,
    );
    for (const s of [sa, sb, sc]) s.close();
  });
});

Deno.test("gateway: a burst of broadcasts reads the presence version once, the list only when it moved, and no enrolment for agents connected here; each agent gets all, in call order", async () => {
  await withNode({
    channels: { alerts: { subscribe: ["agent"], durable: false } },
  }, async (n) => {
    const keys = await Promise.all([agent(n), agent(n), agent(n)]);
    const sessions = await Promise.all(keys.map((k) => connect(n.ws, k)));
    for (const s of sessions) await s.sub("alerts");
    const kv = kvOf(n);
    const calls = { list: 0, getMany: 0, get: 0 };
    const real = { list: kv.list, getMany: kv.getMany, get: kv.get };
    // Counted on this node's KV handle only (an own property shadows the prototype's).
    Object.assign(kv, {
      // Presence lists only: broadcast() resolves after a turn of the event
      // loop, in which the node's other work may list other prefixes.
      list: (...a: Parameters<Deno.Kv["list"]>) => {
        const sel = a[0] as { prefix?: Deno.KvKey };
        const presence = gatewayPresenceKey();
        if (presence.every((p, i) => sel.prefix?.[i] === p)) calls.list++;
        return real.list.apply(kv, a);
      },
      getMany: (
        ...a: Parameters<Deno.Kv["getMany"]>
      ) => (calls.getMany++, real.getMany.apply(kv, a as never)),
      get: (
        ...a: Parameters<Deno.Kv["get"]>
      ) => (calls.get++, real.get.apply(kv, a)),
    });
    const burst = (from: number) =>
      Promise.all(
        Array.from(
          { length: 10 },
          (_, i) =>
            n.gateway.broadcast("alerts", { i: from + i }, {
              id: `m-${from + i}`,
            }),
        ),
      );
    let results;
    let second;
    try {
      // The subscriptions moved the presence version: one version read and
      // one list for the whole burst.
      results = await burst(0);
      assert.deepEqual(calls, { list: 1, getMany: 0, get: 1 });
      // Nobody connected, left or subscribed since: the version read only.
      results.push(...await burst(10));
      second = { ...calls };
    } finally {
      for (const k of ["list", "getMany", "get"] as const) {
        delete (kv as unknown as Record<string, unknown>)[k];
      }
    }
    assert.deepEqual(second, { list: 1, getMany: 0, get: 2 });
    for (const r of results) {
      assert.deepEqual(r.sentTo, keys.map((k) => k.id).sort());
      assert.deepEqual([r.queued, r.failed], [[], []]);
    }
    for (const s of sessions) {
      const got = [];
      for (let i = 0; i < 20; i++) got.push(json(await s.message("alerts")));
      assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => ({ i })));
      s.close();
    }
  });
});

Deno.test("gateway: a broadcast follows a re-enrolment through this node at once: roles that no longer allow the channel leave the agent out", async () => {
  await withNode({
    channels: { alerts: { subscribe: ["agent"], durable: false } },
  }, async (n) => {
    const [a, b] = await Promise.all([agent(n), agent(n)]);
    const [sa, sb] = await Promise.all([connect(n.ws, a), connect(n.ws, b)]);
    await sa.sub("alerts");
    await sb.sub("alerts");
    const before = await n.gateway.broadcast("alerts", 1);
    assert.deepEqual(before.sentTo, [a.id, b.id].sort());
    const r = await n.post("/api/v1/agents", {
      agentId: b.id,
      publicKey: b.publicKey,
      roles: ["viewer"],
      replace: true,
    }, "operator");
    assert.equal(r.status, 200, JSON.stringify(r.body));
    // Well inside the 30 s heartbeat: taken from the re-enrolment itself.
    const after = await n.gateway.broadcast("alerts", 2);
    assert.deepEqual([after.sentTo, after.failed], [[a.id], []]);
    assert.equal(json(await sa.message("alerts")), 1);
    assert.equal(json(await sa.message("alerts")), 2);
    assert.equal(json(await sb.message("alerts")), 1);
    await sb.ping(); // anything after 1 would have arrived before the pong
    assert.equal(
      sb.received.filter((x) => x.header.type === "msg").length,
      1,
    );
    sa.close();
    sb.close();
  });
});

Deno.test("gateway: a role change that bypasses this node (written to KV, as another node would) reaches its broadcasts at the connection's next heartbeat", async () => {
  await withNode({
    heartbeatMs: 150,
    channels: { alerts: { subscribe: ["agent"], durable: false } },
  }, async (n) => {
    const a = await agent(n);
    const s = await connect(n.ws, a);
    await s.sub("alerts");
    assert.deepEqual((await n.gateway.broadcast("alerts", 1)).sentTo, [a.id]);
    await enrolAgent(kvOf(n), {
      agentId: a.id,
      publicKey: a.publicKey,
      roles: ["viewer"],
      replace: true,
    }, "test");
    const t0 = Date.now();
    await until(
      async () => (await n.gateway.broadcast("alerts", 2)).sentTo.length === 0,
      "the connection to re-read its enrolment",
    );
    // Within a heartbeat (150 ms) plus the time a loaded machine adds.
    assert.ok(Date.now() - t0 < 2000, `${Date.now() - t0} ms`);
    await s.ping(); // same key: the connection stays
    s.close();
  });
});

Deno.test("gateway: a non-durable channel is pushed when the agent is subscribed, else fails; never stored", async () => {
  await withNode({
    channels: { alerts: { subscribe: ["agent"], durable: false } },
  }, async (n) => {
    const a = await agent(n);
    const offline = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "alerts",
      message: 1,
    });
    assert.equal(offline.status, 503);
    assert.equal(offline.body.status, "failed");
    const s = await connect(n.ws, a);
    await s.sub("alerts");
    const r = await n.post(`/api/v1/agents/${a.id}/send`, {
      channel: "alerts",
      message: 2,
    });
    assert.equal(r.body.status, "sent");
    assert.equal(json(await s.message("alerts")), 2);
    assert.deepEqual(await n.gateway.list().then((l) => l.length), 1);
    s.close();
  });
});

Deno.test("gateway: a removal cut short after the enrolment went is finished by the next one, which answers false (404) and purges the queues", async () => {
  await withNode({}, async (n) => {
    const a = await agent(n);
    const sent = await n.gateway.send(a.id, "policies", "queued for later");
    assert.equal(sent.status, "queued");
    const q = new DurableQueue(kvOf(n), outboxQueueName(a.id, "policies"));
    assert.notEqual(await q.get(sent.messageId), null);
    // As if the node crashed right after removing the enrolment.
    assert.equal(await removeAgent(kvOf(n), a.id), true);
    assert.equal(await n.gateway.remove(a.id), false);
    assert.equal(await q.get(sent.messageId), null);
    const left = [];
    for await (
      const e of kvOf(n).list({ prefix: gatewayOutboxKey(a.id) })
    ) left.push(e.key);
    assert.deepEqual(left, []);
  });
});
