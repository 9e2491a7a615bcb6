/**
 * An example third-party plugin: one file, a default export, a config
 * schema, a route, a topic subscription, state in its own KV keyspace, a
 * metric and a health check. Copy it to start your own.
 *
 * Load it with `--plugin ./plugins/examples/hello.ts` (or drop the file in
 * `./plugins.d/`), configure it under `pluginConfig.hello` in the config file.
 *
 * @module
 */
import { z } from "zod";
import { definePlugin } from "../../core/plugin.ts";

const config = z.strictObject({
  /** Words the greeting starts with. */
  greeting: z.string().min(1).max(100).default("hello"),
  /** Answer health checks with "down" (to see `/health` degrade). */
  failHealth: z.boolean().default(false),
});

/** What other plugins get from `kernel.get("extension:hello")`. */
export interface HelloApi {
  greet(name: string): Promise<string>;
}

export default definePlugin({
  manifest: {
    name: "hello",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:hello"],
    requires: ["state:kv", "router:local"],
    config,
  },
  setup(ctx) {
    const greeted = ctx.metrics.counter(
      "plexus_hello_greetings_total",
      "Greetings made by the hello plugin",
    );
    const greet = async (name: string): Promise<string> => {
      // Count greetings per name in the plugin's own KV keyspace.
      const res = await ctx.kv.atomic().sum(["greeted", name], 1n).commit();
      if (!res.ok) throw new Error("could not record greeting");
      greeted.inc();
      return `${ctx.config.greeting}, ${name}`;
    };
    ctx.http.get(
      "/greet/:name",
      async (c) => c.json({ message: await greet(c.req.param("name")) }),
    );
    ctx.http.get("/count/:name", async (c) => {
      const entry = await ctx.kv.get<Deno.KvU64>([
        "greeted",
        c.req.param("name"),
      ]);
      return c.json({ count: Number(entry.value?.value ?? 0n) });
    });
    const off = ctx.router.subscribe(
      "hello.requests",
      async (payload, _topic, replyTo) => {
        const name = typeof payload === "string" ? payload : "stranger";
        if (replyTo) ctx.router.publish(replyTo, await greet(name));
      },
    );
    ctx.log.info("hello plugin ready", { greeting: ctx.config.greeting });
    const api: HelloApi = { greet };
    return Promise.resolve({
      api,
      health: () =>
        Promise.resolve(
          ctx.config.failHealth
            ? { status: "down", detail: "told to fail" }
            : { status: "up" },
        ),
      stop: () => {
        off();
        return Promise.resolve();
      },
    });
  },
});
