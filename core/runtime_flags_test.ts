import assert from "node:assert/strict";
import { NODE_V8_FLAGS, V8_FLAGS_ARG } from "./runtime_flags.ts";

const repo = new URL("../", import.meta.url);
const text = (path: string) => Deno.readTextFileSync(new URL(path, repo));

Deno.test("runtime flags: deno task start, the compiled binary, the container image and the bundle's documented command pass them", () => {
  const tasks = JSON.parse(text("deno.json")).tasks;
  for (const name of ["start", "compile"]) {
    assert.ok(
      tasks[name].command.split(" ").includes(V8_FLAGS_ARG),
      `deno task ${name}: ${tasks[name].command}`,
    );
  }
  const entrypoint = text("Dockerfile").split("\n").find((l) =>
    l.startsWith("ENTRYPOINT ")
  );
  assert.ok(entrypoint?.includes(`"${V8_FLAGS_ARG}"`), entrypoint);
  const bundle = text("README.md").split("\n").find((l) =>
    l.includes("dist/plexus.js --plugin")
  );
  assert.ok(bundle?.split(" ").includes(V8_FLAGS_ARG), bundle);
});

Deno.test("runtime flags: a process started with them has a young generation of at most 2 × 4 MiB", async () => {
  // Allocates enough short- and medium-lived objects that V8 grows the young
  // generation to its limit, then reports the new space's size.
  const probe = `import v8 from "node:v8";
const keep = [];
for (let i = 0; i < 2e6; i++) {
  const o = { i, s: "x" + i };
  if (i % 3 === 0) keep.push(o);
  if (keep.length > 50000) keep.length = 0;
}
const s = v8.getHeapSpaceStatistics().find((x) => x.space_name === "new_space");
console.log(s.space_size);`;
  const size = async (flags: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", ...flags, probe],
      stdout: "piped",
      stderr: "inherit",
      // Not an operator's DENO_V8_FLAGS: only the flags given here.
      clearEnv: true,
      env: Object.fromEntries(
        ["HOME", "PATH", "DENO_DIR"].flatMap((k) => {
          const v = Deno.env.get(k);
          return v === undefined ? [] : [[k, v]];
        }),
      ),
    }).output();
    assert.ok(out.success);
    return Number(new TextDecoder().decode(out.stdout).trim());
  };
  assert.deepEqual(NODE_V8_FLAGS, ["--max-semi-space-size=4"]);
  const flagged = await size([V8_FLAGS_ARG]);
  assert.ok(flagged > 0 && flagged <= 8 * 2 ** 20, `new space ${flagged}`);
  // Without them V8 lets it grow further: the flag is what bounds it.
  assert.ok(await size([]) > 8 * 2 ** 20, "the default grows past 8 MiB");
});
