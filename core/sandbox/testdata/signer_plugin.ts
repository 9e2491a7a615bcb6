// A plugin that calls other nodes with ctx.nodeFetch (signed with the
// node's key) and tries to take the key itself.
import { definePlugin } from "../../plugin.ts";

const attempt = async (f: () => unknown) => {
  try {
    return { ok: true, value: await f() };
  } catch (err) {
    const e = err as Error & { code?: string };
    return { ok: false, error: e.name, code: e.code, message: e.message };
  }
};

export default definePlugin({
  manifest: {
    name: "signer",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:signer"],
    requires: ["node:key"],
  },
  setup(ctx) {
    ctx.http.get("/call", async (c) =>
      c.json(
        await attempt(async () => {
          const res = await ctx.nodeFetch(c.req.query("url")!);
          return { status: res.status, body: await res.json() };
        }),
      ));
    ctx.http.get(
      "/key",
      async (c) =>
        c.json(await attempt(() => typeof ctx.kernel.get("node:key"))),
    );
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});
