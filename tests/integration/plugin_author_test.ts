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
import {
  authorEnv,
  authorFolder,
  codeBlocks,
  command,
  fileBlock,
  section,
  sha256,
} from "./_guide.ts";

/** The folder the guide tells the author to create, beside the clone. */
const AUTHOR_DIR = "audit-sink";
/** Where the guide is. */
const GUIDE_HEADING = "## Writing a plugin";

Deno.test("plugin guide: from an empty folder beside the clone, the guide's plugin passes its test and starts on a node, and the repo's deno.lock stays as it was", async () => {
  const blocks = codeBlocks(
    section(
      await Deno.readTextFile(join(REPO, "README.md")),
      GUIDE_HEADING,
      "README",
    ),
  );
  const files = ["deno.json", "audit_sink.ts", "audit_sink_test.ts"];
  const testCmd = command(blocks, "deno test", "README");
  const runCmd = command(blocks, "deno run", "README");
  assert.ok(
    runCmd.includes("--plugin"),
    `README's run command has no --plugin: ${runCmd.join(" ")}`,
  );
  const lockBefore = await sha256(join(REPO, "deno.lock"));

  await using folder = await authorFolder(
    AUTHOR_DIR,
    Object.fromEntries(
      files.map((name) => [name, fileBlock(blocks, name, "README")]),
    ),
  );
  const { dir, home } = folder;
  let node: PlexusProcess | undefined;
  try {
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
  }
});
