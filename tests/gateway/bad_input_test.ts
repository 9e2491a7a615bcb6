/**
 * Hostile and broken inputs on `WS /ws/agent` (issue 4's list). Each case
 * asserts its close code or error; after each one the node still answers,
 * a good agent connected for the whole test still works both ways, and at
 * the end every durable message that was in flight to an attacked session
 * is delivered once its agent reconnects.
 */
import assert from "node:assert/strict";
import { agentHello, b64u, VERSIONS } from "../../sdk/protocol/handshake.ts";
import {
  encodeHeader,
  MAX_HEADER_BYTES,
  RECORD_PREFIX_BYTES,
  RecordSealer,
  TAG_BYTES,
} from "../../sdk/protocol/record.ts";
import {
  type AgentKey,
  type AgentSession,
  connect,
  type FrameSocket,
  handshake,
  type HandshakeCapture,
  json,
  newAgentKey,
  openWebSocket,
  startHandshake,
  TcpFrameSocket,
} from "./_raw_client.ts";
import { startTestNode, type TestNode } from "./_node.ts";

const MAX_BODY = 1 << 20;
const MAX_FRAME = MAX_BODY + RECORD_PREFIX_BYTES + MAX_HEADER_BYTES +
  TAG_BYTES + 64;

/** Expects `socket` to be closed by the node with `code`. */
async function closedWith(
  socket: FrameSocket,
  code: number,
  reason?: string | RegExp,
): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const c = await Promise.race([
    socket.closed,
    new Promise<never>((_, reject) =>
      timer = setTimeout(() => reject(new Error(`not closed (${code})`)), 8000)
    ),
  ]).finally(() => clearTimeout(timer));
  assert.equal(c.code, code, `close code (reason '${c.reason}')`);
  if (typeof reason === "string") assert.equal(c.reason, reason);
  else if (reason) assert.match(c.reason, reason);
}

Deno.test("gateway bad inputs: each is refused with its code; the node stays up, a good agent keeps working, nothing durable is lost", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-gw-bad-" });
  // The real 5 s handshake deadline.
  const n: TestNode = await startTestNode({ dir, gateway: {} });
  // Opened first, never says hello: checked at the end (4408 after 5 s).
  const silent = await openWebSocket(n.ws);
  const silentAt = Date.now();
  const silentClosedAt = silent.closed.then(() => Date.now());

  const good = await newAgentKey();
  await n.enrol(good);
  const g = await connect(n.ws, good);
  await g.sub("policies");
  let round = 0;

  /** The node answers; the good agent works both ways. */
  const alive = async () => {
    const health = await fetch(`${n.url}/health`);
    assert.equal(health.status, 200);
    await health.body?.cancel();
    await g.ping();
    assert.equal((await g.publish("heartbeat", { round })).header.type, "ack");
    const r = await n.post(`/api/v1/agents/${good.id}/send`, {
      channel: "policies",
      message: { round },
    });
    assert.equal(r.body.status, "sent");
    const m = await g.message("policies");
    assert.deepEqual(json(m), { round });
    g.ack(m);
    round++;
  };

  /** Durable messages pushed to attacked sessions and never acked, per agent. */
  const inFlight = new Map<AgentKey, string>();

  /** A fresh enrolled agent. */
  const victim = async (roles = ["agent"]) => {
    const v = await newAgentKey();
    await n.enrol(v, roles);
    return v;
  };

  /** A session of `v` holding one pushed, un-acked durable message. */
  const holding = async (
    v: AgentKey,
    socket?: FrameSocket,
  ): Promise<AgentSession> => {
    const s = socket ? await handshake(socket, v) : await connect(n.ws, v);
    assert.equal((await s.sub("policies")).header.type, "ok");
    const r = await n.post(`/api/v1/agents/${v.id}/send`, {
      channel: "policies",
      message: { for: v.id },
    });
    assert.equal(r.body.status, "sent");
    const m = await s.message("policies");
    inFlight.set(v, m.header.id);
    return s;
  };

  try {
    await t.step(
      "a text frame that is not UTF-8, as the hello: Deno drops the TCP connection (no close frame)",
      async () => {
        const tcp = await TcpFrameSocket.open(n.ws);
        tcp.sendTextBytes(Uint8Array.of(0xff, 0xfe, 0x41));
        await closedWith(tcp, 1006);
        assert.equal(
          await n.metric("plexus_gateway_handshakes_total", {
            reason: "invalid_utf8",
          }),
          1,
        );
        await alive();
      },
    );

    await t.step(
      "a text frame that is not UTF-8, inside a session",
      async () => {
        const v = await victim();
        const tcp = await TcpFrameSocket.open(n.ws);
        await holding(v, tcp);
        tcp.sendTextBytes(Uint8Array.of(0x7b, 0xc3, 0x28, 0x7d));
        await closedWith(tcp, 1006);
        assert.equal(
          await n.metric("plexus_gateway_closes_total", { code: "1007" }),
          2,
        );
        await alive();
      },
    );

    await t.step(
      "a binary frame where the text hello is expected → 1003",
      async () => {
        const ws = await openWebSocket(n.ws);
        ws.sendBinary(new TextEncoder().encode('{"t":"hello"}'));
        await closedWith(ws, 1003);
        await alive();
      },
    );

    await t.step("a text frame after the handshake → 1003", async () => {
      const v = await victim();
      const s = await holding(v);
      s.socket.sendText('{"t":"msg"}');
      await closedWith(s.socket, 1003);
      await alive();
    });

    await t.step(
      "an oversize frame is closed with 1009 before decryption",
      async () => {
        const refusedBefore = await n.metric(
          "plexus_gateway_records_refused_total",
        );
        const v = await victim();
        const s = await holding(v);
        // A valid record one byte over the limit: it would decrypt fine.
        const header = s.header({ type: "msg", ch: `agent.${v.id}.heartbeat` });
        const bodyBytes = MAX_FRAME + 1 - RECORD_PREFIX_BYTES - TAG_BYTES -
          encodeHeader(header).length;
        const frame = s.sealer.seal(header, new Uint8Array(bodyBytes));
        assert.equal(frame.length, MAX_FRAME + 1);
        s.socket.sendBinary(frame);
        await closedWith(s.socket, 1009);
        assert.equal(
          await n.metric("plexus_gateway_records_refused_total"),
          refusedBefore,
          "nothing was opened",
        );
        const ws = await openWebSocket(n.ws);
        ws.sendText("x".repeat(MAX_FRAME + 1));
        await closedWith(ws, 1009);
        await alive();
      },
    );

    await t.step(
      "garbage, truncated and unsupported hellos → 4400",
      async () => {
        const a = await newAgentKey();
        const { text } = await agentHello(a.id);
        for (
          const hello of [
            "garbage",
            "{}",
            text.slice(0, text.length - 9),
            JSON.stringify({ ...JSON.parse(text), e: "AAAA" }),
            JSON.stringify({
              ...JSON.parse(text),
              versions: [VERSIONS[0] + 1],
            }),
            JSON.stringify({ ...JSON.parse(text), suites: ["NULL_CIPHER"] }),
            "[1,2,3]",
          ]
        ) {
          const ws = await openWebSocket(n.ws);
          ws.sendText(hello);
          await closedWith(ws, 4400);
        }
        await alive();
      },
    );

    await t.step(
      "an unknown agent, and a known id with the wrong key → 4401 with one reason",
      async () => {
        const stranger = await newAgentKey();
        const ws1 = await openWebSocket(n.ws);
        await assert.rejects(handshake(ws1, stranger));
        await closedWith(ws1, 4401, "authentication failed");
        const impostor = { ...good, privateKey: stranger.privateKey };
        const ws2 = await openWebSocket(n.ws);
        await assert.rejects(handshake(ws2, impostor));
        await closedWith(ws2, 4401, "authentication failed");
        await alive();
      },
    );

    await t.step(
      "a small-order (or malformed) key is refused at enrolment",
      async () => {
        for (
          const [key, why] of [
            ["01" + "00".repeat(31), /small-order/],
            ["ec" + "ff".repeat(30) + "7f", /small-order/],
            ["ed" + "ff".repeat(30) + "7f", /canonical/],
            [b64u(new Uint8Array(31).fill(7)), /./],
            ["not a key", /./],
          ] as const
        ) {
          const r = await n.post("/api/v1/agents", {
            agentId: `weak-${round}-${key.length}`,
            publicKey: key,
            roles: ["agent"],
          });
          assert.equal(r.status, 400, key);
          assert.match((r.body.error as { message: string }).message, why);
        }
        await alive();
      },
    );

    await t.step(
      "a replayed handshake (hello + auth of an earlier session) → 4401",
      async () => {
        const v = await victim();
        const capture: Partial<HandshakeCapture> = {};
        const s = await connect(n.ws, v, { capture });
        // Replayed while the original is live, and again after it ended.
        for (const live of [true, false]) {
          const ws = await openWebSocket(n.ws);
          ws.sendText(capture.hello!);
          assert.ok("text" in await ws.next()); // a fresh welcome: new keys
          ws.sendBinary(capture.auth!);
          await closedWith(ws, 4401, "authentication failed");
          if (live) {
            await s.ping(); // the original session is untouched
            s.close();
            await s.socket.closed;
          }
        }
        await alive();
      },
    );

    await t.step("a replayed sealed record → 4403", async () => {
      const v = await victim();
      const s = await holding(v);
      const { frame, header } = s.send(
        { type: "msg", ch: `agent.${v.id}.heartbeat` },
        { n: 1 },
      );
      assert.equal((await s.reply(header.id)).header.type, "ack");
      s.socket.sendBinary(frame);
      await closedWith(s.socket, 4403, /replayed/);
      await alive();
    });

    await t.step(
      "reordered records: within the window each is accepted once; older than the window → 4403",
      async () => {
        const v = await victim();
        const s = await holding(v);
        const ch = `agent.${v.id}.heartbeat`;
        const frames = Array.from(
          { length: 70 },
          (_, i) => s.seal({ type: "msg", ch, id: `r${i}` }, { i }),
        );
        // Swap the first two: both accepted, in arrival order.
        s.socket.sendBinary(frames[1]);
        s.socket.sendBinary(frames[0]);
        assert.equal((await s.reply("r1")).header.type, "ack");
        assert.equal((await s.reply("r0")).header.type, "ack");
        // Hold r2 back past the 64-record window.
        for (let i = 3; i < 70; i++) s.socket.sendBinary(frames[i]);
        await s.reply("r69");
        s.socket.sendBinary(frames[2]);
        await closedWith(s.socket, 4403, /too-old/);
        await alive();
      },
    );

    await t.step(
      "tampered records (header, ciphertext, tag, epoch) → 4403",
      async () => {
        const mutations: [string, (f: Uint8Array) => void][] = [
          ["header", (f) => (f[RECORD_PREFIX_BYTES + 3] ^= 1)],
          ["ciphertext", (f) => (f[f.length - TAG_BYTES - 1] ^= 1)],
          ["tag", (f) => (f[f.length - 1] ^= 0x80)],
          ["epoch", (f) => (f[5] = 7)],
          ["sequence", (f) => (f[13] ^= 4)],
          ["flags", (f) => (f[1] = 1)],
        ];
        for (const [what, mutate] of mutations) {
          const v = await victim();
          const s = await holding(v);
          const frame = s.seal(
            { type: "msg", ch: `agent.${v.id}.heartbeat` },
            { what },
          );
          mutate(frame);
          s.socket.sendBinary(frame);
          await closedWith(s.socket, 4403);
        }
        await alive();
      },
    );

    await t.step(
      "a record re-addressed to another agent, channel or session → 4403",
      async () => {
        const other = good.id;
        const cases: ({ type: string } & Record<string, string>)[] = [
          { type: "msg", ch: `agent.${other}.heartbeat` },
          { type: "req", ch: `agent.${other}.requests` },
          { type: "sub", ch: `backend.${other}.policies` },
          { type: "msg", ch: "backend.x.heartbeat" },
          { type: "msg", to: other },
          { type: "msg", from: other },
          { type: "msg", sid: "AAAAAAAAAAAAAAAAAAAAAA" },
        ];
        for (const fields of cases) {
          const v = await victim();
          const s = await holding(v);
          s.send({ ch: `agent.${v.id}.heartbeat`, ...fields }, { hi: 1 });
          await closedWith(s.socket, 4403, /record refused/);
        }
        // A valid record of one session spliced into another fails authentication.
        const v1 = await victim();
        const v2 = await victim();
        const s1 = await holding(v1);
        const s2 = await holding(v2);
        s2.socket.sendBinary(
          s1.seal({ type: "msg", ch: `agent.${v1.id}.heartbeat` }, {}),
        );
        await closedWith(s2.socket, 4403, /bad-tag/);
        s1.close();
        await alive();
      },
    );

    await t.step(
      "a message before the handshake ends: an authentic record in place of auth → 4400; a frame sent before the welcome fails auth → 4401",
      async () => {
        // An authentic msg where the auth record belongs.
        const v = await victim();
        const ws1 = await openWebSocket(n.ws);
        const { keys } = await startHandshake(ws1, v);
        ws1.sendBinary(
          new RecordSealer(keys.c2s).seal(
            {
              sid: keys.sid,
              from: v.id,
              to: "backend",
              ch: `agent.${v.id}.heartbeat`,
              type: "msg",
              id: "early",
            },
            new TextEncoder().encode("{}"),
          ),
        );
        await closedWith(ws1, 4400, "record before ready");
        // A record sent right behind the hello, before the welcome: the node
        // reads it in the auth record's place, and it cannot be authentic.
        const ws2 = await TcpFrameSocket.open(n.ws);
        ws2.sendText((await agentHello(v.id)).text);
        ws2.sendBinary(new Uint8Array(64));
        await closedWith(ws2, 4401, "authentication failed");
        await alive();
      },
    );

    await t.step(
      "a second hello → 4400 (before the auth record and in a session)",
      async () => {
        const v = await victim();
        const ws = await openWebSocket(n.ws);
        await startHandshake(ws, v);
        ws.sendText((await agentHello(v.id)).text);
        await closedWith(ws, 4400, "second hello");
        const s = await holding(await victim());
        s.socket.sendText((await agentHello(s.agentId)).text);
        await closedWith(s.socket, 4400, "second hello");
        await alive();
      },
    );

    await t.step(
      "subscribing outside the agent's roles → err forbidden, the socket stays open",
      async () => {
        const v = await victim(["agent"]);
        const s = await holding(v);
        for (const name of ["tasks", "nope", "results"]) {
          const r = await s.sub(name);
          assert.equal(r.header.type, "err");
          assert.equal((json(r) as { code: string }).code, "forbidden");
        }
        await s.ping();
        s.close();
        await alive();
      },
    );

    await t.step(
      "a socket that never sends its hello → 4408 after 5 s",
      async () => {
        await closedWith(silent, 4408);
        const waited = await silentClosedAt - silentAt;
        assert.ok(waited >= 4900 && waited < 8000, `closed after ${waited} ms`);
        await alive();
      },
    );

    await t.step(
      "nothing on a durable channel was lost: each attacked agent gets its message on reconnect",
      async () => {
        assert.ok(inFlight.size >= 20);
        await Promise.all([...inFlight].map(async ([v, id]) => {
          const s = await connect(n.ws, v);
          await s.sub("policies");
          const m = await s.message("policies");
          assert.equal(m.header.id, id);
          assert.equal(m.header.att, 2);
          s.ack(m);
          s.close();
        }));
        assert.equal(
          await n.metric("plexus_gateway_deliveries_total", {
            outcome: "dead",
          }),
          0,
        );
        await alive();
      },
    );
  } finally {
    g.close();
    await n.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
