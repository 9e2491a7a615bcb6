/**
 * Client process for bench/peers/centrifugo.ts: N clients of Centrifugo's
 * own JavaScript SDK (`centrifuge` on npm, the client its docs give for
 * browsers and Node; here on Deno's `WebSocket`), each subscribed to one
 * channel and counting the publications whose `data.msg` holds the current
 * tag: what an application on Centrifugo runs, beside the raw clients that
 * only count tags in the frame text (bench/_ws_clients.ts). JSON-line
 * commands on stdin, one JSON reply each on stdout:
 *
 * - `{"cmd":"connect","url","n","channel"}`: n clients connect and subscribe
 *   → `{"connected":n,"ms"}` once every subscription is ready.
 * - `{"cmd":"expect","tag","n"}` → `{"armed":true}` at once, then
 *   `{"done":true,"ms"}` when every client has n publications tagged `tag`
 *   (`{"error"}` when one gets more).
 * - `{"cmd":"close"}` → `{"closed":n}`.
 *
 *   deno run -A --no-lock bench/peers/_centrifuge_clients.ts [--protobuf]
 *
 * `--protobuf` uses the SDK's Protobuf build: a publication's data then comes
 * as bytes, which the handler decodes and parses as the JSON build would.
 *
 * @module
 */
import type * as CentrifugeApi from "./_centrifuge.d.ts";
import { commands, reply } from "../_util.ts";

/**
 * Imported by a computed name, so `deno check .` and deno.lock leave it out:
 * its dependencies bring Node's global types, which clash with the DOM's
 * `Event` in the rest of the repo. The bench runs this process with
 * `--no-lock` (bench/peers/centrifugo.ts).
 */
const CENTRIFUGE_JS = "npm:centrifuge@5.8.0";
/** `--protobuf`: the SDK's Protobuf build (publications' data as bytes, parsed here as JSON). */
const PROTOBUF = Deno.args.includes("--protobuf");
const { Centrifuge } = await import(
  PROTOBUF ? `${CENTRIFUGE_JS}/build/protobuf` : CENTRIFUGE_JS
) as typeof CentrifugeApi;
const decoder = new TextDecoder();
type Centrifuge = CentrifugeApi.Centrifuge;
type PublicationContext = CentrifugeApi.PublicationContext;

interface Run {
  tag: string;
  n: number;
  done: number;
  t0: number;
  counts: number[];
}

let run: Run | undefined;
const clients: Centrifuge[] = [];

function onPublication(i: number, ctx: PublicationContext): void {
  const r = run;
  const data = PROTOBUF
    ? JSON.parse(decoder.decode(ctx.data as Uint8Array))
    : ctx.data;
  const msg = (data as { msg?: unknown } | null)?.msg;
  if (!r || typeof msg !== "string" || !msg.startsWith(r.tag)) return;
  const c = ++r.counts[i];
  if (c === r.n) {
    if (++r.done === clients.length) {
      run = undefined;
      reply({ done: true, ms: performance.now() - r.t0 });
    }
  } else if (c > r.n) {
    run = undefined;
    reply({ error: `client ${i} got more than ${r.n} tagged ${r.tag}` });
  }
}

function lost(i: number, ctx: { code: number; reason: string }): void {
  if (!run) return;
  run = undefined;
  reply({ error: `client ${i} disconnected (${ctx.code} ${ctx.reason})` });
}

async function connect(url: string, n: number, channel: string) {
  const t0 = performance.now();
  for (let i = clients.length; i < n; i += 10) {
    await Promise.all(
      Array.from({ length: Math.min(10, n - i) }, async (_, k) => {
        const index = i + k;
        const c = new Centrifuge(url, { websocket: WebSocket });
        const sub = c.newSubscription(channel);
        sub.on("publication", (ctx) => onPublication(index, ctx));
        // A client Centrifugo drops (a slow one past its queue) misses
        // publications: the run fails at once rather than at its deadline.
        c.on("disconnected", (ctx) => lost(index, ctx));
        c.on("connecting", (ctx) => {
          if (clients[index] === c && ctx.code !== 0) lost(index, ctx);
        });
        sub.subscribe();
        c.connect();
        clients[index] = c;
        await sub.ready(30_000);
      }),
    );
  }
  return { connected: clients.length, ms: performance.now() - t0 };
}

for await (const cmd of commands()) {
  try {
    switch (cmd.cmd) {
      case "connect":
        reply(
          await connect(
            cmd.url as string,
            cmd.n as number,
            cmd.channel as string,
          ),
        );
        break;
      case "expect":
        run = {
          tag: cmd.tag as string,
          n: cmd.n as number,
          done: 0,
          t0: performance.now(),
          counts: new Array(clients.length).fill(0),
        };
        reply({ armed: true });
        break;
      case "close": {
        const n = clients.length;
        for (const c of clients.splice(0)) c.disconnect();
        reply({ closed: n });
        break;
      }
      default:
        reply({ error: `unknown command ${cmd.cmd}` });
    }
  } catch (err) {
    reply({ error: (err as Error).message });
  }
}
