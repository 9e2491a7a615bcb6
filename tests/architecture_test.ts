/**
 * The layering rules of docs (DESIGN: "the kernel knows contracts, never
 * implementations"), checked on the real module graph from
 * `deno info --json`: core imports no plugin, and no plugin imports another
 * plugin's private (`_`) files. Edges that still break the rule are listed
 * in KNOWN with the issue that removes them; a listed edge that is gone
 * fails too, so the list only shrinks.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { relative } from "node:path";

const REPO = fileURLToPath(new URL("../", import.meta.url));
const PLUGIN_TREES = [
  "transports/",
  "consensus/",
  "plugins/",
  "gateway/",
  "sdk/",
];

/**
 * core → plugin edges allowed (none since issue 15 made the gateway a
 * plugin; a new one must be argued for here).
 */
const KNOWN = new Set<string>([]);

interface Info {
  modules: {
    specifier: string;
    dependencies?: {
      type?: { specifier: string };
      code?: { specifier: string };
    }[];
  }[];
}

const isTest = (p: string) => /_test\.ts$/.test(p);

/** Every non-test module of the kernel and the plugins, as one graph. */
async function graph(): Promise<Map<string, Set<string>>> {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(`${REPO}${dir}`)) {
      const path = `${dir}/${e.name}`;
      if (e.isDirectory && e.name !== "testdata") walk(path);
      else if (e.isFile && /\.ts$/.test(e.name) && !isTest(e.name)) {
        files.push(path);
      }
    }
  };
  for (
    const dir of [
      "core",
      "testing",
      ...PLUGIN_TREES.map((t) => t.slice(0, -1)),
    ]
  ) {
    try {
      walk(dir);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
  }
  const tmp = await Deno.makeTempDir({ prefix: "plexus-arch-" });
  const root = `${tmp}/root.ts`;
  await Deno.writeTextFile(
    root,
    files.map((f) => `import "${new URL(f, `file://${REPO}`).href}";`).join(
      "\n",
    ),
  );
  const edges = new Map<string, Set<string>>();
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--config", `${REPO}deno.json`, root],
      cwd: REPO,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as Info;
    for (const m of info.modules) {
      if (!m.specifier.startsWith(`file://${REPO}`)) continue;
      const from = relative(REPO, fileURLToPath(m.specifier));
      const set = edges.get(from) ?? new Set<string>();
      for (const dep of m.dependencies ?? []) {
        const to = dep.code?.specifier ?? dep.type?.specifier;
        if (to?.startsWith("file://")) {
          set.add(relative(REPO, fileURLToPath(to)));
        }
      }
      edges.set(from, set);
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
  // The graph really is the whole tree.
  assert.ok(
    edges.size > 100 && edges.has("core/node.ts"),
    `${edges.size} modules`,
  );
  return edges;
}

Deno.test("architecture: core imports no plugin, the gateway and the SDK included", async () => {
  const edges = await graph();
  const found = new Set<string>();
  for (const [from, tos] of edges) {
    if (!from.startsWith("core/") || isTest(from)) continue;
    for (const to of tos) {
      if (PLUGIN_TREES.some((t) => to.startsWith(t))) {
        found.add(`${from} -> ${to}`);
      }
    }
  }
  const added = [...found].filter((e) => !KNOWN.has(e));
  const gone = [...KNOWN].filter((e) => !found.has(e));
  assert.deepEqual(added, [], "new imports from core into plugins");
  assert.deepEqual(
    gone,
    [],
    "listed edges that no longer exist: delete them from KNOWN",
  );
});

Deno.test("architecture: no plugin imports another plugin's private files", async () => {
  const edges = await graph();
  // gateway/ and sdk/ are one plugin (one library) each; the kind trees hold
  // one plugin per folder.
  const folder = (p: string) =>
    p.split("/").slice(0, /^(gateway|sdk)\//.test(p) ? 1 : 2).join("/");
  const bad: string[] = [];
  for (const [from, tos] of edges) {
    if (!PLUGIN_TREES.some((t) => from.startsWith(t))) continue;
    for (const to of tos) {
      const name = to.split("/").at(-1)!;
      if (
        // kind/plugin/_file.ts; a kind-level kind/_file.ts is shared by design.
        name.startsWith("_") &&
        (to.split("/").length >= 3 || /^(gateway|sdk)\//.test(to)) &&
        PLUGIN_TREES.some((t) => to.startsWith(t)) &&
        folder(to) !== folder(from)
      ) bad.push(`${from} -> ${to}`);
    }
  }
  assert.deepEqual(bad, []);
});
