/**
 * Debates on a real node with real agents over the gateway: the SDK's demo
 * debate agents (in this process, or as processes to SIGKILL), the saga
 * engine running the rounds, the events read back over SSE.
 *
 * @module
 */
import assert from "node:assert/strict";
import { AgentClient } from "../../sdk/mod.ts";
import type { SagaService } from "../../plugins/sagas/mod.ts";
import {
  agentProcess,
  debateAgent,
  followDebate,
  startDebateNode,
} from "./_node.ts";

const tempDir = () => Deno.makeTempDir({ prefix: "plexus-debates-" });

Deno.test("debates: three agents over three rounds reach majority in round 2; every turn, tally and the consensus arrive over SSE in order", async () => {
  await using node = await startDebateNode(await tempDir());
  const pro = await debateAgent(node, "for");
  const con = await debateAgent(node, "against");
  const follower = await debateAgent(node, "follow-majority");
  try {
    const r = await node.post({
      topic: "Should the prompt cache be on by default?",
      participants: [pro.id, con.id, follower.id],
      rounds: 3,
      turnTimeoutMs: 10_000,
      consensus: { method: "majority" },
      moderator: follower.id,
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    const events = await followDebate(node, id);

    const d = await node.view(id);
    assert.equal(d.status, "consensus");
    assert.deepEqual(d.result, { position: "against", round: 2, share: 0.667 });
    assert.equal(d.roundsRun, 2);
    // Round 1: for, against, undecided; round 2 the follower joins 'against'.
    const stances = d.turns.map((t) => [t.round, t.agent, t.position]);
    assert.deepEqual(stances, [
      [1, pro.id, "for"],
      [1, con.id, "against"],
      [1, follower.id, "undecided"],
      [2, pro.id, "for"],
      [2, con.id, "against"],
      [2, follower.id, "against"],
    ]);
    assert.ok(
      d.turns.every((t) => t.status === "answered" && t.latencyMs >= 0),
    );
    assert.deepEqual(
      d.roundResults.map((x) => [x.round, x.tally.reached, x.summary]),
      [
        [1, false, "Round 1: 1 against, 1 for, 1 undecided."],
        [2, true, "Round 2: 2 against, 1 for."],
      ],
    );

    // The live view: per round its three turns, then its tally; the end.
    const types = events.map((e) => e.type);
    assert.equal(types[0], "debate.started");
    const rounds = [1, 2].map((round) =>
      events.filter((e) => e.data.round === round).map((e) => e.type)
    );
    for (const r of rounds) {
      assert.deepEqual(
        r.slice(0, 4).sort(),
        [
          "debate.round.completed",
          "debate.turn",
          "debate.turn",
          "debate.turn",
        ].sort(),
      );
      assert.equal(r[3], "debate.round.completed");
    }
    assert.deepEqual(types.slice(-2), ["debate.consensus", "debate.finished"]);
    assert.equal(types.length, 1 + 4 + 4 + 2);
    assert.deepEqual(events.at(-1)!.data, {
      debateId: id,
      status: "consensus",
      roundsRun: 2,
      position: "against",
    });
    const offsets = events.map((e) => e.offset);
    assert.deepEqual([...offsets].sort(), offsets, "SSE in offset order");

    // Listing by status, and the analytics.
    const list = async (q: string) =>
      (await (await node.api(`/api/v1/debates${q}`)).json()).debates.map((
        x: { id: string },
      ) => x.id);
    assert.deepEqual(await list("?status=consensus"), [id]);
    assert.deepEqual(await list("?status=running"), []);
    assert.equal(
      await node.metric("plexus_debates_rounds_to_consensus_sum"),
      2,
    );
    assert.equal(
      await node.metric("plexus_debates_turns_total", { outcome: "answered" }),
      6,
    );
    assert.equal(
      await node.metric("plexus_debates_turn_latency_seconds_count", {
        agent: pro.id,
      }),
      2,
    );
    assert.equal(
      await node.metric("plexus_debates_finished_total", {
        status: "consensus",
      }),
      1,
    );
  } finally {
    await Promise.all([pro, con, follower].map((a) => a.agent.close()));
  }
});

Deno.test("debates: an agent process SIGKILLed in round 2 is recorded silent and the debate goes on to its last round", async () => {
  await using node = await startDebateNode(await tempDir());
  const pro = await agentProcess(node, "for");
  // Slow enough to be killed after it got its round-2 question, before it answers.
  const victim = await agentProcess(node, "against", ["--think-ms", "1500"]);
  const follower = await agentProcess(node, "follow-majority");
  try {
    const r = await node.post({
      topic: "Kill one?",
      participants: [pro.id, victim.id, follower.id],
      rounds: 3,
      turnTimeoutMs: 6000,
      consensus: { method: "majority" },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    const following = followDebate(node, id, 120_000);
    await victim.asked((q) => q.round === 2);
    await victim.kill();
    const events = await following;

    const d = await node.view(id);
    assert.equal(d.status, "no-consensus");
    assert.equal(d.roundsRun, 3);
    const turn = (round: number, agent: string) =>
      d.turns.find((t) => t.round === round && t.agent === agent);
    assert.equal(turn(1, victim.id)?.status, "answered");
    for (const round of [2, 3]) {
      const t = turn(round, victim.id);
      assert.equal(t?.status, "silent", `round ${round}: ${JSON.stringify(t)}`);
      assert.ok(t?.reason, "a silent turn says why");
    }
    for (const a of [pro, follower]) {
      assert.deepEqual(
        [1, 2, 3].map((round) => turn(round, a.id)?.status),
        ["answered", "answered", "answered"],
      );
    }
    // The silent participant counts against consensus: 1 for, 1 against of 3.
    assert.deepEqual(
      d.roundResults.map((x) => [x.round, x.tally.silent, x.tally.reached]),
      [[1, 0, false], [2, 1, false], [3, 1, false]],
    );
    const skipped = events.filter((e) => e.type === "debate.turn.skipped");
    assert.deepEqual(
      skipped.map((e) => [e.data.round, e.data.participant]),
      [[2, victim.id], [3, victim.id]],
    );
    assert.equal(
      await node.metric("plexus_debates_turns_total", { outcome: "silent" }),
      2,
    );
  } finally {
    await Promise.all([pro, victim, follower].map((a) => a.kill()));
  }
});

Deno.test("debates: unanimous not reached is recorded as no consensus after the last round", async () => {
  await using node = await startDebateNode(await tempDir());
  const agents = await Promise.all(
    (["for", "against", "follow-majority"] as const).map((s) =>
      debateAgent(node, s)
    ),
  );
  try {
    const r = await node.post({
      topic: "All of us?",
      participants: agents.map((a) => a.id),
      rounds: 2,
      turnTimeoutMs: 10_000,
      consensus: { method: "unanimous" },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    const events = await followDebate(node, id);
    const d = await node.view(id);
    assert.equal(d.status, "no-consensus");
    assert.equal(d.result, undefined);
    assert.equal(d.roundsRun, 2);
    // Round 2 has a majority (2 against) but not everyone.
    assert.deepEqual(
      d.roundResults.map((x) => [x.tally.leading, x.tally.reached]),
      [["against", false], ["against", false]],
    );
    assert.equal(events.some((e) => e.type === "debate.consensus"), false);
    assert.equal(events.at(-1)?.data.status, "no-consensus");
    const page = await (await node.api("/api/v1/debates?status=no-consensus"))
      .json();
    assert.deepEqual(page.debates.map((x: { id: string }) => x.id), [id]);
  } finally {
    await Promise.all(agents.map((a) => a.agent.close()));
  }
});

Deno.test("debates: bad input is refused with 400 naming the field; a viewer may read but not start one", async () => {
  await using node = await startDebateNode(await tempDir());
  const a = await debateAgent(node, "for");
  const b = await debateAgent(node, "against");
  try {
    const good = {
      topic: "t",
      participants: [a.id, b.id],
      rounds: 3,
      consensus: { method: "majority" },
    };
    const cases: [unknown, string, RegExp][] = [
      [{ ...good, rounds: 0 }, "rounds", /^rounds: at least 1 round, got 0$/],
      [
        { ...good, rounds: 10_000 },
        "rounds",
        /^rounds: at most 50 rounds, got 10000$/,
      ],
      [
        { ...good, participants: [a.id, "nobody"] },
        "participants[1]",
        /^participants\[1\]: unknown participant 'nobody'/,
      ],
      [
        { ...good, topic: "x".repeat(100_000) },
        "topic",
        /^topic: at most 2000 characters, got a string of 100000 characters$/,
      ],
      [
        { ...good, consensus: { method: "threshold", threshold: 0 } },
        "consensus.threshold",
        /^consensus\.threshold: must be over 0, got 0$/,
      ],
      [
        { ...good, moderator: "nobody" },
        "moderator",
        /^moderator: unknown participant 'nobody'/,
      ],
      [
        { ...good, participants: [a.id, b.id, a.id] },
        "participants[2]",
        /^participants\[2\]: agent '\S+' is participants\[0\] already$/,
      ],
      ["{not json", "(body)", /^\(body\): not JSON/],
    ];
    for (const [body, field, message] of cases) {
      const r = await node.post(body);
      assert.equal(r.status, 400, `${field}: ${JSON.stringify(r.body)}`);
      const error = r.body.error as { code: string; message: string };
      assert.equal(error.code, "bad_debate");
      assert.match(error.message, message);
    }
    const listed = await (await node.api("/api/v1/debates")).json();
    assert.deepEqual(listed.debates, [], "nothing refused was stored");
    const bad = await node.api("/api/v1/debates?status=maybe");
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error.message, /^status: expected one of/);
    const viewer = await node.post(good, "viewer");
    assert.equal(viewer.status, 403);
    assert.equal(
      (await node.api("/api/v1/debates", {}, "viewer")).status,
      200,
    );
    assert.equal((await node.api("/api/v1/debates/nope")).status, 404);
    // Only another node (its signature) may ask an agent through this one.
    const asked = await node.api("/api/v1/debates/ask", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        agent: a.id,
        channel: "tasks.debate",
        request: {},
        timeoutMs: 1000,
      }),
    }, "admin");
    assert.equal(asked.status, 403);
    await asked.body?.cancel();
    const anonymous = await fetch(`${node.url}/api/v1/debates`);
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
  } finally {
    await Promise.all([a, b].map((x) => x.agent.close()));
  }
});

Deno.test("debates: an agent that never answers is silent after turnTimeoutMs, a bad answer is silent with the reason; threshold counts the rest", async () => {
  await using node = await startDebateNode(await tempDir());
  const [a, b, mute] = await Promise.all(
    (["for", "for", "silent"] as const).map((s) => debateAgent(node, s)),
  );
  // An agent that answers nonsense.
  const key = await node.enrolled();
  const liar = new AgentClient({
    url: node.url,
    id: key.id,
    privateKey: Uint8Array.fromBase64(key.privateKey, {
      alphabet: "base64url",
    }),
  });
  const connected = liar.connect();
  await liar.handle("tasks.debate", () => ({ position: 42, confidence: 7 }));
  await connected;
  try {
    const r = await node.post({
      topic: "Half is enough?",
      participants: [a.id, b.id, mute.id, key.id],
      rounds: 2,
      turnTimeoutMs: 500,
      consensus: { method: "threshold", threshold: 0.5 },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    await followDebate(node, id);
    const d = await node.view(id);
    assert.equal(d.status, "consensus");
    assert.deepEqual(d.result, { position: "for", round: 1, share: 0.5 });
    const [, , silent, bad] = d.turns;
    assert.equal(silent.status, "silent");
    assert.match(silent.reason!, /timeout/i);
    assert.ok(silent.latencyMs >= 450, `waited ${silent.latencyMs} ms`);
    assert.equal(bad.status, "silent");
    assert.match(bad.reason!, /^bad answer: position must be a word/);
    assert.deepEqual(
      [d.roundResults[0].tally.answered, d.roundResults[0].tally.silent],
      [2, 2],
    );
  } finally {
    await Promise.all([a, b, mute].map((x) => x.agent.close()));
    await liar.close();
  }
});

Deno.test("debates: cancel stops a running debate (its saga too) and says so; a finished one answers 409", async () => {
  await using node = await startDebateNode(await tempDir());
  const agents = await Promise.all(
    (["silent", "silent"] as const).map((s) => debateAgent(node, s)),
  );
  try {
    const r = await node.post({
      topic: "Never ends?",
      participants: agents.map((x) => x.id),
      rounds: 5,
      turnTimeoutMs: 600_000,
      consensus: { method: "majority" },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    const following = followDebate(node, id);
    const cancel = () =>
      node.api(`/api/v1/debates/${id}/cancel`, { method: "POST" });
    const first = await cancel();
    assert.equal(first.status, 200);
    assert.equal((await first.json()).status, "cancelled");
    const events = await following;
    assert.deepEqual(events.at(-1)?.data, {
      debateId: id,
      status: "cancelled",
      roundsRun: 0,
    });
    const again = await cancel();
    assert.equal(again.status, 409);
    assert.match((await again.json()).error.message, /is cancelled already/);
    const d = await node.view(id);
    assert.equal(d.status, "cancelled");
    const list = await (await node.api("/api/v1/debates?status=cancelled"))
      .json();
    assert.deepEqual(list.debates.map((x: { id: string }) => x.id), [id]);
    const sagas = node.handle.kernel.get<SagaService>("extension:sagas");
    assert.notEqual((await sagas.get(`${d.saga}-r1`))?.status, "running");
  } finally {
    await Promise.all(agents.map((x) => x.agent.close()));
  }
});

Deno.test("debates: GET /api/v1/debates pages newest first with a cursor; bad paging parameters are 400", async () => {
  await using node = await startDebateNode(await tempDir());
  const agents = await Promise.all(
    (["for", "for"] as const).map((s) => debateAgent(node, s)),
  );
  try {
    const ids: string[] = [];
    for (const topic of ["one", "two", "three"]) {
      const r = await node.post({
        topic,
        participants: agents.map((x) => x.id),
        rounds: 1,
        consensus: { method: "unanimous" },
      });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      ids.push(String(r.body.id));
      await followDebate(node, ids.at(-1)!);
    }
    const page = async (q: string) => {
      const res = await node.api(`/api/v1/debates${q}`);
      assert.equal(res.status, 200);
      return await res.json() as {
        debates: { id: string; topic: string; status: string }[];
        cursor?: string;
      };
    };
    const first = await page("?limit=2");
    assert.deepEqual(first.debates.map((d) => d.topic), ["three", "two"]);
    assert.ok(first.cursor);
    const second = await page(
      `?limit=2&cursor=${encodeURIComponent(first.cursor)}`,
    );
    assert.deepEqual(second.debates.map((d) => d.topic), ["one"]);
    assert.equal(second.cursor, undefined);
    assert.deepEqual(
      (await page("?status=consensus")).debates.map((d) => d.id),
      [...ids].reverse(),
    );
    for (
      const [q, message] of [
        ["?limit=0", /^limit: expected an integer from 1 to 500, got '0'$/],
        ["?limit=x", /^limit: /],
        ["?cursor=garbage!!", /^cursor: not a cursor from this list/],
      ] as const
    ) {
      const res = await node.api(`/api/v1/debates${q}`);
      assert.equal(res.status, 400, q);
      assert.match((await res.json()).error.message, message);
    }
  } finally {
    await Promise.all(agents.map((x) => x.agent.close()));
  }
});

Deno.test("debates: a debate whose saga ends compensated (cancelled through the sagas API) is marked failed at once, with the reason", async () => {
  await using node = await startDebateNode(await tempDir());
  const agents = await Promise.all(
    (["silent", "silent"] as const).map((s) => debateAgent(node, s)),
  );
  try {
    const r = await node.post({
      topic: "Who stops this?",
      participants: agents.map((x) => x.id),
      rounds: 5,
      turnTimeoutMs: 300,
      consensus: { method: "majority" },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    const following = followDebate(node, id);
    const sagas = node.handle.kernel.get<SagaService>("extension:sagas");
    assert.equal(
      await sagas.cancel(`debate-${id}-r1`, "operator said no"),
      true,
    );
    assert.equal(
      await sagas.finished(`debate-${id}-r1`, 30_000),
      "compensated",
    );
    // No GET of the debate in between: the saga's event moved it.
    const events = await following;
    assert.deepEqual(events.at(-1)?.data, {
      debateId: id,
      status: "failed",
      roundsRun: 0,
    });
    const d = await node.view(id);
    assert.equal(d.status, "failed");
    assert.match(
      d.error!,
      /^saga debate-\S+-r1 ended compensated: cancelled: operator said no$/,
    );
  } finally {
    await Promise.all(agents.map((x) => x.agent.close()));
  }
});

Deno.test("debates: the largest debate is accepted (16 participants, 50 rounds) and a 50-round one runs to its end, one saga per round", async () => {
  await using node = await startDebateNode(await tempDir());
  const agents = await Promise.all(
    (["for", "against", "for"] as const).map((s) => debateAgent(node, s)),
  );
  try {
    const big = await node.post({
      topic: "x".repeat(2000),
      participants: Array(16).fill("debate"),
      rounds: 50,
      turnTimeoutMs: 600_000,
      consensus: { method: "unanimous" },
      moderator: "debate",
    });
    assert.equal(big.status, 201, JSON.stringify(big.body));
    const cancel = await node.api(`/api/v1/debates/${big.body.id}/cancel`, {
      method: "POST",
    });
    assert.equal(cancel.status, 200);
    await cancel.body?.cancel();

    const r = await node.post({
      topic: "Fifty rounds?",
      participants: agents.map((x) => x.id),
      rounds: 50,
      turnTimeoutMs: 10_000,
      consensus: { method: "unanimous" },
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const id = String(r.body.id);
    await followDebate(node, id, 120_000);
    const d = await node.view(id);
    assert.deepEqual([d.status, d.roundsRun, d.turns.length], [
      "no-consensus",
      50,
      150,
    ]);
    const sagas = node.handle.kernel.get<SagaService>("extension:sagas");
    for (const round of [1, 25, 50]) {
      assert.equal(
        (await sagas.get(`${d.saga}-r${round}`))?.status,
        "completed",
        `round ${round}'s saga`,
      );
    }
    assert.equal(await sagas.get(`${d.saga}-r51`), null);
  } finally {
    await Promise.all(agents.map((x) => x.agent.close()));
  }
});
