/**
 * A misbehaving client for tests/integration/connection_limits_test.ts, run
 * as its own process: opens many connections to a node from several
 * loopback source addresses and never completes a request on them.
 *
 *   deno run --allow-net _attacker.ts --port P --ips 127.0.0.2,127.0.0.3
 *     --idle N --half N --trickle N --hold MS [--trickle-every MS]
 *
 * - idle: connects and sends nothing;
 * - half: sends a partial request head, then nothing;
 * - trickle: sends a WebSocket upgrade head one byte at a time.
 *
 * Every socket is kept until the server closes it or `--hold` ms pass; then
 * the process prints one JSON line per kind (opened, refused with 503,
 * closed by the server, the longest time the server kept one) and exits.
 *
 * @module
 */
import net from "node:net";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string" },
    ips: { type: "string", default: "127.0.0.2" },
    idle: { type: "string", default: "0" },
    half: { type: "string", default: "0" },
    trickle: { type: "string", default: "0" },
    hold: { type: "string", default: "5000" },
    "trickle-every": { type: "string", default: "500" },
  },
});
const port = Number(values.port);
const ips = values.ips!.split(",");
const hold = Number(values.hold);
const trickleEvery = Number(values["trickle-every"]);

interface Stats {
  opened: number;
  failed: number;
  refused503: number;
  closedByServer: number;
  maxServerCloseMs: number;
}
const stats: Record<string, Stats> = {};
const sockets = new Set<net.Socket>();
const timers = new Set<ReturnType<typeof setInterval>>();

const HALF = "GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: ";
const TRICKLE =
  "GET /ws/agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

function open(kind: string, i: number): Promise<void> {
  const s = (stats[kind] ??= {
    opened: 0,
    failed: 0,
    refused503: 0,
    closedByServer: 0,
    maxServerCloseMs: 0,
  });
  return new Promise((resolve) => {
    const sock = net.connect({
      host: "127.0.0.1",
      port,
      localAddress: ips[i % ips.length],
    });
    let t0 = 0;
    let got = "";
    let leaving = false;
    sock.on("connect", () => {
      t0 = performance.now();
      s.opened++;
      sockets.add(sock);
      if (kind === "half") sock.write(HALF);
      if (kind === "trickle") {
        let at = 0;
        const t = setInterval(() => {
          if (at < TRICKLE.length) sock.write(TRICKLE[at++]);
        }, trickleEvery);
        timers.add(t);
        sock.on("close", () => {
          clearInterval(t);
          timers.delete(t);
        });
      }
      resolve();
    });
    sock.on("data", (d) => (got += d));
    sock.on("error", () => {
      if (!t0) {
        s.failed++;
        resolve();
      }
    });
    sock.on("close", () => {
      sockets.delete(sock);
      if (!t0 || leaving) return;
      if (got.startsWith("HTTP/1.1 503")) s.refused503++;
      else {
        s.closedByServer++;
        s.maxServerCloseMs = Math.max(
          s.maxServerCloseMs,
          Math.round(performance.now() - t0),
        );
      }
    });
    sock.once("leave", () => (leaving = true));
  });
}

const kinds: [string, number][] = [
  ["idle", Number(values.idle)],
  ["half", Number(values.half)],
  ["trickle", Number(values.trickle)],
];
const started = performance.now();
// Interleave the kinds, a few at a time, as a real flood would.
const total = kinds.reduce((n, [, k]) => n + k, 0);
const left = new Map(kinds);
for (let i = 0; i < total;) {
  const batch: Promise<void>[] = [];
  for (const [kind] of kinds) {
    for (let j = 0; j < 10 && left.get(kind)! > 0; j++, i++) {
      left.set(kind, left.get(kind)! - 1);
      batch.push(open(kind, i));
    }
  }
  await Promise.all(batch);
}
console.error(
  `attacker: ${total} connections attempted in ${
    Math.round(performance.now() - started)
  } ms`,
);
await new Promise((r) =>
  setTimeout(r, Math.max(0, hold - (performance.now() - started)))
);
for (const t of timers) clearInterval(t);
for (const sock of sockets) {
  sock.emit("leave");
  sock.destroy();
}
console.log(JSON.stringify(stats));
