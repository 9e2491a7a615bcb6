import assert from "node:assert/strict";
import { tallyRound, type TallyTurn } from "./tally.ts";

const said = (position: string, confidence = 1): TallyTurn => ({
  status: "answered",
  position,
  confidence,
});
const silent: TallyTurn = { status: "silent" };

Deno.test("tally: majority needs more than half of all participants, silent ones included", () => {
  assert.equal(
    tallyRound([said("for"), said("for"), said("against")], {
      method: "majority",
    }).reached,
    true,
  );
  // 2 of 4 is not more than half, though both who answered agree.
  const t = tallyRound([said("for"), said("for"), silent, silent], {
    method: "majority",
  });
  assert.deepEqual([t.reached, t.leading, t.share, t.silent], [
    false,
    "for",
    0.5,
    2,
  ]);
});

Deno.test("tally: unanimous fails on one silent or dissenting participant", () => {
  const rule = { method: "unanimous" as const };
  assert.equal(tallyRound([said("for"), said("for")], rule).reached, true);
  assert.equal(tallyRound([said("for"), silent], rule).reached, false);
  assert.equal(
    tallyRound([said("for"), said("against")], rule).reached,
    false,
  );
});

Deno.test("tally: threshold compares the leading share; a tie never reaches consensus", () => {
  const four = [said("for"), said("for"), said("for"), said("against")];
  assert.equal(
    tallyRound(four, { method: "threshold", threshold: 0.75 }).reached,
    true,
  );
  assert.equal(
    tallyRound(four, { method: "threshold", threshold: 0.8 }).reached,
    false,
  );
  const tie = tallyRound([said("for"), said("against")], {
    method: "threshold",
    threshold: 0.5,
  });
  assert.deepEqual([tie.reached, tie.leading], [false, "against"]);
});

Deno.test("tally: undecided and abstain hold no position; confidences are averaged per position", () => {
  const t = tallyRound([
    said("for", 0.9),
    said("for", 0.5),
    said("undecided"),
    said("abstain"),
  ], { method: "majority" });
  assert.deepEqual(t.positions, { for: { count: 2, confidence: 0.7 } });
  assert.deepEqual([t.answered, t.reached], [4, false]);
  assert.equal(
    tallyRound([said("undecided"), said("undecided")], { method: "majority" })
      .reached,
    false,
  );
});
