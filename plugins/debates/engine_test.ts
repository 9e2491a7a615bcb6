import assert from "node:assert/strict";
import {
  createDebateEngine,
  DebateAskError,
  type DebateRequest,
  parseRoundSagaId,
  roundSagaId,
} from "./engine.ts";
import { createDebateStore, type DebateRecord } from "./store.ts";

const debate = (rounds = 3): DebateRecord => ({
  id: "d1",
  topic: "t",
  participants: [
    { ref: "a", kind: "agent" },
    { ref: "b", kind: "agent" },
    { ref: "c", kind: "agent" },
  ],
  rounds,
  turnTimeoutMs: 1000,
  consensus: { method: "unanimous" },
  status: "running",
  saga: "debate-d1",
  createdAt: 1,
  updatedAt: 1,
  roundsRun: 0,
});

async function setup(
  answer: (agent: string, req: DebateRequest) => unknown,
  options: { maxRequestBytes?: number; transcriptRounds?: number } = {},
) {
  const kv = await Deno.openKv(":memory:");
  const store = createDebateStore(kv, ["debates"]);
  const asked: DebateRequest[] = [];
  const events: [string, unknown][] = [];
  const started: number[] = [];
  const engine = createDebateEngine({
    store,
    nodeId: "n1",
    ...options,
    startRound: (_d, round) => {
      started.push(round);
      return Promise.resolve();
    },
    ask: (p, _slot, req) => {
      asked.push(req);
      const a = answer(p.ref, req);
      if (a instanceof Error) return Promise.reject(a);
      return Promise.resolve({ agent: p.ref, answer: a });
    },
    publish: (type, data) => void events.push([type, data]),
  });
  const turn = (round: number, participant: number) =>
    engine.functions["debate.turn"]({ debate: "d1", round, participant });
  const tally = (round: number) =>
    engine.functions["debate.tally"]({ debate: "d1", round });
  const playRound = async (round: number) => {
    await Promise.all([0, 1, 2].map((p) => turn(round, p)));
    return await tally(round);
  };
  return { kv, store, engine, asked, events, started, turn, tally, playRound };
}

Deno.test("debate engine: a turn step run again (after a crash, on another node) finds the recorded turn and asks nobody", async () => {
  const t = await setup(() => ({ position: "for", confidence: 1 }));
  try {
    await t.store.create(debate());
    assert.deepEqual(await t.turn(1, 0), { status: "answered" });
    assert.deepEqual(await t.turn(1, 0), { status: "answered", again: true });
    assert.equal(t.asked.length, 1);
    // Told again: the first run may have died between recording and telling.
    assert.deepEqual(
      t.events.filter(([type]) => type === "debate.turn").map(([, d]) => d),
      [0, 1].map(() => ({
        debateId: "d1",
        round: 1,
        participant: "a",
        agent: "a",
        position: "for",
        confidence: 1,
        argument: "",
        latencyMs: (t.events[0][1] as { latencyMs: number }).latencyMs,
      })),
    );
  } finally {
    t.kv.close();
  }
});

Deno.test("debate engine: a node dying between recording a round and telling it: the step run again tells the round, the consensus and the end, and starts nothing twice", async () => {
  const t = await setup(() => ({ position: "for", confidence: 1 }));
  try {
    await t.store.create(debate());
    await Promise.all([0, 1, 2].map((p) => t.turn(1, p)));
    // The first tally records the round (unanimous: the debate ends) and
    // dies as it tells the first event.
    const told = t.events.length;
    const realPush = t.events.push.bind(t.events);
    t.events.push = () => {
      throw new Error("the node died");
    };
    await assert.rejects(() => t.tally(1), /the node died/);
    t.events.push = realPush;
    assert.equal(t.events.length, told);
    assert.equal((await t.store.get("d1"))?.status, "consensus");
    assert.deepEqual(await t.tally(1), { again: true });
    assert.deepEqual(t.events.slice(told).map(([type]) => type), [
      "debate.round.completed",
      "debate.consensus",
      "debate.finished",
    ]);
    assert.deepEqual(t.events.at(-1)![1], {
      debateId: "d1",
      status: "consensus",
      roundsRun: 1,
      position: "for",
    });
    assert.deepEqual(t.started, [], "no next round for a finished debate");
  } finally {
    t.kv.close();
  }
});

Deno.test("debate engine: a failed ask or a bad answer records a silent turn and the step succeeds", async () => {
  const t = await setup((agent) =>
    agent === "a"
      ? new DebateAskError("timeout: no answer in 1000 ms", "a")
      : agent === "b"
      ? { position: "", confidence: 1 }
      : { position: "For", confidence: 0.5, argument: "x".repeat(5000) }
  );
  try {
    await t.store.create(debate());
    const out = await Promise.all([0, 1, 2].map((p) => t.turn(1, p)));
    assert.deepEqual(out.map((o) => (o as { status: string }).status), [
      "silent",
      "silent",
      "answered",
    ]);
    const turns = await t.store.turns("d1");
    assert.equal(turns[0].reason, "timeout: no answer in 1000 ms");
    assert.equal(turns[0].agent, "a");
    assert.match(turns[1].reason!, /^bad answer: position must be/);
    assert.equal(turns[2].position, "for");
    assert.equal(turns[2].argument!.length, 2000);
    assert.deepEqual(
      t.events.map(([type]) => type).sort(),
      ["debate.turn", "debate.turn.skipped", "debate.turn.skipped"],
    );
  } finally {
    t.kv.close();
  }
});

Deno.test("debate engine: each round sees the earlier ones; the last round without consensus finishes the debate, later steps are no-ops", async () => {
  const t = await setup((agent) => ({ position: agent, confidence: 1 }));
  try {
    await t.store.create(debate(2));
    await t.playRound(1);
    assert.deepEqual(t.started, [2], "round 1's tally starts round 2");
    // Its step run again (a crash after the start) starts round 2 again: the
    // saga id makes that a no-op.
    assert.deepEqual(await t.tally(1), { again: true });
    assert.deepEqual(t.started, [2, 2]);
    assert.deepEqual(
      t.asked.map((q) => q.transcript.length),
      [0, 0, 0],
      "round 1: an empty transcript",
    );
    assert.deepEqual(await t.playRound(2), {
      status: "no-consensus",
      reached: false,
    });
    assert.deepEqual(t.asked.slice(3).map((q) => q.transcript.length), [
      3,
      3,
      3,
    ]);
    assert.deepEqual(t.started, [2, 2], "nothing after the last round");
    assert.deepEqual(await t.turn(3, 0), { skipped: "no-consensus" });
    // The last tally run again tells its round and the end again (at least
    // once) and starts nothing.
    assert.deepEqual(await t.tally(2), { again: true });
    assert.deepEqual(t.started, [2, 2]);
    assert.deepEqual(
      t.events.filter(([type]) => type === "debate.finished").map(([, d]) => d),
      [1, 2].map(() => ({
        debateId: "d1",
        status: "no-consensus",
        roundsRun: 2,
      })),
    );
  } finally {
    t.kv.close();
  }
});

Deno.test("debate engine: the transcript keeps the last transcriptRounds rounds and stays under maxRequestBytes", async () => {
  const long = "y".repeat(1500);
  const t = await setup(
    (agent) => ({ position: agent, confidence: 1, argument: long }),
    { transcriptRounds: 3, maxRequestBytes: 12_000 },
  );
  try {
    await t.store.create(debate(6));
    for (let r = 1; r <= 5; r++) await t.playRound(r);
    const rounds = (q: DebateRequest) => [
      ...new Set(q.transcript.map((x) => x.round)),
    ];
    // Round 5 asks with rounds 2..4 by the window, then the budget drops
    // the oldest until the JSON fits: 9 turns of 1.5 kB do not, 6 do.
    const last = t.asked.at(-1)!;
    assert.equal(last.round, 5);
    assert.deepEqual(rounds(last), [3, 4]);
    assert.ok(new TextEncoder().encode(JSON.stringify(last)).length <= 12_000);
  } finally {
    t.kv.close();
  }
});

Deno.test("debate engine: a round's saga is a parallel group of turns, the moderator, the tally; its id names debate and round", () => {
  const t = createDebateEngine({
    store: {} as never,
    ask: () => Promise.reject(new Error("unused")),
    publish: () => {},
    nodeId: "n1",
    startRound: () => Promise.resolve(),
  });
  const d = { ...debate(50), moderator: { ref: "m", kind: "agent" as const } };
  const def = t.definition(d, 7) as {
    name: string;
    steps: (
      | { id: string; run: { input: unknown } }
      | { parallel: { id: string }[] }
    )[];
  };
  assert.equal(def.name, "debate.round");
  assert.deepEqual(
    def.steps.map((s) => "parallel" in s ? s.parallel.map((x) => x.id) : s.id),
    [["p0", "p1", "p2"], "moderator", "tally"],
  );
  assert.deepEqual((def.steps[2] as { run: { input: unknown } }).run.input, {
    debate: "d1",
    round: 7,
  });
  assert.equal(roundSagaId(d, 7), "debate-d1-r7");
  assert.deepEqual(parseRoundSagaId("debate-a-b-c-r12"), {
    debate: "a-b-c",
    round: 12,
  });
  assert.equal(parseRoundSagaId("debate-x"), null);
});
