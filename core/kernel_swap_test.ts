import assert from "node:assert/strict";
import { z } from "zod";
import { createTestKernel } from "./testing.ts";
import { definePlugin, type Plugin, PluginError } from "./plugin.ts";
import type { TaskService } from "./tasks.ts";

/**
 * Version `version` of plugin "greeter": a route answering its version (after
 * `delayMs`), an API route, a subscription to "greet.in" recording
 * `{version, payload}` in `seen`, and a task type answering its version.
 */
function greeter(
  version: string,
  seen: { version: string; payload: unknown }[],
  opts: {
    delayMs?: number;
    failSetup?: boolean;
    requires?: string[];
    provides?: string[];
    config?: z.ZodType;
    events?: string[];
  } = {},
): Plugin {
  return definePlugin({
    manifest: {
      name: "greeter",
      version,
      kind: "extension",
      api: "^1",
      provides: opts.provides ?? ["extension:greeter"],
      requires: opts.requires ?? ["tasks:local"],
      config: opts.config,
    },
    setup(ctx) {
      ctx.http.get("/version", async (c) => {
        if (opts.delayMs) {
          await new Promise((r) => setTimeout(r, opts.delayMs));
        }
        return c.json({ version });
      });
      ctx.api("greeter").get(
        "/version",
        "plugins:read",
        (c) => c.json({ version }),
      );
      const off = ctx.router.subscribe("greet.in", (payload) => {
        seen.push({ version, payload });
      });
      ctx.kernel.get<TaskService>("tasks:local").register(
        "greet",
        () => Promise.resolve({ version }),
      );
      if (opts.failSetup) throw new Error("setup of the new version broke");
      return Promise.resolve({
        api: { version },
        stop: () => {
          off();
          opts.events?.push(`stop ${version}`);
          return Promise.resolve();
        },
      });
    },
  }) as Plugin;
}

Deno.test("swap: routes, API routes, subscriptions and task types move to the new version; the old one stops", async () => {
  const seen: { version: string; payload: unknown }[] = [];
  const events: string[] = [];
  await using t = await createTestKernel([greeter("1.0.0", seen, { events })]);
  t.router.publish("greet.in", 1);
  const report = await t.kernel.replace(greeter("2.0.0", seen, { events }));
  assert.equal(report.from, "1.0.0");
  assert.equal(report.to, "2.0.0");
  assert.equal(report.drained, true);
  assert.deepEqual(events, ["stop 1.0.0"]);
  t.router.publish("greet.in", 2);
  assert.deepEqual(seen, [
    { version: "1.0.0", payload: 1 },
    { version: "2.0.0", payload: 2 },
  ]);
  const res = await t.request("/plugins/greeter/version");
  assert.deepEqual(await res.json(), { version: "2.0.0" });
  const api = await t.api("/api/v1/greeter/version");
  assert.deepEqual(await api.json(), { version: "2.0.0" });
  const { id } = await t.tasks.submit({ type: "greet" });
  let view = await t.tasks.get(id);
  while (view?.status !== "done") {
    await new Promise((r) => setTimeout(r, 10));
    view = await t.tasks.get(id);
  }
  assert.deepEqual(view.result, { version: "2.0.0" });
  assert.deepEqual(t.kernel.get("extension:greeter"), { version: "2.0.0" });
  assert.equal(t.kernel.list()[0].version, "2.0.0");
  assert.equal(t.kernel.list()[0].status, "running");
});

Deno.test("swap: a request the old version is answering finishes before it stops; new requests reach the new one", async () => {
  const events: string[] = [];
  await using t = await createTestKernel([
    greeter("1.0.0", [], { delayMs: 150, events }),
  ]);
  const slow = t.request("/plugins/greeter/version");
  // The old copy's handler is running (its timer is set) before the swap.
  await new Promise((r) => setTimeout(r, 20));
  const swapping = t.kernel.replace(greeter("2.0.0", [], { events }));
  // The swap itself happens once the new copy's setup is done.
  while (t.kernel.list()[0].version !== "2.0.0") {
    await new Promise((r) => setTimeout(r, 1));
  }
  const after = await (await t.request("/plugins/greeter/version")).json();
  assert.deepEqual(after, { version: "2.0.0" });
  assert.deepEqual(events, [], "the old copy must not stop mid-request");
  const res = await slow;
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { version: "1.0.0" });
  const report = await swapping;
  assert.equal(report.drained, true);
  assert.deepEqual(events, ["stop 1.0.0"]);
});

Deno.test("swap: every message published during a swap is handled exactly once", async () => {
  const seen: { version: string; payload: unknown }[] = [];
  await using t = await createTestKernel([greeter("1.0.0", seen)]);
  let n = 0;
  const pump = setInterval(() => t.router.publish("greet.in", n++), 1);
  await new Promise((r) => setTimeout(r, 30));
  await t.kernel.replace(greeter("2.0.0", seen));
  await new Promise((r) => setTimeout(r, 30));
  clearInterval(pump);
  assert.deepEqual(seen.map((s) => s.payload), [...Array(n).keys()]);
  const firstNew = seen.findIndex((s) => s.version === "2.0.0");
  assert.ok(firstNew > 0, "both versions handled messages");
  assert.ok(seen.slice(firstNew).every((s) => s.version === "2.0.0"));
});

Deno.test("swap: a new version that fails its setup is refused and the old one keeps serving", async () => {
  const seen: { version: string; payload: unknown }[] = [];
  const events: string[] = [];
  await using t = await createTestKernel([greeter("1.0.0", seen, { events })]);
  await assert.rejects(
    () => t.kernel.replace(greeter("2.0.0", seen, { failSetup: true, events })),
    (err: unknown) =>
      err instanceof PluginError && err.phase === "setup" &&
      /greeter' 2\.0\.0 failed to start, so 1\.0\.0 keeps serving: setup of the new version broke/
        .test(err.message),
  );
  t.router.publish("greet.in", "after");
  // The failed copy's subscription is gone: only the old copy heard it.
  assert.deepEqual(seen, [{ version: "1.0.0", payload: "after" }]);
  const res = await t.request("/plugins/greeter/version");
  assert.deepEqual(await res.json(), { version: "1.0.0" });
  assert.deepEqual(events, []);
  // And a later, good version still swaps in.
  await t.kernel.replace(greeter("3.0.0", seen, { events }));
  assert.deepEqual(
    await (await t.request("/plugins/greeter/version")).json(),
    { version: "3.0.0" },
  );
});

Deno.test("swap: invalid config, unmet requires, a dropped capability others need and an unknown name are refused before anything starts", async () => {
  const seen: { version: string; payload: unknown }[] = [];
  const user = definePlugin({
    manifest: {
      name: "user",
      version: "1.0.0",
      kind: "extension",
      api: "^1",
      provides: [],
      requires: ["extension:greeter"],
    },
    setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
  });
  await using t = await createTestKernel([greeter("1.0.0", seen), user], {
    pluginConfig: { greeter: { loud: "yes" } },
  });
  const refused = async (p: Plugin, phase: string, re: RegExp) =>
    await assert.rejects(
      () => t.kernel.replace(p),
      (err: unknown) =>
        err instanceof PluginError && err.phase === phase &&
        re.test(err.message),
    );
  await refused(
    greeter("2.0.0", seen, { config: z.object({ loud: z.boolean() }) }),
    "config",
    /invalid config/,
  );
  await refused(
    greeter("2.0.0", seen, { requires: ["extension:missing"] }),
    "resolve",
    /requires 'extension:missing'/,
  );
  await refused(
    greeter("2.0.0", seen, { provides: [] }),
    "resolve",
    /plugin 'user' requires 'extension:greeter'/,
  );
  await refused(
    definePlugin({
      manifest: {
        name: "stranger",
        version: "1.0.0",
        kind: "extension",
        api: "^1",
        provides: [],
      },
      setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
    }) as Plugin,
    "swap",
    /no plugin named 'stranger' is loaded/,
  );
  assert.deepEqual(
    await (await t.request("/plugins/greeter/version")).json(),
    { version: "1.0.0" },
  );
});

Deno.test("swap: a new copy that finishes starting after the kernel stopped is stopped again, not swapped in", async () => {
  const events: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  const slow = definePlugin({
    manifest: {
      name: "greeter",
      version: "2.0.0",
      kind: "extension",
      api: "^1",
      provides: ["extension:greeter"],
    },
    async setup() {
      await gate;
      return {
        stop: () => {
          events.push("stop 2.0.0");
          return Promise.resolve();
        },
      };
    },
  }) as Plugin;
  const t = await createTestKernel([greeter("1.0.0", [], { events })]);
  const swapping = t.kernel.replace(slow);
  await t.close();
  release();
  await assert.rejects(swapping, /not replaced: the node is stopping/);
  assert.deepEqual(events, ["stop 1.0.0", "stop 2.0.0"]);
});
