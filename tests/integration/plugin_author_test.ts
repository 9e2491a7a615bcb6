/**
 * The README's plugin guide, followed from an empty folder outside the
 * repository: the guide's `deno.json`, plugin and test files are read from
 * the README's code blocks at test time (so the guide cannot drift from what
 * works), written next to a `plexus` link to this repository, and the guide's
 * `deno test` and `deno run … main.ts --plugin` commands are run there with a
 * fresh HOME. The repository's `deno.lock` must come out unchanged.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PlexusProcess, REPO, START_TIMEOUT_MS } from "./_process.ts";

/** The folder the guide tells the author to create, beside the clone. */
const AUTHOR_DIR = "audit-sink";
/** Where the guide is. */
const GUIDE_HEADING = "## Writing a plugin";
/** The clone, as the guide's `links` names it. */
const CLONE_DIR = "plexus";

/** A fenced code block: its info string and its lines. */
interface Block {
  info: string;
  lines: string[];
}

function codeBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  let open: Block | undefined;
  for (const line of markdown.split("\n")) {
    if (open === undefined) {
      const m = /^```(.*)$/.exec(line);
      if (m) open = { info: m[1].trim(), lines: [] };
    } else if (line === "```") {
      blocks.push(open);
      open = undefined;
    } else {
      open.lines.push(line);
    }
  }
  return blocks;
}

/** The README's "Writing a plugin" section, up to the next `## ` heading. */
function guideSection(readme: string): string {
  const start = readme.indexOf(`\n${GUIDE_HEADING}\n`);
  assert.ok(start >= 0, `README: no '${GUIDE_HEADING}' section`);
  const end = readme.indexOf("\n## ", start + 1);
  return readme.slice(start, end < 0 ? undefined : end);
}

/** The block whose first line is `// NAME`, as the guide labels its files. */
function fileBlock(blocks: Block[], name: string): string {
  const found = blocks.filter((b) => b.lines[0] === `// ${name}`);
  assert.equal(
    found.length,
    1,
    `README: expected one code block starting with '// ${name}', found ${found.length}`,
  );
  return found[0].lines.join("\n") + "\n";
}

/** The shell command in the guide's `sh` blocks that starts with `prefix`. */
function command(blocks: Block[], prefix: string): string[] {
  const lines = blocks.filter((b) => b.info === "sh").flatMap((b) => b.lines)
    .map((l) => l.replace(/\s#.*$/, "").trim())
    .filter((l) => l === prefix || l.startsWith(`${prefix} `));
  assert.equal(
    lines.length,
    1,
    `README: expected one '${prefix}' command, found ${lines.length}`,
  );
  return lines[0].split(/\s+/);
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    await Deno.readFile(path),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** The Deno cache in use, so the child reuses it while HOME is empty. */
async function denoDir(): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout)).denoDir;
}

/** The parent's environment without PLEXUS_* and with HOME set to `home`. */
async function authorEnv(home: string): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("PLEXUS_")) env[k] = v;
  }
  return {
    ...env,
    HOME: home,
    DENO_DIR: await denoDir(),
    NO_COLOR: "1",
    DENO_NO_UPDATE_CHECK: "1",
  };
}

Deno.test("plugin guide: from an empty folder beside the clone, the guide's plugin passes its test and starts on a node, and the repo's deno.lock stays as it was", async () => {
  const blocks = codeBlocks(
    guideSection(await Deno.readTextFile(join(REPO, "README.md"))),
  );
  const files = ["deno.json", "audit_sink.ts", "audit_sink_test.ts"];
  const testCmd = command(blocks, "deno test");
  const runCmd = command(blocks, "deno run");
  assert.ok(
    runCmd.includes("--plugin"),
    `README's run command has no --plugin: ${runCmd.join(" ")}`,
  );
  const lockBefore = await sha256(join(REPO, "deno.lock"));

  const root = await Deno.makeTempDir({ prefix: "plexus-author-" });
  const dir = join(root, AUTHOR_DIR);
  const home = join(root, "home");
  let node: PlexusProcess | undefined;
  try {
    await Deno.mkdir(dir);
    await Deno.mkdir(home);
    await Deno.symlink(REPO, join(root, CLONE_DIR));
    for (const name of files) {
      await Deno.writeTextFile(join(dir, name), fileBlock(blocks, name));
    }
    const env = await authorEnv(home);

    // A hung child is killed rather than hanging the suite.
    const killer = new AbortController();
    const timer = setTimeout(() => killer.abort(), START_TIMEOUT_MS);
    const test = await new Deno.Command(testCmd[0], {
      args: testCmd.slice(1),
      cwd: dir,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: killer.signal,
    }).output().finally(() => clearTimeout(timer));
    const testOut = new TextDecoder().decode(test.stdout) +
      new TextDecoder().decode(test.stderr);
    assert.equal(test.code, 0, `'${testCmd.join(" ")}' failed:\n${testOut}`);
    assert.match(testOut, /ok \| 2 passed \| 0 failed/);

    // The guide's command on a free port; the node's files go to ./data.
    const child = new Deno.Command(runCmd[0], {
      args: [...runCmd.slice(1), "--port", "0"],
      cwd: dir,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    node = new PlexusProcess(child, dir);
    const listening = await node.waitForLog(
      (r) => typeof r.url === "string" && r.msg.startsWith("plexus listening"),
      "the 'plexus listening' log line",
      START_TIMEOUT_MS,
    );
    node.url = listening.url as string;
    assert.ok(node.logged("plugin audit-sink running"), node.lines.join("\n"));
    const health = await (await node.fetch("/health")).json();
    assert.equal(health.status, "healthy", JSON.stringify(health));
    assert.equal(
      health.services["audit-sink"]?.status,
      "up",
      JSON.stringify(health),
    );
    const last = await node.fetch("/plugins/audit-sink/last");
    assert.equal(last.status, 200);
    assert.equal(await last.json(), null);
    node.signal("SIGTERM");
    const status = await node.exit();
    assert.equal(status.code, 0, node.stderr);

    // The author's folder has its own lockfile; the clone's is untouched.
    await Deno.stat(join(dir, "deno.lock"));
    assert.equal(
      await sha256(join(REPO, "deno.lock")),
      lockBefore,
      "the repository's deno.lock changed",
    );
  } finally {
    await node?.close();
    // The link first, so nothing below can ever reach into the repository.
    await Deno.remove(join(root, CLONE_DIR)).catch(() => {});
    await Deno.remove(root, { recursive: true });
  }
});
