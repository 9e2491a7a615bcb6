// A plugin that uses extension:calc (itself provided by a sandboxed plugin).
import { definePlugin } from "../../plugin.ts";

export default definePlugin({
  manifest: {
    name: "calc-user",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:calc-user"],
    requires: ["extension:calc"],
  },
  setup(ctx) {
    const calc = ctx.kernel.get<{ add(a: number, b: number): Promise<number> }>(
      "extension:calc",
    );
    ctx.http.get("/sum", async (c) => c.json({ sum: await calc.add(40, 2) }));
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
});
