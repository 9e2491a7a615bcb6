/**
 * Server processes for bench/gateway.ts.
 *
 *   deno run -A bench/_gateway_server.ts node --data-dir DIR
 *   deno run -A bench/_gateway_server.ts bare
 *   deno run -A bench/_gateway_server.ts floor
 *
 * `node` starts a real node in-process (`startNode`, KV file
 * `DIR/plexus.kv`, rate limits off, log level warn, logs to stderr) and
 * registers a backend request handler through the kernel's
 * `gateway:agents` capability that answers every `req` on
 * `agent.*.requests` with its payload. It prints
 * `{"ready":true,"url","pid","token"}` (`token`: an operator JWT for
 * `POST /api/v1/agents`, ttl 1 h).
 *
 * `bare` is a plain `Deno.serve` + `Deno.upgradeWebSocket` echo: every frame
 * received is sent back as it came. It prints `{"ready":true,"url","pid"}`.
 *
 * `floor` is the bare echo plus the record layer and nothing else: what any
 * sealed echo must do per round trip. Each socket opens every frame as a
 * record ({@linkcode FLOOR_KEYS}, no handshake), parses its JSON body,
 * encodes the reply JSON and seals it as a `res` record answering it
 * (bench/_gateway_clients.ts's `floor` set does the agent's half).
 *
 * The node's config adds one non-durable channel, {@linkcode FANOUT_CHANNEL}
 * (agents may subscribe; nothing stored, like a memory broker), to the
 * gateway's default channels, for bench/peers/centrifugo.ts.
 *
 * Commands (JSON lines on stdin, one JSON reply each): `{"cmd":"stats"}` →
 * `{"connections":n,"echoed":n,"kv":{"commits":n,"reads":n}}` (`node` also
 * `"records":{"in","out"}`: the gateway's sealed records received and sent,
 * from its metrics);
 * `{"cmd":"broadcast","tag","n","burst","inflight","pad"}` (`node` only)
 * broadcasts `n` messages `{"msg":"{tag} log line 00000042","pad"}` on
 * {@linkcode FANOUT_CHANNEL} through the kernel's `gateway:agents`
 * capability: `inflight` workers, each starting `burst` broadcasts at once
 * and awaiting them before its next burst → `{"published":n,"ms",
 * "sentTo":total,"failed":total}`. The node's
 * KV calls are counted by wrapping `Deno.Kv` and `Deno.AtomicOperation`
 * methods in this process (one extra function call each): `commits` =
 * `atomic().commit()`, `set`, `delete`; `reads` = `get`, `getMany`, `list`.
 * Both exit on stdin EOF.
 *
 * @module
 */
import { loadConfig } from "../core/config.ts";
import { startNode } from "../core/node.ts";
import { safeStringify } from "../core/observe/logger.ts";
import type { AgentGateway } from "../gateway/gateway.ts";
import { localGateway } from "../gateway/mod.ts";
import { DEFAULT_CHANNELS } from "../gateway/policy.ts";
import { BUILTINS } from "../builtins.ts";
import { commands, flag, reply } from "./_util.ts";
import { RecordOpener, RecordSealer } from "../sdk/protocol/record.ts";

/** The channel name the benchmark's agents send their requests on. */
export const REQUEST_CHANNEL = "requests";

/** The non-durable channel bench/peers/centrifugo.ts broadcasts on. */
export const FANOUT_CHANNEL = "fanout";

/** The `floor` set's session keys (agent → node, node → agent): fixed, no handshake. */
export const FLOOR_KEYS = {
  c2s: new Uint8Array(32).fill(1),
  s2c: new Uint8Array(32).fill(2),
} as const;

const encoder = new TextEncoder();
const mode = Deno.args[0];

interface Server {
  url: string;
  token?: string;
  stats(): { connections: number; echoed: number };
  /** Sealed agent records the gateway received and sent so far (`node` only). */
  records?(): Promise<{ in: number; out: number }>;
  broadcast?(cmd: Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
}

const kvCalls = { commits: 0, reads: 0 };

/** Counts the KV calls this process makes (see the module doc). */
function countKvCalls(): void {
  type Methods = Record<string, (...args: unknown[]) => unknown>;
  const wrap = (proto: Methods, names: string[], kind: "commits" | "reads") => {
    for (const name of names) {
      const original = proto[name];
      proto[name] = function (this: unknown, ...args: unknown[]) {
        kvCalls[kind]++;
        return original.apply(this, args);
      };
    }
  };
  const kv = Deno.Kv.prototype as unknown as Methods;
  wrap(kv, ["set", "delete"], "commits");
  wrap(kv, ["get", "getMany", "list"], "reads");
  wrap(
    Deno.AtomicOperation.prototype as unknown as Methods,
    ["commit"],
    "commits",
  );
}

async function nodeServer(): Promise<Server> {
  countKvCalls();
  const dataDir = flag("data-dir") ?? await Deno.makeTempDir();
  // Rate limits are their own concern: the per-IP handshake budget (5/s)
  // would refuse the handshake rounds and the 100 agents' connects.
  const configFile = `${dataDir}/bench-config.json`;
  await Deno.writeTextFile(
    configFile,
    JSON.stringify({
      rateLimit: { enabled: false },
      pluginConfig: {
        gateway: {
          channels: {
            ...DEFAULT_CHANNELS,
            [FANOUT_CHANNEL]: { subscribe: ["agent"], durable: false },
          },
        },
      },
    }),
  );
  const parsed = loadConfig([
    "--config",
    configFile,
    "--port",
    "0",
    "--kv",
    `${dataDir}/plexus.kv`,
    "--data-dir",
    dataDir,
    "--log-level",
    "warn",
  ], { env: {} });
  if (parsed.help) throw new Error("unexpected --help");
  // stdout is the reply channel: logs go to stderr.
  const node = await startNode(parsed.config, {
    builtins: BUILTINS,
    sinks: [
      (r) => Deno.stderr.writeSync(encoder.encode(safeStringify(r) + "\n")),
    ],
  });
  let echoed = 0;
  const agents = node.kernel.get<AgentGateway>("gateway:agents");
  agents.onRequest(`agent.*.${REQUEST_CHANNEL}`, ({ payload }) => {
    echoed++;
    return payload;
  });
  const token = await node.security.jwt.issue("bench", "operator", {
    ttl: "1h",
  });
  return {
    url: node.url,
    token,
    stats: () => ({
      connections: localGateway(node.kernel).connections,
      echoed,
    }),
    async records() {
      const text = await (await fetch(`${node.url}/metrics`)).text();
      const count = (direction: string) =>
        Number(
          text.split("\n").find((l) =>
            l.startsWith(
              `plexus_gateway_messages_total{direction="${direction}"} `,
            )
          )?.split(" ")[1] ?? 0,
        );
      return { in: count("in"), out: count("out") };
    },
    async broadcast(cmd) {
      const tag = String(cmd.tag);
      const n = Number(cmd.n);
      const burst = Number(cmd.burst ?? 16);
      const pad = String(cmd.pad ?? "");
      let next = 0;
      let sentTo = 0;
      let failed = 0;
      const t0 = performance.now();
      const worker = async () => {
        while (next < n) {
          const from = next;
          next = Math.min(n, next + burst);
          const all = [];
          for (let i = from; i < next; i++) {
            all.push(agents.broadcast(FANOUT_CHANNEL, {
              msg: `${tag} log line ${String(i).padStart(8, "0")}`,
              pad,
            }));
          }
          for (const r of await Promise.all(all)) {
            sentTo += r.sentTo.length;
            failed += r.failed.length + r.queued.length;
          }
        }
      };
      await Promise.all(
        Array.from({ length: Number(cmd.inflight ?? 4) }, worker),
      );
      return { published: n, ms: performance.now() - t0, sentTo, failed };
    },
    close: () => node.shutdown("bench done"),
  };
}

function bareServer(): Server {
  let connections = 0;
  let echoed = 0;
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (req) => {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("needs a WebSocket upgrade", { status: 426 });
      }
      const { socket, response } = Deno.upgradeWebSocket(req, {
        idleTimeout: 0,
      });
      socket.binaryType = "arraybuffer";
      socket.onopen = () => connections++;
      socket.onclose = () => connections--;
      socket.onmessage = (ev) => {
        echoed++;
        socket.send(ev.data);
      };
      return response;
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    stats: () => ({ connections, echoed }),
    close: () => server.shutdown(),
  };
}

/** The bare echo plus one record opened and one sealed per frame (see the module doc). */
function floorServer(): Server {
  let connections = 0;
  let echoed = 0;
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (req) => {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("needs a WebSocket upgrade", { status: 426 });
      }
      const { socket, response } = Deno.upgradeWebSocket(req, {
        idleTimeout: 0,
      });
      const opener = new RecordOpener(FLOOR_KEYS.c2s);
      const sealer = new RecordSealer(FLOOR_KEYS.s2c);
      socket.binaryType = "arraybuffer";
      socket.onopen = () => connections++;
      socket.onclose = () => connections--;
      socket.onmessage = (ev) => {
        const { header, body } = opener.open(new Uint8Array(ev.data));
        const payload = JSON.parse(decoder.decode(body));
        echoed++;
        socket.send(sealer.seal({
          sid: header.sid,
          from: "node:floor",
          to: header.from,
          ch: header.ch,
          type: "res",
          id: crypto.randomUUID(),
          re: header.id,
        }, encoder.encode(JSON.stringify(payload))));
      };
      return response;
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    stats: () => ({ connections, echoed }),
    close: () => server.shutdown(),
  };
}

if (import.meta.main) {
  let server: Server;
  if (mode === "node") server = await nodeServer();
  else if (mode === "bare") server = bareServer();
  else if (mode === "floor") server = floorServer();
  else throw new Error(`unknown mode '${mode}' (node | bare | floor)`);

  reply({ ready: true, url: server.url, pid: Deno.pid, token: server.token });
  for await (const cmd of commands()) {
    if (cmd.cmd === "stats") {
      reply({
        ...server.stats(),
        kv: kvCalls,
        ...(server.records ? { records: await server.records() } : {}),
      });
    } else if (cmd.cmd === "broadcast" && server.broadcast) {
      try {
        reply(await server.broadcast(cmd));
      } catch (err) {
        reply({ error: String((err as Error)?.stack ?? err) });
      }
    } else reply({ error: `unknown command ${JSON.stringify(cmd)}` });
  }
  await server.close();
  // Timers of plugins must not keep the process (and a --cpu-prof write) waiting.
  Deno.exit(0);
}
