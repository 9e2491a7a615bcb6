/**
 * `deno task demo:debate` as the README shows it: one command starts a node
 * on embedded defaults, three demo agents and a debate, and prints the turns
 * live until consensus.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { RUN, startDebateNode } from "./_node.ts";

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
    "finished: consensus after 2 rounds",
  ]);
  assert.match(
    lines.at(-1)!,
    /^full record: GET http:\/\/.+\/api\/v1\/debates\//,
  );
});

Deno.test("debates demo: --url uses a running node, signing its token with the node key in --data-dir", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-debates-demo-" });
  await using node = await startDebateNode(dir);
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      RUN,
      "--url",
      node.url,
      "--data-dir",
      join(dir, "a"),
      "--topic",
      "Tabs or spaces?",
      "--rounds",
      "1",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  assert.equal(
    out.code,
    0,
    `${stdout}\n${new TextDecoder().decode(out.stderr)}`,
  );
  assert.doesNotMatch(stdout, /embedded/);
  assert.match(
    stdout,
    /: "Tabs or spaces\?" \(for, against, follow-majority; 1 round, majority\)/,
  );
  assert.match(stdout, /^finished: no-consensus after 1 round$/m);
  const list = await (await node.api("/api/v1/debates?status=no-consensus"))
    .json();
  assert.equal(list.debates.length, 1);
  assert.equal(list.debates[0].by, "demo-debate");
});

Deno.test("debates demo: a bad flag is a usage error (exit 2) naming the flag", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-read", RUN, "--bogus"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 2);
  assert.match(
    new TextDecoder().decode(out.stderr),
    /Unknown option '--bogus'/,
  );
});
