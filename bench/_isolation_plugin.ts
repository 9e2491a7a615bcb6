/**
 * The plugin `bench/plugin_isolation.ts` runs trusted and sandboxed: one
 * HTTP route and one router echo, each doing the least work possible, so
 * what differs between the two is the boundary.
 *
 * @module
 */
import { definePlugin } from "../core/plugin.ts";

export default definePlugin({
  manifest: {
    name: "isolated",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:isolated"],
  },
  setup(ctx) {
    ctx.http.get("/ping", (c) => c.json({ pong: true }));
    const off = ctx.router.subscribe("bench.echo", (payload, _t, replyTo) => {
      if (replyTo) ctx.router.publish(replyTo, payload);
    });
    return Promise.resolve({ stop: () => Promise.resolve(off()) });
  },
});
