import assert from "node:assert/strict";
import { join } from "node:path";
import { loadPlugin, resolveSpecifier, scanDropIn } from "./loader.ts";
import { definePlugin, PluginError } from "./plugin.ts";

const noop = definePlugin({
  manifest: {
    name: "noop",
    version: "1.0.0",
    kind: "extension",
    api: "^1",
    provides: ["extension:noop"],
  },
  setup: () => Promise.resolve({ stop: () => Promise.resolve() }),
});
const builtins = { "examples/noop": () => Promise.resolve(noop) };

Deno.test("loader: specifiers resolve to builtins, file URLs or pass-through URLs", () => {
  assert.deepEqual(resolveSpecifier("builtin:examples/noop", { builtins }), {
    builtin: "examples/noop",
  });
  assert.deepEqual(resolveSpecifier("./p.ts", { cwd: "/srv/app" }), {
    url: "file:///srv/app/p.ts",
  });
  assert.deepEqual(resolveSpecifier("../p.ts", { cwd: "/srv/app" }), {
    url: "file:///srv/p.ts",
  });
  assert.deepEqual(resolveSpecifier("/opt/p.ts", { cwd: "/srv/app" }), {
    url: "file:///opt/p.ts",
  });
  for (
    const url of [
      "file:///opt/p.ts",
      "https://example.test/p.ts",
      "npm:plexus-plugin-x@1",
      "jsr:@x/y",
    ]
  ) {
    assert.deepEqual(resolveSpecifier(url), { url });
  }
});

Deno.test("loader: unknown builtins and bare names are refused with a hint", () => {
  assert.throws(
    () => resolveSpecifier("builtin:nope", { builtins }),
    (e: unknown) => {
      assert.ok(e instanceof PluginError);
      assert.equal(e.plugin, "builtin:nope");
      assert.match(
        e.message,
        /unknown built-in plugin 'nope' \(built in: examples\/noop\)/,
      );
      return true;
    },
  );
  assert.throws(
    () => resolveSpecifier("builtin:examples/noop"),
    /unknown built-in plugin 'examples\/noop' \(built in: none\)/,
  );
  assert.throws(
    () => resolveSpecifier("builtin:toString", { builtins }),
    /unknown built-in plugin 'toString'/,
  );
  assert.throws(
    () => resolveSpecifier("hello.ts"),
    /cannot resolve plugin specifier 'hello\.ts': use builtin:NAME/,
  );
});

Deno.test("loader: a missing file and a module without default export are load errors naming the specifier", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      loadPlugin("./missing.ts", { cwd: dir }),
      /cannot load plugin '\.\/missing\.ts': Module not found/,
    );
    await Deno.writeTextFile(
      join(dir, "named.ts"),
      "export const plugin = {};\n",
    );
    await assert.rejects(
      loadPlugin("./named.ts", { cwd: dir }),
      /cannot load plugin '\.\/named\.ts': the module has no default export/,
    );
    await Deno.writeTextFile(
      join(dir, "throws.ts"),
      "throw new Error('top-level boom');\nexport default {};\n",
    );
    await assert.rejects(
      loadPlugin("./throws.ts", { cwd: dir }),
      /cannot load plugin '\.\/throws\.ts': .*top-level boom/,
    );
    const ok = await loadPlugin("builtin:examples/noop", { builtins });
    assert.equal(ok.value, noop);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loader: the drop-in folder yields plugin files and folder mod.ts files in name order", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (
      const f of [
        "b.ts",
        "a.js",
        "c.mjs",
        "skip.md",
        "a_test.ts",
        "_private.ts",
        ".hidden.ts",
      ]
    ) {
      await Deno.writeTextFile(join(dir, f), "");
    }
    await Deno.mkdir(join(dir, "withmod"));
    await Deno.writeTextFile(join(dir, "withmod", "mod.ts"), "");
    await Deno.mkdir(join(dir, "nomod"));
    assert.deepEqual(await scanDropIn(dir), [
      join(dir, "a.js"),
      join(dir, "b.ts"),
      join(dir, "c.mjs"),
      join(dir, "withmod", "mod.ts"),
    ]);
    assert.deepEqual(await scanDropIn(join(dir, "absent")), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loader: the drop-in folder refuses a file, a folder plugin or the folder itself that any user may write", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "ok.ts"), "");
    await Deno.mkdir(join(dir, "folder"));
    await Deno.writeTextFile(join(dir, "folder", "mod.ts"), "");
    assert.equal((await scanDropIn(dir)).length, 2);
    for (const path of [join(dir, "ok.ts"), join(dir, "folder"), dir]) {
      const before = (await Deno.stat(path)).mode! & 0o777;
      await Deno.chmod(path, before | 0o002);
      await assert.rejects(
        scanDropIn(dir),
        new RegExp(
          `refusing drop-in plugin path '${path}': any user may write it .*chmod o-w`,
        ),
      );
      await Deno.chmod(path, before);
    }
    assert.equal((await scanDropIn(dir)).length, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
