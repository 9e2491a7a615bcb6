import assert from "node:assert/strict";
import { z } from "zod";
import { createKernel, resolvePlan } from "./kernel.ts";
import { createLogger, type LogRecord } from "./observe/logger.ts";
import { createMetrics } from "./observe/metrics.ts";
import {
  MAX_HEALTH_ENTRIES,
  type Plugin,
  PluginError,
  type Running,
} from "./plugin.ts";
import { createRouter } from "./router.ts";

/** A plugin that records its setup and stop in `events`. */
function fake(
  name: string,
  events: string[],
  opts: {
    provides?: string[];
    requires?: string[];
    version?: string;
    api?: string;
    setup?: () => Promise<Running | undefined>;
    startTimeoutMs?: number;
    config?: z.ZodType;
  } = {},
): Plugin {
  return {
    manifest: {
      name,
      version: opts.version ?? "1.0.0",
      kind: "extension",
      api: opts.api ?? "^1",
      provides: opts.provides ?? [`extension:${name}`],
      requires: opts.requires,
      startTimeoutMs: opts.startTimeoutMs,
      config: opts.config,
    },
    setup: async () => {
      events.push(`setup ${name}`);
      if (opts.setup) {
        const r = await opts.setup();
        if (r) return r;
      }
      return {
        stop: () => {
          events.push(`stop ${name}`);
          return Promise.resolve();
        },
        api: { name },
      };
    },
  } as Plugin;
}

async function kernelWith(pluginConfig?: Record<string, unknown>) {
  const logs: LogRecord[] = [];
  const kv = await Deno.openKv(":memory:");
  const kernel = createKernel({
    log: createLogger({ sinks: [(r) => logs.push(r)] }),
    metrics: createMetrics(),
    kv,
    router: createRouter(),
    node: { id: "n1", version: "0.0.0", address: "http://x", dataDir: "." },
    pluginConfig,
    stopTimeoutMs: 500,
  });
  return { kernel, kv, logs, [Symbol.dispose]: () => kv.close() };
}

function resolveError(plugins: Plugin[]): PluginError {
  try {
    resolvePlan(plugins);
  } catch (err) {
    assert.ok(err instanceof PluginError);
    assert.equal(err.phase, "resolve");
    return err;
  }
  assert.fail("resolvePlan did not throw");
}

Deno.test("resolve: providers start before the plugins that require them", () => {
  const e: string[] = [];
  const plan = resolvePlan([
    fake("api", e, { requires: ["consensus:*", "transport:ws"] }),
    fake("raft", e, {
      provides: ["consensus:raft"],
      requires: ["transport:ws"],
    }),
    fake("ws", e, { provides: ["transport:ws"], requires: ["state:kv"] }),
  ]);
  assert.deepEqual(plan.order, ["ws", "raft", "api"]);
  assert.deepEqual(plan.dependsOn.get("api"), ["raft", "ws"]);
});

Deno.test("resolve: a missing capability names the plugin and the capability", () => {
  const err = resolveError([
    fake("api", [], { requires: ["transport:kafka"] }),
  ]);
  assert.match(
    err.message,
    /plugin 'api' requires 'transport:kafka', which no loaded plugin provides/,
  );
  assert.equal(err.plugin, "api");
});

Deno.test("resolve: a cycle is reported as the path that closes it", () => {
  const e: string[] = [];
  const err = resolveError([
    fake("a", e, { requires: ["extension:b"] }),
    fake("b", e, { requires: ["extension:c"] }),
    fake("c", e, { requires: ["extension:a"] }),
  ]);
  assert.match(err.message, /dependency cycle: a -> b -> c -> a/);
});

Deno.test("resolve: a capability provided twice names both providers", () => {
  const e: string[] = [];
  const err = resolveError([
    fake("redis", e, { provides: ["transport:queue"] }),
    fake("kafka", e, { provides: ["transport:queue"] }),
  ]);
  assert.match(
    err.message,
    /capability 'transport:queue' is provided by both 'redis' and 'kafka'/,
  );
});

Deno.test("resolve: a plugin may not claim a kernel capability", () => {
  const err = resolveError([fake("fakekv", [], { provides: ["state:kv"] })]);
  assert.match(
    err.message,
    /'state:kv' is provided by both 'the kernel' and 'fakekv'/,
  );
});

Deno.test("resolve: a version mismatch names requirer, provider and version", () => {
  const e: string[] = [];
  const err = resolveError([
    fake("api", e, { requires: ["transport:redis@^2"] }),
    fake("redis", e, { provides: ["transport:redis"], version: "1.4.0" }),
  ]);
  assert.match(
    err.message,
    /plugin 'api' requires 'transport:redis@\^2' but only 'redis' 1\.4\.0 provide it/,
  );
  assert.doesNotThrow(() =>
    resolvePlan([
      fake("api", e, { requires: ["transport:redis@^1.2"] }),
      fake("redis", e, { provides: ["transport:redis"], version: "1.4.0" }),
    ])
  );
  assert.match(
    resolveError([fake("x", e, { requires: ["state:kv@^2"] })]).message,
    /kernel provides version 1\.0\.0/,
  );
});

Deno.test("kernel: an unsupported API range is refused at register", async () => {
  using k = await kernelWith();
  assert.throws(
    () => k.kernel.register(fake("old", [], { api: "^2" }), "./old.ts"),
    /plugin 'old' needs kernel API '\^2' but this kernel offers 1\.0\.0/,
  );
});

Deno.test("kernel: the same plugin name twice names both origins", async () => {
  using k = await kernelWith();
  k.kernel.register(fake("dup", []), "./a.ts");
  assert.throws(
    () => k.kernel.register(fake("dup", []), "./b.ts"),
    /plugin name 'dup' is used twice: by \.\/a\.ts and by \.\/b\.ts/,
  );
});

Deno.test("kernel: starts in dependency order and stops in reverse", async () => {
  using k = await kernelWith();
  const e: string[] = [];
  k.kernel.register(fake("api", e, { requires: ["transport:ws"] }));
  k.kernel.register(fake("ws", e, { provides: ["transport:ws"] }));
  k.kernel.register(fake("solo", e));
  await k.kernel.start();
  assert.deepEqual(e, ["setup ws", "setup api", "setup solo"]);
  assert.deepEqual(k.kernel.get("transport:ws"), { name: "ws" });
  assert.ok(k.kernel.has("transport:*"));
  assert.ok(k.kernel.list().every((p) => p.status === "running"));
  e.length = 0;
  assert.deepEqual(await k.kernel.stop(), []);
  assert.deepEqual(e, ["stop solo", "stop api", "stop ws"]);
  assert.ok(k.kernel.list().every((p) => p.status === "stopped"));
  assert.throws(
    () => k.kernel.get("transport:ws"),
    /No running plugin provides 'transport:ws'/,
  );
});

Deno.test("kernel: a setup that throws stops every started plugin and names the culprit", async () => {
  using k = await kernelWith();
  const e: string[] = [];
  k.kernel.register(fake("first", e));
  k.kernel.register(fake("second", e));
  k.kernel.register(
    fake("broken", e, {
      setup: () => Promise.reject(new Error("port 6379 refused")),
    }),
  );
  k.kernel.register(fake("never", e, { requires: ["extension:broken"] }));
  await assert.rejects(k.kernel.start(), (err: unknown) => {
    assert.ok(err instanceof PluginError);
    assert.equal(err.plugin, "broken");
    assert.equal(err.phase, "setup");
    assert.match(
      err.message,
      /plugin 'broken' failed to start: port 6379 refused/,
    );
    return true;
  });
  assert.deepEqual(e, [
    "setup first",
    "setup second",
    "setup broken",
    "stop second",
    "stop first",
  ]);
  const states = Object.fromEntries(
    k.kernel.list().map((p) => [p.name, p.status]),
  );
  assert.deepEqual(states, {
    first: "stopped",
    second: "stopped",
    broken: "failed",
    never: "registered",
  });
});

Deno.test("kernel: a setup past its deadline fails the boot and is stopped when it finishes late", async () => {
  using k = await kernelWith();
  const e: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  k.kernel.register(fake("slow", e, {
    startTimeoutMs: 50,
    setup: async () => {
      await gate;
      return { stop: () => Promise.resolve(void e.push("late stop slow")) };
    },
  }));
  await assert.rejects(
    k.kernel.start(),
    /plugin 'slow' failed to start: setup of plugin 'slow' did not finish within 50 ms/,
  );
  release();
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(e, ["setup slow", "late stop slow"]);
});

Deno.test("kernel: a setup that returns no stop() fails the boot", async () => {
  using k = await kernelWith();
  k.kernel.register(
    fake("bad", [], { setup: () => Promise.resolve({} as Running) }),
  );
  await assert.rejects(
    k.kernel.start(),
    /plugin 'bad' failed to start: setup returned a value without stop\(\)/,
  );
});

Deno.test("kernel: config is validated for every plugin before any starts", async () => {
  using k = await kernelWith({ strict: { port: "x" } });
  const e: string[] = [];
  k.kernel.register(fake("early", e));
  k.kernel.register(
    fake("strict", e, { config: z.object({ port: z.number() }) }),
  );
  await assert.rejects(k.kernel.start(), (err: unknown) => {
    assert.ok(err instanceof PluginError);
    assert.equal(err.phase, "config");
    assert.match(
      err.message,
      /plugin 'strict' has invalid config: port: .*got "x"/,
    );
    return true;
  });
  assert.deepEqual(e, []);
});

Deno.test("kernel: the plugin receives parsed config with defaults applied", async () => {
  using k = await kernelWith({});
  let seen: unknown;
  const p = fake("cfg", [], {
    config: z.object({ port: z.number().default(7) }),
  });
  const setup = p.setup;
  p.setup = (ctx) => {
    seen = ctx.config;
    return setup(ctx);
  };
  k.kernel.register(p);
  await k.kernel.start();
  assert.deepEqual(seen, { port: 7 });
  await k.kernel.stop();
});

Deno.test("kernel: a failing stop is reported and the others still stop", async () => {
  using k = await kernelWith();
  const e: string[] = [];
  k.kernel.register(fake("a", e));
  k.kernel.register(fake("b", e, {
    setup: () =>
      Promise.resolve({ stop: () => Promise.reject(new Error("stuck")) }),
  }));
  await k.kernel.start();
  const failures = await k.kernel.stop();
  assert.equal(failures.length, 1);
  assert.match(failures[0].message, /plugin 'b' failed to stop: stuck/);
  assert.deepEqual(e, ["setup a", "setup b", "stop a"]);
});

Deno.test("kernel: health rolls up up, down, thrown and missing checks", async () => {
  using k = await kernelWith();
  k.kernel.register(fake("plain", []));
  k.kernel.register(fake("sick", [], {
    setup: () =>
      Promise.resolve({
        stop: () => Promise.resolve(),
        health: () => Promise.resolve({ status: "down", detail: "no broker" }),
      }),
  }));
  k.kernel.register(fake("throws", [], {
    setup: () =>
      Promise.resolve({
        stop: () => Promise.resolve(),
        health: () => Promise.reject(new Error("boom")),
      }),
  }));
  await k.kernel.start();
  const h = await k.kernel.health();
  assert.equal(h.plain.status, "up");
  assert.equal(h.sick.status, "down");
  assert.equal(h.sick.detail, "no broker");
  assert.equal(h.throws.status, "down");
  assert.equal(h.throws.detail, "boom");
  await k.kernel.stop();
  assert.equal((await k.kernel.health()).plain.status, "down");
});

Deno.test("kernel: a plugin adds its own health entries, a set that changes between checks, checked and bounded", async () => {
  using k = await kernelWith();
  let entries: Record<string, unknown> = {
    "root/a1": { status: "up", latency: 2.5 },
    "root/a2": { status: "down", detail: "no answer" },
  };
  k.kernel.register(fake("multi", [], {
    setup: () =>
      Promise.resolve({
        stop: () => Promise.resolve(),
        health: () =>
          Promise.resolve({ status: "up" as const, entries } as never),
      }),
  }));
  await k.kernel.start();
  const h = await k.kernel.health();
  assert.equal(h.multi.status, "up");
  assert.deepEqual(h["multi/root/a1"], {
    name: "multi/root/a1",
    status: "up",
    latency: 2.5,
  });
  assert.deepEqual(h["multi/root/a2"], {
    name: "multi/root/a2",
    status: "down",
    detail: "no answer",
  });
  // The next check lists what the plugin reports then, and only what is valid.
  entries = {
    "root/a3": { status: "up", latency: Infinity },
    "": { status: "up" },
    "bad\nkey": { status: "up" },
    "root/a4": { status: "sideways" },
    ...Object.fromEntries(
      Array.from({ length: 70 }, (_, i) => [`n${i}`, { status: "up" }]),
    ),
  };
  const again = await k.kernel.health();
  assert.equal(again["multi/root/a1"], undefined);
  assert.deepEqual(again["multi/root/a3"], {
    name: "multi/root/a3",
    status: "up",
  });
  const listed = Object.keys(again).filter((n) => n.startsWith("multi/"));
  assert.equal(listed.length, MAX_HEALTH_ENTRIES);
  assert.equal(again.multi.detail, "10 health entries left out");
  await k.kernel.stop();
});

Deno.test("kernel: each plugin's signal aborts when it is stopped and its kv is scoped", async () => {
  using k = await kernelWith();
  let signal: AbortSignal | undefined;
  const p = fake("sig", []);
  p.setup = async (ctx) => {
    signal = ctx.signal;
    await ctx.kv.set(["x"], 1);
    return { stop: () => Promise.resolve() };
  };
  k.kernel.register(p);
  await k.kernel.start();
  assert.equal(signal?.aborted, false);
  assert.equal((await k.kv.get(["plugins", "sig", "x"])).value, 1);
  await k.kernel.stop();
  assert.equal(signal?.aborted, true);
});
