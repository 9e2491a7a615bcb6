/**
 * `deno task demo:debate` as the README shows it: one command starts a node
 * on embedded defaults, three demo agents and a debate, and prints the turns
 * live until consensus.
 *
 * @module
 */
import assert from "node:assert/strict";
import { RUN } from "./_node.ts";

Deno.test("debates demo: deno task demo:debate prints every turn live and reaches consensus in round 2", async () => {
  const config = JSON.parse(
    await Deno.readTextFile(new URL("../../deno.json", import.meta.url)),
  );
  const command: string = config.tasks["demo:debate"].command;
  // The task's own flags, so a missing permission fails here too.
  const flags = command.split(" ").filter((a) => a.startsWith("--allow-"));
  assert.ok(command.endsWith("plugins/debates/agents/run.ts"), command);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags, RUN, "--rounds", "3"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `${stdout}\n${stderr}`);
  const lines = stdout.trim().split("\n");
  assert.match(lines[0], /^node: http:\/\/127\.0\.0\.1:\d+ \(embedded/);
  assert.match(
    lines[1],
    /^debate [0-9a-f-]{36}: ".+" \(for, against, follow-majority; 3 rounds, majority\)$/,
  );
  const turns = lines.filter((l) => /^round \d {2}(?!tally)/.test(l));
  assert.equal(turns.length, 6, stdout);
  assert.ok(
    lines.includes(
      "round 1  tally: 1 against, 1 for | moderator: Round 1: 1 against, 1 for, 1 undecided. → no consensus yet",
    ),
    stdout,
  );
  assert.ok(
    lines.some((l) =>
      /^round 2 {2}follow-majority against {3}\(0\.6\)/.test(l)
    ),
    stdout,
  );
  assert.deepEqual(lines.slice(-3, -1), [
    "consensus: against in round 2 (67% of participants)",
    "finished: consensus after 2 round(s)",
  ]);
  assert.match(
    lines.at(-1)!,
    /^full record: GET http:\/\/.+\/api\/v1\/debates\//,
  );
});
