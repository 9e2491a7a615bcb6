/**
 * Server process for bench/http_health.ts.
 *
 *   deno run -A bench/_http_server.ts node --data-dir DIR
 *   deno run -A bench/_http_server.ts bare --body-file F --headers-file H
 *
 * `node` starts a real node in-process (`startNode`, KV in memory, log level
 * warn, default sinks); `bare` serves the given body with the given headers
 * (a JSON array of [name, value]) from a plain `Deno.serve`. Both print `{"ready":true,"url":...,"pid":...}` once
 * listening, and shut down when stdin closes.
 *
 * @module
 */
import { loadConfig } from "../core/config.ts";
import { startNode } from "../core/node.ts";
import { BUILTINS } from "../builtins.ts";
import { flag, reply, stdinClosed } from "./_util.ts";

const mode = Deno.args[0];
if (mode === "node") {
  const dataDir = flag("data-dir") ?? await Deno.makeTempDir();
  const parsed = loadConfig([
    "--port",
    "0",
    "--kv",
    ":memory:",
    "--data-dir",
    dataDir,
    "--log-level",
    "warn",
  ], { env: {} });
  if (parsed.help) throw new Error("unexpected --help");
  const node = await startNode(parsed.config, { builtins: BUILTINS });
  reply({ ready: true, url: node.url, pid: Deno.pid });
  await stdinClosed();
  await node.shutdown("bench done");
} else if (mode === "bare" || mode === "bare-headers") {
  const body = await Deno.readFile(flag("body-file")!);
  const headers: [string, string][] = JSON.parse(
    await Deno.readTextFile(flag("headers-file")!),
  );
  // `bare-headers`: also what any node must ask of each request, and a bare
  // server never does: the request's headers (a WebSocket upgrade, a CORS
  // origin, a given request id or trace) and a request id of its own,
  // answered in `x-request-id`.
  const handler = mode === "bare"
    ? () => new Response(body, { headers })
    : (req: Request) => {
      const h = req.headers;
      const upgrade = h.get("upgrade");
      const id = h.get("x-request-id") ?? h.get("traceparent") ??
        crypto.randomUUID();
      if (upgrade || h.has("origin")) throw new Error("not in this bench");
      return new Response(body, {
        headers: [...headers, ["x-request-id", id]],
      });
    };
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: () => {} },
    handler,
  );
  reply({
    ready: true,
    url: `http://127.0.0.1:${server.addr.port}`,
    pid: Deno.pid,
  });
  await stdinClosed();
  await server.shutdown();
} else {
  throw new Error(`unknown mode '${mode}' (node | bare | bare-headers)`);
}
