/**
 * Client process for bench/gateway.ts: agents (the SDK) and plain
 * WebSocket clients, driven by JSON-line commands on stdin, one JSON reply
 * each on stdout.
 *
 *   deno run -A bench/_gateway_clients.ts
 *
 * - `{"cmd":"enrol","url","token","n"}`: makes `n` agent keys (one keygen
 *   each) and enrols each with `POST /api/v1/agents` (role `agent`) →
 *   `{"enrolled":n,"ms"}`.
 * - `{"cmd":"connect","set":"agent"|"ws"|"floor","url","n"}`: opens `n`
 *   connections and keeps them: agents with `connectAgent` (a full
 *   signature handshake each, agents `0..n-1`), plain clients (the SDK's
 *   WebSocket client), or `floor` clients (the same WebSocket client with a
 *   record sealer and opener on the `floor` server's fixed keys) →
 *   `{"connected":n,"ms"}`.
 * - `{"cmd":"run","set","conns","size","ms"}`: on the first `conns`
 *   connections of `set`, each runs a closed loop for `ms`: send a
 *   `size`-byte payload, wait for its answer, repeat (one outstanding per
 *   connection). Agents send `agent.request("requests", s)` where `s` is a
 *   string whose JSON is `size` bytes, and check the reply is that string;
 *   plain clients send those same `size` bytes as a binary frame and wait
 *   for the echo; `floor` clients seal that JSON as a `req` record (the
 *   header an agent's request has), open the `res` and parse its JSON →
 *   `{"n","ms","p50","p99"}` (latencies in ms).
 * - `{"cmd":"handshakes","kind":"full"|"resume"|"ws","url","first","conc","ms"}`:
 *   `conc` loops, each on its own agent (`first + i`), each repeating for
 *   `ms`: `full` = `connectAgent` → ready → `close()` (SDK); `resume` = a
 *   resumption-token handshake → ready → close (built on handshake.ts and
 *   record.ts: the SDK keeps its token private), `ws` = a plain WebSocket
 *   open → close → `{"n","ms","p50","p99"}`.
 * - `{"cmd":"subscribe","channel","n"}`: the first `n` connected agents
 *   subscribe to backend channel `channel` (bench/peers/centrifugo.ts),
 *   each counting the messages whose `payload.msg` holds the current tag →
 *   `{"subscribed":n,"ms"}`.
 * - `{"cmd":"expect","tag","n"}`: starts counting messages tagged `tag`;
 *   replies `{"armed":true,"frames","records"}` at once and
 *   `{"done":true,"ms","frames","records"}` when every subscribed agent has
 *   n of them (`{"error"}` when one gets more); `frames`/`records`: what the
 *   subscribed agents have received so far, in all.
 * - `{"cmd":"close","set"}` → `{"closed":n}`.
 *
 * @module
 */
import {
  type AgentClient,
  agentGatewayUrl,
  connectAgent,
  generateAgentKey,
} from "../sdk/client.ts";
import {
  agentFinish,
  agentHello,
  b64u,
  ed25519FromSeed,
} from "../sdk/protocol/handshake.ts";
import {
  type RecordHeader,
  RecordOpener,
  RecordSealer,
} from "../sdk/protocol/record.ts";
import { openWebSocket, type WebSocketLike } from "../sdk/ws_client.ts";
import { commands, reply } from "./_util.ts";
import { FLOOR_KEYS, REQUEST_CHANNEL } from "./_gateway_server.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

interface Agent {
  id: string;
  privateKey: CryptoKey;
  /** Resumption token of the last low-level handshake. */
  token?: string;
}

const agents: Agent[] = [];
/** A `floor` client: a plain socket with the record layer on fixed keys. */
interface FloorClient {
  ws: WebSocketLike;
  /** Stands for an agent id in the records' headers. */
  id: string;
  sealer: RecordSealer;
  opener: RecordOpener;
}

const connected: {
  agent: AgentClient[];
  ws: WebSocketLike[];
  floor: FloorClient[];
} = { agent: [], ws: [], floor: [] };

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

function summary(latencies: number[], ms: number) {
  const s = latencies.sort((a, b) => a - b);
  return { n: s.length, ms, p50: percentile(s, 0.5), p99: percentile(s, 0.99) };
}

async function enrol(url: string, token: string, n: number): Promise<void> {
  for (let i = 0; i < n; i += 10) {
    await Promise.all(
      Array.from({ length: Math.min(10, n - i) }, async () => {
        const key = await generateAgentKey();
        const res = await fetch(`${url}/api/v1/agents`, {
          method: "POST",
          headers: {
            authorization: `Bearer ${token}`,
            "content-type": "application/json",
          },
          body: JSON.stringify({
            agentId: key.id,
            publicKey: key.publicKey,
            roles: ["agent"],
          }),
        });
        if (res.status !== 201) {
          throw new Error(
            `enrolment refused: ${res.status} ${await res.text()}`,
          );
        }
        await res.body?.cancel();
        const seed = Uint8Array.fromBase64(key.privateKey, {
          alphabet: "base64url",
        });
        // One import per agent, as a long-lived agent process would do.
        const { privateKey } = await ed25519FromSeed(seed);
        agents.push({ id: key.id, privateKey });
      }),
    );
  }
}

function agentOptions(url: string, a: Agent) {
  return {
    url,
    id: a.id,
    privateKey: a.privateKey,
    // No reconnects: a dropped connection fails the run instead.
    backoff: { initialMs: 60_000 },
  };
}

// The same WebSocket client the SDK uses (TCP_NODELAY, one write per frame),
// so the baseline is not held back by `new WebSocket`'s stall on frames over
// 1 KiB (bench/_gateway_nagle.ts) while the node's side is not.
function openWs(url: string): Promise<WebSocketLike> {
  return new Promise((resolve, reject) => {
    const ws = openWebSocket(url);
    ws.binaryType = "arraybuffer";
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`cannot open ${url}`));
  });
}

function closeWs(ws: WebSocketLike): Promise<void> {
  return new Promise((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) return resolve();
    ws.onclose = () => resolve();
    ws.close(1000);
  });
}

async function connect(set: string, url: string, n: number): Promise<void> {
  if (set === "agent") {
    if (agents.length < n) {
      throw new Error(`connect: ${n} agents wanted, ${agents.length} enrolled`);
    }
    for (let i = connected.agent.length; i < n; i += 10) {
      connected.agent.push(
        ...await Promise.all(
          agents.slice(i, Math.min(n, i + 10)).map((a) =>
            connectAgent(agentOptions(url, a))
          ),
        ),
      );
    }
  } else if (set === "floor") {
    const wsUrl = url.replace(/^http/, "ws") + "/floor";
    for (let i = connected.floor.length; i < n; i += 10) {
      connected.floor.push(
        ...await Promise.all(
          Array.from({ length: Math.min(10, n - i) }, async () => ({
            ws: await openWs(wsUrl),
            id: `did:key:z6Mk${crypto.randomUUID().replaceAll("-", "")}`,
            sealer: new RecordSealer(FLOOR_KEYS.c2s),
            opener: new RecordOpener(FLOOR_KEYS.s2c),
          })),
        ),
      );
    }
  } else {
    const wsUrl = url.replace(/^http/, "ws") + "/echo";
    for (let i = connected.ws.length; i < n; i += 10) {
      connected.ws.push(
        ...await Promise.all(
          Array.from({ length: Math.min(10, n - i) }, () => openWs(wsUrl)),
        ),
      );
    }
  }
}

/**
 * Frames and records the subscribed agents have received so far (a
 * batched frame holds several records).
 */
function received(): { frames: number; records: number } {
  let frames = 0, records = 0;
  for (const a of connected.agent.slice(0, subscribed)) {
    const st = a.stats();
    frames += st.framesIn;
    records += st.recordsIn;
  }
  return { frames, records };
}

/** The current `expect` run of the subscribed agents. */
let fanout:
  | { tag: string; n: number; done: number; t0: number; counts: number[] }
  | undefined;
let subscribed = 0;

async function subscribe(channel: string, n: number): Promise<void> {
  const list = connected.agent.slice(subscribed, n);
  if (subscribed + list.length < n) {
    throw new Error(`subscribe: only ${connected.agent.length} agents`);
  }
  await Promise.all(list.map((agent, k) => {
    const i = subscribed + k;
    return agent.subscribe(channel, (m) => {
      const r = fanout;
      const msg = (m.payload as { msg?: unknown } | null)?.msg;
      if (!r || typeof msg !== "string" || !msg.startsWith(r.tag)) return;
      const c = ++r.counts[i];
      if (c === r.n) {
        if (++r.done === subscribed) {
          fanout = undefined;
          reply({ done: true, ms: performance.now() - r.t0, ...received() });
        }
      } else if (c > r.n) {
        fanout = undefined;
        reply({ error: `agent ${i} got more than ${r.n} tagged ${r.tag}` });
      }
    });
  }));
  subscribed = n;
}

/** A JSON string value whose encoding is exactly `size` bytes. */
function payloadOf(size: number): string {
  return "x".repeat(size - 2);
}

async function run(
  set: string,
  conns: number,
  size: number,
  ms: number,
): Promise<ReturnType<typeof summary>> {
  const latencies: number[] = [];
  const payload = payloadOf(size);
  const bytes = encoder.encode(JSON.stringify(payload));
  const t0 = performance.now();
  const end = t0 + ms;
  if (set === "agent") {
    const list = connected.agent.slice(0, conns);
    if (list.length < conns) throw new Error(`run: only ${list.length} agents`);
    await Promise.all(list.map(async (agent) => {
      while (performance.now() < end) {
        const s = performance.now();
        const answer = await agent.request(REQUEST_CHANNEL, payload);
        latencies.push(performance.now() - s);
        if (typeof answer !== "string" || answer.length !== payload.length) {
          throw new Error(`agent ${agent.id}: wrong reply`);
        }
      }
    }));
  } else if (set === "floor") {
    const list = connected.floor.slice(0, conns);
    if (list.length < conns) throw new Error(`run: only ${list.length} floor`);
    const sid = crypto.randomUUID();
    await Promise.all(list.map((c) =>
      new Promise<void>((resolve, reject) => {
        const ch = `agent.${c.id}.${REQUEST_CHANNEL}`;
        let s = 0;
        const send = () => {
          s = performance.now();
          c.ws.send(c.sealer.seal({
            sid,
            from: c.id,
            to: "backend",
            ch,
            type: "req",
            id: crypto.randomUUID(),
            prio: 4,
          }, encoder.encode(JSON.stringify(payload))));
        };
        c.ws.onmessage = (ev) => {
          const now = performance.now();
          latencies.push(now - s);
          const rec = c.opener.open(new Uint8Array(ev.data as ArrayBuffer));
          const answer = JSON.parse(decoder.decode(rec.body));
          if (rec.header.type !== "res" || answer.length !== payload.length) {
            return reject(new Error(`floor: wrong reply`));
          }
          if (now >= end) return resolve();
          send();
        };
        c.ws.onclose = (ev) => reject(new Error(`floor ws closed ${ev.code}`));
        send();
      })
    ));
    for (const c of list) c.ws.onclose = null;
  } else {
    const list = connected.ws.slice(0, conns);
    if (list.length < conns) throw new Error(`run: only ${list.length} ws`);
    await Promise.all(list.map((ws) =>
      new Promise<void>((resolve, reject) => {
        let s = performance.now();
        ws.onmessage = (ev) => {
          const now = performance.now();
          latencies.push(now - s);
          if ((ev.data as ArrayBuffer).byteLength !== size) {
            return reject(new Error(`echo of ${size} B came back wrong`));
          }
          if (now >= end) return resolve();
          s = now;
          ws.send(bytes);
        };
        ws.onclose = (ev) => reject(new Error(`ws closed ${ev.code}`));
        ws.send(bytes);
      })
    ));
    for (const ws of list) ws.onclose = null;
  }
  return summary(latencies, performance.now() - t0);
}

/** Waits for the next frame of `ws` (the socket keeps one waiter). */
function nextFrame(ws: WebSocketLike): Promise<string | ArrayBuffer> {
  return new Promise((resolve, reject) => {
    ws.onmessage = (ev) => resolve(ev.data);
    ws.onclose = (ev) => reject(new Error(`closed ${ev.code} ${ev.reason}`));
  });
}

/**
 * One handshake on the protocol level: signature when the agent holds no
 * token, else its resumption token; keeps the new token from `ready`.
 */
async function lowLevelHandshake(url: string, a: Agent): Promise<void> {
  const resume = a.token;
  a.token = undefined;
  const state = await agentHello(a.id, { resume: resume !== undefined });
  const ws = await openWs(url);
  const welcome = nextFrame(ws);
  ws.send(state.text);
  const { keys, signature } = await agentFinish(state, await welcome, {
    signingKey: resume ? undefined : a.privateKey,
  });
  const sealer = new RecordSealer(keys.c2s);
  const opener = new RecordOpener(keys.s2c);
  const header: RecordHeader = {
    sid: keys.sid,
    from: a.id,
    to: "backend",
    ch: "",
    type: "auth",
    id: "auth",
  };
  const body = resume ? { resume } : { sig: b64u(signature!) };
  const ready = nextFrame(ws);
  ws.send(sealer.seal(header, encoder.encode(JSON.stringify(body))));
  const rec = opener.open(new Uint8Array(await ready as ArrayBuffer));
  if (rec.header.type !== "ready") {
    throw new Error(`expected ready, got ${rec.header.type}`);
  }
  a.token = JSON.parse(decoder.decode(rec.body)).resume;
  await closeWs(ws);
}

async function handshakes(
  kind: string,
  url: string,
  first: number,
  conc: number,
  ms: number,
): Promise<ReturnType<typeof summary>> {
  const latencies: number[] = [];
  const mine = agents.slice(first, first + conc);
  if (kind !== "ws" && mine.length < conc) {
    throw new Error(
      `handshakes: agents ${first}..${first + conc} not enrolled`,
    );
  }
  const gw = agentGatewayUrl(url);
  if (kind === "resume") {
    // Each agent's first token comes from a signature handshake (not timed).
    await Promise.all(mine.map((a) => a.token ? 0 : lowLevelHandshake(gw, a)));
  }
  const t0 = performance.now();
  const end = t0 + ms;
  const one = kind === "full"
    ? async (a: Agent) => {
      const agent = await connectAgent(agentOptions(url, a));
      await agent.close();
    }
    : kind === "resume"
    ? (a: Agent) => lowLevelHandshake(gw, a)
    : async () => await closeWs(await openWs(url.replace(/^http/, "ws")));
  const loops = Array.from({ length: conc }, (_, i) => mine[i]);
  await Promise.all(loops.map(async (a) => {
    while (performance.now() < end) {
      const s = performance.now();
      await one(a);
      latencies.push(performance.now() - s);
    }
  }));
  return summary(latencies, performance.now() - t0);
}

for await (const cmd of commands()) {
  try {
    const t0 = performance.now();
    if (cmd.cmd === "enrol") {
      await enrol(String(cmd.url), String(cmd.token), Number(cmd.n));
      reply({ enrolled: agents.length, ms: performance.now() - t0 });
    } else if (cmd.cmd === "connect") {
      const set = String(cmd.set);
      await connect(set, String(cmd.url), Number(cmd.n));
      reply({
        connected: set === "agent"
          ? connected.agent.length
          : set === "floor"
          ? connected.floor.length
          : connected.ws.length,
        ms: performance.now() - t0,
      });
    } else if (cmd.cmd === "run") {
      reply(
        await run(
          String(cmd.set),
          Number(cmd.conns),
          Number(cmd.size),
          Number(cmd.ms),
        ),
      );
    } else if (cmd.cmd === "handshakes") {
      reply(
        await handshakes(
          String(cmd.kind),
          String(cmd.url),
          Number(cmd.first ?? 0),
          Number(cmd.conc),
          Number(cmd.ms),
        ),
      );
    } else if (cmd.cmd === "subscribe") {
      await subscribe(String(cmd.channel), Number(cmd.n));
      reply({ subscribed, ms: performance.now() - t0 });
    } else if (cmd.cmd === "expect") {
      fanout = {
        tag: String(cmd.tag),
        n: Number(cmd.n),
        done: 0,
        t0,
        counts: new Array(subscribed).fill(0),
      };
      reply({ armed: true, ...received() });
    } else if (cmd.cmd === "close") {
      const set = String(cmd.set);
      let n = 0;
      if (set === "agent") {
        n = connected.agent.length;
        subscribed = 0;
        await Promise.all(connected.agent.splice(0).map((a) => a.close()));
      } else {
        n = connected.ws.length;
        await Promise.all(connected.ws.splice(0).map(closeWs));
      }
      reply({ closed: n });
    } else {
      reply({ error: `unknown command ${JSON.stringify(cmd)}` });
    }
  } catch (err) {
    reply({ error: String((err as Error)?.stack ?? err) });
  }
}
await Promise.all(connected.agent.map((a) => a.close()));
await Promise.all(connected.ws.map(closeWs));
await Promise.all(connected.floor.map((c) => closeWs(c.ws)));
Deno.exit(0);
