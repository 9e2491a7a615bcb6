/**
 * The prompt service's Prometheus alert rules: `promtool check rules` and
 * `promtool test rules` (each alert fires on the series that should set it
 * off, and not on healthy ones), and every plexus_ metric they name is one
 * a node with the prompt service really exports. promtool comes from
 * Debian's prometheus package (scripts/promtool.sh, run by
 * `deno task services`); without it the promtool cases are ignored, and
 * under PLEXUS_REQUIRE_SERVICES=1 (CI) they fail.
 *
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { promptAgent, startPromptNode } from "./_node.ts";

const DIR = fileURLToPath(
  new URL("../../plugins/prompts/monitoring/", import.meta.url),
);
const required = Deno.env.get("PLEXUS_REQUIRE_SERVICES") === "1";

async function hasPromtool(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("promtool", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}
const present = await hasPromtool();
const skip = present
  ? undefined
  : "promtool is not installed (bash scripts/promtool.sh, or deno task services)";
if (skip && !required) console.log(`ignored: prompt alert rules: ${skip}`);

async function promtool(...args: string[]) {
  const out = await new Deno.Command("promtool", {
    args,
    cwd: DIR,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  return { ok: out.success, text };
}

Deno.test({
  name: "prompt alerts: promtool checks the rules and their unit tests pass",
  ignore: !!skip && !required,
  async fn() {
    assert.ok(present, `${skip} (PLEXUS_REQUIRE_SERVICES=1)`);
    const check = await promtool("check", "rules", "alerts.rules.yml");
    assert.ok(check.ok, check.text);
    assert.match(check.text, /SUCCESS: 5 rules found/);
    const test = await promtool("test", "rules", "alerts_test.yml");
    assert.ok(test.ok, test.text);
  },
});

Deno.test("prompt alerts: every plexus_ metric the rules use is exported by a node with the prompt service", async () => {
  const rules = await Deno.readTextFile(`${DIR}/alerts.rules.yml`);
  const used = new Set(
    [...rules.matchAll(/\b(plexus_[a-z_]+?)(?:_bucket)?\b/g)].map((m) => m[1]),
  );
  assert.ok(used.size >= 4, [...used].join(", "));
  await using node = await startPromptNode({
    dir: await Deno.makeTempDir({ prefix: "plexus-prompts-alerts-" }),
  });
  const key = await node.enrolled();
  await using _root = await promptAgent(node, key, "prompt", () => "ok");
  const r = await node.prompt({ prompt: "hi", scenario: "hotel" });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  const text = await (await fetch(`${node.url}/metrics`)).text();
  for (const name of used) {
    assert.match(text, new RegExp(`^# TYPE ${name} `, "m"), name);
  }
  // The latency quantiles per scenario are on /metrics as well.
  for (const q of ["0.5", "0.95", "0.99"]) {
    assert.match(
      text,
      new RegExp(
        `^plexus_prompts_latency_seconds\\{quantile="${q}",scenario="hotel"\\} \\d`,
        "m",
      ),
    );
  }
});
