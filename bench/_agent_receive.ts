/**
 * The SDK agents' receive path alone, in-process: real {@linkcode AgentClient}s
 * connected to a test gateway, then fed sealed batch frames made in advance
 * (the shape of bench/peers/centrifugo.ts's broadcast: `records` inner
 * records of ~260 B bodies a frame, `{"ch","type","id","prio","mt"}`
 * headers) as their WebSocket's message events, one frame per agent per
 * turn of the event loop, so their acks go out as they would. What the
 * agents write (acks) is sealed and dropped, not sent. Prints the process's CPU per
 * delivery (open, parse, dispatch to the handler, ack).
 *
 *   deno run -A --v8-flags=--expose-gc bench/_agent_receive.ts [--agents 20]
 *     [--frames 400] [--records 26] [--rounds 5]
 *
 * With `--expose-gc` the garbage of making a round's frames is collected
 * before the round is timed.
 *
 * Run it under `--cpu-prof` and summarize with bench/_gateway_profile.ts to
 * see where the agents' CPU goes without the node beside them.
 *
 * @module
 */
import { cpuUsage } from "node:process";
import { type AgentClient, connectAgent } from "../sdk/client.ts";
import { generateAgentKey } from "../sdk/keys.ts";
import { startTestGateway } from "../sdk/_test_gateway.ts";
import { BatchWriter, type RecordSealer } from "../sdk/protocol/record.ts";
import { DenoWebSocket } from "../sdk/ws_client.ts";
import { numFlag } from "./_util.ts";

const AGENTS = numFlag("agents", 20);
const FRAMES = numFlag("frames", 400);
const RECORDS = numFlag("records", 26);
const ROUNDS = numFlag("rounds", 5);

// The agents' sockets, in the order they first send (one agent at a time).
const sockets: DenoWebSocket[] = [];
const send = DenoWebSocket.prototype.send;
DenoWebSocket.prototype.send = function (this: DenoWebSocket, data) {
  if (!sockets.includes(this)) sockets.push(this);
  return send.call(this, data);
};

await using gateway = await startTestGateway({ acks: 256 });
const agents: AgentClient[] = [];
const sealers: RecordSealer[] = [];
let tag = "";
let got = 0;
for (let i = 0; i < AGENTS; i++) {
  const key = await generateAgentKey();
  gateway.enrol(key.id, key.publicKey);
  const agent = await connectAgent({
    url: gateway.url,
    id: key.id,
    privateKey: Uint8Array.fromBase64(key.privateKey, {
      alphabet: "base64url",
    }),
    backoff: { initialMs: 60_000 },
  });
  // The handler of bench/_gateway_clients.ts: counts the tagged messages.
  await agent.subscribe("fanout", (m) => {
    const msg = (m.payload as { msg?: unknown } | null)?.msg;
    if (typeof msg === "string" && msg.startsWith(tag)) got++;
  });
  gateway.sendFrame(key.id, (sealer) => {
    sealers.push(sealer);
    return sealer.sealBatch(new Uint8Array(0));
  });
  agents.push(agent);
}
await new Promise((r) => setTimeout(r, 100));
if (sockets.length !== AGENTS) {
  throw new Error(`${sockets.length} sockets for ${AGENTS} agents`);
}
let written = 0;
for (const ws of sockets) {
  // Sealed by the agent (its cost), then dropped: no node on the other end.
  ws.send = (data) => void (written += (data as Uint8Array).length ?? 0);
}

const pad = "x".repeat(150);
const encoder = new TextEncoder();
const writer = new BatchWriter();

/** FRAMES sealed batch frames per agent, each in a buffer of its own. */
function frames(round: number): ArrayBuffer[][] {
  // A broadcast's id is the same for every agent (a UUID).
  const ids = Array.from(
    { length: FRAMES * RECORDS },
    () => crypto.randomUUID(),
  );
  return agents.map((agent, a) => {
    const ch = `backend.${agent.id}.fanout`;
    const out: ArrayBuffer[] = [];
    for (let f = 0; f < FRAMES; f++) {
      writer.clear();
      for (let r = 0; r < RECORDS; r++) {
        const i = f * RECORDS + r;
        const body = encoder.encode(JSON.stringify({
          msg: `bench-${round} log line ${String(i).padStart(8, "0")}`,
          pad,
        }));
        writer.addJson(
          `{"ch":${JSON.stringify(ch)},"type":"msg","id":"${
            ids[i]
          }","prio":4,"mt":"notification"}`,
          body,
        );
      }
      out.push(sealers[a].sealBatch(writer.bytes()).slice().buffer);
    }
    return out;
  });
}

const turn = () => new Promise((r) => setTimeout(r, 0));
const results: number[] = [];
for (let round = 0; round < ROUNDS; round++) {
  const all = frames(round);
  tag = `bench-${round} `;
  got = 0;
  (globalThis as { gc?: () => void }).gc?.();
  await turn();
  const c0 = cpuUsage();
  const t0 = performance.now();
  for (let f = 0; f < FRAMES; f++) {
    for (let a = 0; a < AGENTS; a++) {
      sockets[a].dispatchEvent(
        new MessageEvent("message", { data: all[a][f] }),
      );
    }
    await turn();
  }
  await turn();
  const ms = performance.now() - t0;
  const c = cpuUsage(c0);
  const n = AGENTS * FRAMES * RECORDS;
  if (got !== n) throw new Error(`handled ${got} of ${n}`);
  const us = (c.user + c.system) / n;
  results.push(us);
  console.log(
    `round ${round + 1}: ${us.toFixed(3)} µs CPU per delivery, ${
      (ms * 1000 / n).toFixed(3)
    } µs wall, acks out ${written} B`,
  );
}
results.sort((a, b) => a - b);
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ")[0];
console.log(JSON.stringify({
  bench: "agent_receive",
  usPerDelivery: Number(results[results.length >> 1].toFixed(3)),
  best: Number(results[0].toFixed(3)),
  agents: AGENTS,
  recordsPerFrame: RECORDS,
  load: Number(load),
}));
for (const ws of sockets) ws.send = send;
await Promise.all(agents.map((a) => a.close()));
