/**
 * `deno task demo` against a real node: the script enrols the three demo
 * agents with a token signed by the node's key, runs them, and the README's
 * prompt is answered through all three; SIGINT stops it cleanly.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { startPromptNode } from "./_node.ts";

const DEMO = fileURLToPath(
  new URL("../../plugins/prompts/demo/run.ts", import.meta.url),
);

Deno.test("prompts demo: the demo script enrols and runs root, planning and ordering; the quickstart prompt goes through all three", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-prompts-demo-" });
  await using node = await startPromptNode({ dir, name: "a" });
  // The task's flags, with the node's data dir for ./data.
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      `--allow-write=${dir}`,
      "--allow-env",
      DEMO,
      "--url",
      node.url,
      "--data-dir",
      join(dir, "a"),
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  const ready = Promise.withResolvers<void>();
  const reading = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      stderr += decoder.decode(chunk);
      if (stderr.includes("demo: ready")) ready.resolve();
    }
    ready.reject(new Error(`the demo ended before it was ready:\n${stderr}`));
  })();
  try {
    await ready.promise;
    assert.match(stderr, /root agent did:key:\S+ serves 'prompt'/);
    const r = await node.prompt(
      { prompt: "A room in Lisbon", metadata: { userId: "u1" } },
      { "X-Scenario": "hotel" },
    );
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(String(r.body.response), /^Hotel request handled\. Plan for/);
    const v = r.body.sageVerification as { chain: { capability: string }[] };
    assert.deepEqual(v.chain.map((l) => l.capability), [
      "prompt",
      "plan",
      "order",
    ]);
    // The keys are kept for the next run.
    const kept = [...Deno.readDirSync(join(dir, "a", "demo"))].map((e) =>
      e.name
    )
      .sort();
    assert.deepEqual(kept, ["ordering.json", "planning.json", "root.json"]);
    child.kill("SIGINT");
    assert.equal((await child.status).code, 0, stderr);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await child.status;
    await reading.catch(() => {});
  }
});
