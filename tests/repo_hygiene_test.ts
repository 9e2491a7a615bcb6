/**
 * Files the README tells you to create that must never be committed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

const REPO = fileURLToPath(new URL("../", import.meta.url));

async function ignoredByGit(path: string): Promise<boolean> {
  const { code } = await new Deno.Command("git", {
    args: ["check-ignore", "--quiet", "--no-index", path],
    cwd: REPO,
    stdout: "null",
    stderr: "null",
  }).output();
  return code === 0;
}

Deno.test({
  name:
    "repo: agent.json (the README's `keygen > agent.json`, a private key) is ignored by git",
  ignore: !(await Deno.stat(`${REPO}.git`).catch(() => null)),
  fn: async () => {
    assert.ok(await ignoredByGit("agent.json"), "agent.json is not ignored");
    assert.ok(
      await ignoredByGit("examples/agent.json"),
      "agent.json in a sub-folder is not ignored",
    );
  },
});
