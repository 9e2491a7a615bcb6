/**
 * Server process for bench/log_stream.ts.
 *
 *   deno run -A bench/_ws_server.ts hub --data-dir DIR [--max-buffered BYTES]
 *   deno run -A bench/_ws_server.ts bare
 *
 * `hub` starts a real node in-process (`startNode`, KV in memory, log level
 * info, no stdout sink so only the live log stream receives records) and
 * publishes through the node's logger, so each message goes logger ->
 * `logStream.sink` -> `publish` -> `WS /ws`. `bare` is a plain `Deno.serve`
 * upgrading `/ws` and broadcasting with `for (const s of sockets) s.send(text)`.
 *
 * Commands (JSON lines on stdin, one JSON reply each on stdout):
 * - `{"cmd":"clients"}` -> `{"clients":n}` sockets currently receiving;
 * - `{"cmd":"publish","tag","n","batch","size"}` publishes `n` messages whose
 *   text contains `tag`, yielding to the event loop (setImmediate) after
 *   every `batch`; `size` is the message size the bare server pads to.
 *   Replies `{"published":n,"ms":...,"dropped":...,"peakBuffered":...}`.
 * Prints `{"ready":true,"url":...,"pid":...}` first; exits on stdin EOF.
 *
 * @module
 */
import { setImmediate } from "node:timers";
import { loadConfig } from "../core/config.ts";
import { startNode } from "../core/node.ts";
import { BUILTINS } from "../builtins.ts";
import { commands, flag, numFlag, reply } from "./_util.ts";

const mode = Deno.args[0];
const yieldLoop = () => new Promise<void>((r) => setImmediate(r));

interface Target {
  url: string;
  clients(): number;
  dropped(): number;
  peakBuffered(): number;
  publishOne(tag: string, seq: number, size: number): void;
  close(): Promise<void>;
}

/** Fixed-width sequence number, so every message of a run has one size. */
const seqText = (seq: number) => String(seq).padStart(8, "0");

async function hubTarget(): Promise<Target> {
  const dataDir = flag("data-dir") ?? await Deno.makeTempDir();
  const parsed = loadConfig([
    "--port",
    "0",
    "--kv",
    ":memory:",
    "--data-dir",
    dataDir,
    "--log-level",
    "info",
  ], { env: {} });
  if (parsed.help) throw new Error("unexpected --help");
  const config = parsed.config;
  // A fast publisher outruns the sockets for a moment now and then; give
  // each client room so the bench measures throughput, not the 1 MiB guard.
  config.logStream.maxBufferedBytes = numFlag("max-buffered", 256 << 20);
  // 100 clients connect from one IP at once: the WebSocket handshake limit
  // (burst 20) would refuse most of them. Rate limits are not measured here.
  config.rateLimit.enabled = false;
  const node = await startNode(config, { sinks: [], builtins: BUILTINS });
  const log = node.log;
  return {
    url: node.url.replace(/^http/, "ws") + "/ws",
    clients: () => node.logStream.stats().clients,
    dropped: () => node.logStream.stats().slowConsumersClosed,
    peakBuffered: () => NaN,
    publishOne(tag, seq) {
      log.info(`${tag} log line ${seqText(seq)}`, {
        component: "bench",
        seq,
      });
    },
    close: () => node.shutdown("bench done"),
  };
}

function bareTarget(): Target {
  const sockets = new Set<WebSocket>();
  let peak = 0;
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    (req) => {
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("GET /ws needs a WebSocket upgrade", {
          status: 426,
        });
      }
      const { socket, response } = Deno.upgradeWebSocket(req, {
        idleTimeout: 0,
      });
      socket.onopen = () => sockets.add(socket);
      socket.onclose = () => sockets.delete(socket);
      socket.onerror = () => sockets.delete(socket);
      return response;
    },
  );
  let padFor = -1;
  let pad = "";
  return {
    url: `ws://127.0.0.1:${server.addr.port}/ws`,
    clients: () => sockets.size,
    dropped: () => 0,
    peakBuffered: () => peak,
    publishOne(tag, seq, size) {
      // Serialized once per message (a flat string), sent to every socket.
      const msg = `${tag} log line ${seqText(seq)}`;
      if (padFor !== size) {
        padFor = size;
        const bare = JSON.stringify({ type: "log", payload: { msg, pad: "" } });
        pad = "x".repeat(Math.max(0, size - bare.length));
      }
      const text = JSON.stringify({ type: "log", payload: { msg, pad } });
      for (const s of sockets) s.send(text);
      if (seq % 64 === 0) {
        for (const s of sockets) {
          if (s.bufferedAmount > peak) peak = s.bufferedAmount;
        }
      }
    },
    async close() {
      for (const s of sockets) s.close(1001, "bench done");
      await server.shutdown();
    },
  };
}

let target: Target;
if (mode === "hub") target = await hubTarget();
else if (mode === "bare") target = bareTarget();
else throw new Error(`unknown mode '${mode}' (hub | bare)`);

reply({ ready: true, url: target.url, pid: Deno.pid });
for await (const cmd of commands()) {
  try {
    if (cmd.cmd === "clients") {
      reply({ clients: target.clients() });
    } else if (cmd.cmd === "publish") {
      const tag = String(cmd.tag);
      const n = Number(cmd.n);
      const batch = Number(cmd.batch ?? 16);
      const size = Number(cmd.size ?? 0);
      const dropped0 = target.dropped();
      const t0 = performance.now();
      for (let i = 0; i < n;) {
        const stop = Math.min(n, i + batch);
        for (; i < stop; i++) target.publishOne(tag, i, size);
        await yieldLoop();
      }
      reply({
        published: n,
        ms: performance.now() - t0,
        dropped: target.dropped() - dropped0,
        peakBuffered: target.peakBuffered(),
        clients: target.clients(),
      });
    } else {
      reply({ error: `unknown command ${JSON.stringify(cmd)}` });
    }
  } catch (err) {
    reply({ error: String((err as Error)?.stack ?? err) });
  }
}
await target.close();
