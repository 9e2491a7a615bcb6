import assert from "node:assert/strict";
import { z } from "zod";
import { createTestKernel } from "../../core/testing.ts";
import { definePlugin, type Plugin } from "../../core/plugin.ts";
import { ServiceError } from "../../core/services_errors.ts";

/** Version `version` of plugin "shop", defining `actions`, each answering its version. */
function shop(
  version: string,
  actions: string[],
  opts: { failSetup?: boolean; gate?: Promise<void> } = {},
): Plugin {
  return definePlugin({
    manifest: {
      name: "shop",
      version,
      kind: "extension",
      api: "^1",
      provides: ["extension:shop"],
    },
    async setup(ctx) {
      for (const name of actions) {
        await ctx.services.define(name, z.unknown(), async () => {
          await opts.gate;
          return `${name}@${version}`;
        });
      }
      if (opts.failSetup) throw new Error("setup failed on purpose");
      return { stop: () => Promise.resolve() };
    },
  });
}

/** A plugin that only calls. */
const caller = definePlugin({
  manifest: {
    name: "caller",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:caller"],
  },
  setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
});

Deno.test("services swap: a call in flight finishes on the old copy, calls after the swap reach the new one, and actions the new copy does not define go away", async () => {
  const gate = Promise.withResolvers<void>();
  await using t = await createTestKernel([
    shop("1.0.0", ["shop.buy", "shop.old"], { gate: gate.promise }),
    caller,
  ]);
  const services = t.kernel.services;
  const inFlight = services.call("shop.buy", {});
  const report = t.kernel.replace(shop("2.0.0", ["shop.buy", "shop.new"]));
  // The swap adds shop.new; until then the new copy is dark.
  while (!services.local("shop.new")) {
    await new Promise((r) => setTimeout(r, 1));
  }
  // The old copy's call is still running, and a new call reaches v2.
  assert.equal(await services.call("shop.buy", {}), "shop.buy@2.0.0");
  gate.resolve();
  assert.equal(await inFlight, "shop.buy@1.0.0");
  assert.equal((await report).drained, true);
  assert.equal(await services.call("shop.new", {}), "shop.new@2.0.0");
  await assert.rejects(
    services.call("shop.old", {}),
    (err) => err instanceof ServiceError && err.code === "service_not_found",
  );
  assert.deepEqual(
    (await services.list()).map((a) => [a.name, a.plugin]),
    [["shop.buy", "shop"], ["shop.new", "shop"]],
  );
});

Deno.test("services swap: a replacement that fails to start leaves the old copy's actions serving", async () => {
  await using t = await createTestKernel([shop("1.0.0", ["shop.buy"])]);
  await assert.rejects(
    t.kernel.replace(
      shop("2.0.0", ["shop.buy", "shop.new"], { failSetup: true }),
    ),
    /failed to start/,
  );
  assert.equal(await t.kernel.services.call("shop.buy", {}), "shop.buy@1.0.0");
  assert.deepEqual((await t.kernel.services.list()).map((a) => a.name), [
    "shop.buy",
  ]);
});

Deno.test("services: two plugins defining one action on one node fail the second's start naming the first", async () => {
  const other = definePlugin({
    manifest: {
      name: "other",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:other"],
    },
    async setup(ctx) {
      await ctx.services.define("shop.buy", z.unknown(), () => "other");
      return { stop: () => Promise.resolve() };
    },
  });
  await assert.rejects(
    createTestKernel([shop("1.0.0", ["shop.buy"]), other]),
    /plugin 'other' failed to start: Cannot define action 'shop\.buy': plugin 'shop' defines it on this node already/,
  );
});

Deno.test("services: a stopped plugin's actions go away", async () => {
  const t = await createTestKernel([shop("1.0.0", ["shop.buy"])]);
  const services = t.kernel.services;
  await t.close();
  assert.deepEqual(await services.list(), []);
});
