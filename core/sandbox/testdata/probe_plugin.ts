// A plugin that tries what a sandbox should refuse unless granted: each
// route answers what happened ({ok, value} or {error: name}).
import { definePlugin, z } from "../../plugin.ts";

const attempt = async (f: () => unknown) => {
  try {
    return { ok: true, value: await f() };
  } catch (err) {
    return {
      ok: false,
      error: (err as Error).name,
      message: (err as Error).message,
    };
  }
};

export default definePlugin({
  manifest: {
    name: "probe",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:probe"],
    requires: ["tasks:local"],
    config: z.strictObject({
      url: z.string().default("http://127.0.0.1:9/"),
      file: z.string().default("/etc/passwd"),
    }),
  },
  setup(ctx) {
    ctx.http.get(
      "/fetch",
      async (c) =>
        c.json(await attempt(async () => (await fetch(ctx.config.url)).status)),
    );
    ctx.http.get(
      "/read",
      async (c) =>
        c.json(
          await attempt(() =>
            Deno.readTextFile(ctx.config.file).then((t) => t.length)
          ),
        ),
    );
    ctx.http.get(
      "/env",
      async (c) => c.json(await attempt(() => Deno.env.get("HOME"))),
    );
    ctx.http.get(
      "/raw-kv",
      async (c) =>
        c.json(await attempt(() => typeof ctx.kernel.get("state:kv"))),
    );
    ctx.http.get(
      "/node-fetch",
      async (c) => c.json(await attempt(() => ctx.nodeFetch(ctx.config.url))),
    );
    ctx.http.get("/kv", async (c) => {
      await ctx.kv.set(["mine"], c.req.query("v") ?? "1");
      const seen: unknown[] = [];
      for await (const e of ctx.kv.list({ prefix: [] })) seen.push(e.key);
      return c.json({ seen, mine: (await ctx.kv.get(["mine"])).value });
    });
    ctx.http.get("/throw-later", (c) => {
      setTimeout(() => {
        throw new Error("boom from a timer");
      }, 0);
      return c.json({ ok: true });
    });
    ctx.http.get("/reject-later", (c) => {
      Promise.reject(new Error("stray rejection"));
      return c.json({ ok: true });
    });
    ctx.http.get("/hog", (c) => {
      // Keeps allocating until the heap cap (process level) stops it.
      const keep: number[][] = [];
      const grow = () => {
        for (let i = 0; i < 50; i++) keep.push(new Array(250_000).fill(i));
        setTimeout(grow, 0);
      };
      // Late enough for this answer to leave the process first.
      setTimeout(grow, 200);
      return c.json({ ok: true });
    });
    ctx.http.get("/flood", (c) => {
      // Publishes as fast as it can, for ever.
      const flood = () => {
        for (let i = 0; i < 2000; i++) ctx.router.publish("probe.flood", i);
        setTimeout(flood, 0);
      };
      setTimeout(flood, 0);
      return c.json({ ok: true });
    });
    ctx.http.get("/spin", (c) => {
      setTimeout(() => {
        // Says so first: the note leaves in this turn's check phase (the
        // sandbox's outbox flush) and the loop starts right after it, with no
        // message taken in between, so a call sent on seeing the note is
        // never answered.
        ctx.router.publish("probe.spinning", true);
        setImmediate(() => {
          for (;;) { /* never yields */ }
        });
      }, 0);
      return c.json({ ok: true });
    });
    // A socket written for an in-process plugin: its own auth, an echo of
    // text and binary frames, and on request a close, a crash, a blocked
    // event loop, or more output than the client takes.
    ctx.websocket("probe", (req) => {
      if (new URL(req.url).searchParams.get("token") !== "letmein") {
        return new Response("who are you?", { status: 401 });
      }
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => socket.send("hello");
      socket.onmessage = (e) => {
        if (typeof e.data !== "string") {
          return socket.send(new Uint8Array(e.data).reverse());
        }
        if (e.data === "bye") return socket.close(4000, "bye");
        if (e.data === "crash") {
          setTimeout(() => {
            throw new Error("boom from a socket");
          }, 0);
          return;
        }
        if (e.data === "block") {
          const until = Date.now() + 1000;
          while (Date.now() < until) { /* busy */ }
          return;
        }
        if (e.data.startsWith("spam:")) {
          const chunk = new Uint8Array(64 * 1024);
          for (let i = 0; i < Number(e.data.slice(5)); i++) socket.send(chunk);
          return;
        }
        socket.send(`echo:${e.data}`);
      };
      socket.addEventListener("close", (e) => {
        ctx.router.publish("probe.socket.closed", {
          code: (e as CloseEvent).code,
        });
      });
      return response;
    });
    ctx.api("probe").get(
      "/me",
      "tasks:read",
      (c) => c.json({ sub: c.var.principal.sub, role: c.var.principal.role }),
    );
    ctx.router.subscribe("probe.ask", (payload, _topic, replyTo) => {
      if (replyTo) ctx.router.publish(replyTo, { echo: payload });
    });
    ctx.kernel.get("tasks:local").register(
      "probe.double",
      (p) => Promise.resolve((p as number) * 2),
    );
    ctx.metrics.counter("plexus_probe_calls_total", "Probe calls").inc();
    ctx.log.info("probe ready", { sandboxed: true });
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});
