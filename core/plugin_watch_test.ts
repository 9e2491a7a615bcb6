import assert from "node:assert/strict";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { watchPlugins } from "./plugin_watch.ts";
import { createLogger, type LogRecord } from "./observe/logger.ts";

/** Waits until `check` holds, polling every 10 ms, at most `ms`. */
async function until(check: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error("timed out waiting");
    await new Promise((r) => setTimeout(r, 10));
  }
}

Deno.test("plugin watch: a burst of writes to a plugin file reloads it once; a folder plugin reloads when any file in its folder changes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-watch-" });
  const file = join(dir, "single.ts");
  await Deno.writeTextFile(file, "export default 1;");
  await Deno.mkdir(join(dir, "folder"));
  await Deno.writeTextFile(join(dir, "folder", "mod.ts"), "export default 2;");
  await Deno.writeTextFile(join(dir, "folder", "util.ts"), "export {};");
  await Deno.writeTextFile(join(dir, "unrelated.txt"), "x");
  const reloads: string[] = [];
  const watch = watchPlugins(
    new Map([
      ["single", pathToFileURL(file).href],
      ["folder", pathToFileURL(join(dir, "folder", "mod.ts")).href],
      ["remote", "https://example.com/p.ts"],
    ]),
    {
      reload: (name) => {
        reloads.push(name);
        return Promise.resolve({ from: "1", to: "2" });
      },
      log: createLogger({ sinks: [] }),
      settleMs: 100,
    },
  );
  try {
    // Let the watcher start before the first write.
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 5; i++) {
      await Deno.writeTextFile(file, `export default ${i};`);
    }
    await until(() => reloads.length >= 1);
    await watch.settled();
    assert.deepEqual(reloads, ["single"]);
    await Deno.writeTextFile(join(dir, "unrelated.txt"), "y");
    await Deno.writeTextFile(
      join(dir, "folder", "util.ts"),
      "export const a = 1;",
    );
    await until(() => reloads.length >= 2);
    await watch.settled();
    assert.deepEqual(reloads, ["single", "folder"]);
  } finally {
    watch.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("plugin watch: a refused reload is logged as an error and the watch goes on", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-watch-" });
  const file = join(dir, "p.ts");
  await Deno.writeTextFile(file, "export default 1;");
  const logs: LogRecord[] = [];
  let calls = 0;
  const watch = watchPlugins(new Map([["p", pathToFileURL(file).href]]), {
    reload: () =>
      ++calls === 1
        ? Promise.reject(new Error("syntax error"))
        : Promise.resolve({ from: "1", to: "2" }),
    log: createLogger({ sinks: [(r) => logs.push(r)] }),
    settleMs: 50,
  });
  try {
    await new Promise((r) => setTimeout(r, 100));
    await Deno.writeTextFile(file, "export default {{");
    await until(() => calls === 1);
    await watch.settled();
    assert.ok(
      logs.some((r) => r.level === "error" && /refused/.test(r.msg)),
      JSON.stringify(logs),
    );
    await Deno.writeTextFile(file, "export default 2;");
    await until(() => calls === 2);
    await watch.settled();
    assert.ok(logs.some((r) => r.level === "info" && /reloaded/.test(r.msg)));
  } finally {
    watch.close();
    await Deno.remove(dir, { recursive: true });
  }
});
