// A plugin that uses another plugin's capability (extension:ledger) and
// provides its own (extension:calc) through running.api, written as for
// trusted: each route answers what happened ({ok, value} or the error).
import { definePlugin, PlexusError } from "../../plugin.ts";

interface Ledger {
  record(entry: unknown): Promise<number>;
  total(): Promise<number>;
  refuse(): Promise<void>;
  callback(): Promise<() => void>;
}

const attempt = async (f: () => unknown) => {
  try {
    return { ok: true, value: await f() };
  } catch (err) {
    const e = err as Error & { code?: string; status?: number };
    return {
      ok: false,
      error: e.name,
      code: e.code,
      status: e.status,
      message: e.message,
    };
  }
};

export default definePlugin({
  manifest: {
    name: "calc",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:calc"],
    requires: ["extension:ledger@^1", "router:local"],
  },
  setup(ctx) {
    const ledger = ctx.kernel.get<Ledger>("extension:ledger");
    ctx.http.get("/record", async (c) =>
      c.json(
        await attempt(async () => {
          const n = await ledger.record({ from: "calc" });
          return { n, total: await ledger.total() };
        }),
      ));
    ctx.http.get(
      "/refused",
      async (c) => c.json(await attempt(() => ledger.refuse())),
    );
    ctx.http.get(
      "/function-argument",
      async (c) => c.json(await attempt(() => ledger.record(() => 1))),
    );
    ctx.http.get(
      "/function-result",
      async (c) => c.json(await attempt(() => ledger.callback())),
    );
    ctx.http.get(
      "/router",
      async (c) =>
        c.json(
          await attempt(() => ctx.kernel.get("router:local") === ctx.router),
        ),
    );
    ctx.http.get(
      "/has",
      (c) => c.json({ ledger: ctx.kernel.has("extension:ledger") }),
    );
    ctx.http.get(
      "/undeclared",
      async (c) =>
        c.json(await attempt(() => ctx.kernel.get("extension:other"))),
    );
    return Promise.resolve({
      api: {
        add: (a: number, b: number) => a + b,
        boom() {
          throw new PlexusError("calc_boom", "calc refused", { status: 418 });
        },
        apply: (f: unknown) => typeof f,
        later: () => () => 1,
      },
      stop: () => Promise.resolve(),
    });
  },
});
