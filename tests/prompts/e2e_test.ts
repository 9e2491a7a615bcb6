/**
 * The prompt service end to end with the demo agents as real processes
 * (`main.ts agent --as root|planning|ordering`) on two nodes sharing one KV
 * file: the full SAGE chain, a cache hit on the other node, an agent
 * process signing with the wrong key refused, and the root agent SIGKILLed
 * mid-request.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { localGateway } from "../../gateway/mod.ts";
import type { AgentKey } from "../../sdk/keys.ts";
import { promptAgent, type PromptNode, startPromptNode } from "./_node.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));
const LIAR = fileURLToPath(new URL("./_liar_agent.ts", import.meta.url));

/** An agent process; killed (SIGKILL) on dispose. */
function spawnAgent(args: string[]) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-read", ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) lines.push(decoder.decode(chunk));
  })();
  return {
    child,
    output: () => lines.join(""),
    kill() {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
    },
    async [Symbol.asyncDispose]() {
      this.kill();
      await child.status;
    },
  };
}

async function keyFile(dir: string, name: string, key: AgentKey) {
  const file = join(dir, `${name}.json`);
  await Deno.writeTextFile(file, JSON.stringify(key));
  return file;
}

/** Waits until agents offering each capability are connected to `node`. */
async function offered(node: PromptNode, want: Record<string, number>) {
  const gateway = localGateway(node.handle.kernel);
  const end = Date.now() + 30_000;
  for (;;) {
    const caps = gateway.capabilities();
    if (Object.entries(want).every(([c, n]) => (caps[c]?.length ?? 0) >= n)) {
      return;
    }
    if (Date.now() > end) {
      throw new Error(
        `agents did not come up: want ${JSON.stringify(want)}, have ${
          JSON.stringify(caps)
        }`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

Deno.test("prompts e2e: the demo agents as processes answer with the full chain; the other node answers from the shared cache; a wrong-key agent process is refused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-prompts-e2e-" });
  await using a = await startPromptNode({ dir, name: "a" });
  await using b = await startPromptNode({ dir, name: "b" });
  const [root, planning, ordering] = await Promise.all([
    a.enrolled(),
    a.enrolled(),
    a.enrolled(),
  ]);
  await using _root = spawnAgent([
    MAIN,
    "agent",
    "--as",
    "root",
    "--url",
    a.url,
    "--key",
    await keyFile(dir, "root", root),
  ]);
  await using _planning = spawnAgent([
    MAIN,
    "agent",
    "--as",
    "planning",
    "--url",
    a.url,
    "--key",
    await keyFile(dir, "planning", planning),
  ]);
  await using _ordering = spawnAgent([
    MAIN,
    "agent",
    "--as",
    "ordering",
    "--url",
    a.url,
    "--key",
    await keyFile(dir, "ordering", ordering),
  ]);
  await offered(a, { prompt: 1, plan: 1, order: 1 });

  const r = await a.prompt({
    prompt: "A room in Lisbon",
    scenario: "hotel",
    sageEnabled: true,
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.match(
    String(r.body.response),
    /^Hotel request handled\. Plan for "A room in Lisbon": 1\) fix the dates; 2\) shortlist three hotels; 3\) reserve the best one\. Order ORD-[0-9A-F]{8} placed for "hotel room"\.$/,
  );
  const v = r.body.sageVerification as {
    verified: boolean;
    agentDid: string;
    chain: {
      hop: number;
      agent: string;
      agentDid: string;
      signatureValid: boolean;
    }[];
  };
  assert.equal(v.verified, true);
  assert.equal(v.agentDid, root.id);
  assert.deepEqual(
    v.chain.map((l) => [l.hop, l.agent, l.agentDid, l.signatureValid]),
    [
      [0, root.id, root.id, true],
      [1, planning.id, planning.id, true],
      [2, ordering.id, ordering.id, true],
    ],
  );

  // SAGE off: answered once on a, then from the shared cache on b.
  const miss = await a.prompt({ prompt: "buy a lamp", sageEnabled: false });
  assert.equal(miss.status, 200, JSON.stringify(miss.body));
  assert.equal(miss.headers.get("x-cache"), "MISS");
  const hit = await b.prompt({ prompt: "Buy a lamp", sageEnabled: false });
  assert.equal(hit.status, 200, JSON.stringify(hit.body));
  assert.equal(hit.headers.get("x-cache"), "HIT");
  assert.equal(hit.body.response, miss.body.response);

  // A planning agent process that signs with a key other than its enrolled one.
  await _planning.kill();
  await _planning.child.status;
  const liar = await a.enrolled();
  const { generateAgentKey } = await import("../../sdk/keys.ts");
  await using _liar = spawnAgent([
    LIAR,
    a.url,
    await keyFile(dir, "liar", liar),
    await keyFile(dir, "wrong", await generateAgentKey()),
    "plan",
  ]);
  const gateway = localGateway(a.handle.kernel);
  const end = Date.now() + 30_000;
  while (
    !(gateway.capabilities().plan ?? []).includes(liar.id) ||
    (gateway.capabilities().plan ?? []).includes(planning.id)
  ) {
    if (Date.now() > end) throw new Error("the liar agent did not come up");
    await new Promise((r) => setTimeout(r, 50));
  }
  const refused = await a.prompt({
    prompt: "plan my trip",
    sageEnabled: true,
  });
  assert.equal(refused.status, 502, JSON.stringify(refused.body));
  const error = refused.body.error as { code: string; message: string };
  assert.equal(error.code, "sage_verification_failed");
  assert.ok(error.message.includes(liar.id), error.message);
});

Deno.test("prompts e2e: the root agent SIGKILLed mid-request is retried on another root agent; with none left, 503 or a stale answer", async () => {
  const dir = await Deno.makeTempDir({ prefix: "plexus-prompts-kill-" });
  await using a = await startPromptNode({ dir, name: "a" });
  const [root1, root2, planKey] = await Promise.all([
    a.enrolled(),
    a.enrolled(),
    a.enrolled(),
  ]);
  // The planning agent holds its first answer until the test lets it go,
  // so the root agent that asked it is busy when it is killed.
  const asked = Promise.withResolvers<string>();
  const release = Promise.withResolvers<void>();
  let calls = 0;
  await using _plan = await promptAgent(a, planKey, "plan", async (hop) => {
    if (++calls === 1) {
      asked.resolve(hop.from!);
      await release.promise;
    }
    return "the plan";
  });
  const processes = new Map<string, ReturnType<typeof spawnAgent>>();
  for (const [name, key] of [["root1", root1], ["root2", root2]] as const) {
    processes.set(
      key.id,
      spawnAgent([
        MAIN,
        "agent",
        "--as",
        "root",
        "--url",
        a.url,
        "--key",
        await keyFile(dir, name, key),
      ]),
    );
  }
  try {
    await offered(a, { prompt: 2, plan: 1 });
    const pending = a.prompt({ prompt: "plan my trip", sageEnabled: true });
    const busy = await asked.promise;
    processes.get(busy)!.kill();
    const r = await pending;
    release.resolve();
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const other = busy === root1.id ? root2.id : root1.id;
    assert.equal(r.body.response, "Planning request handled. the plan");
    const meta = r.body.metadata as { agent: string };
    assert.equal(meta.agent, other);
    const v = r.body.sageVerification as {
      chain: { hop: number; agent: string }[];
    };
    assert.deepEqual(v.chain.map((l) => l.agent), [other, planKey.id]);
    const logs = r.body.logs as {
      from: string;
      content: string;
      level: string;
    }[];
    assert.ok(
      logs.some((l) =>
        l.from === busy && l.level === "warn" &&
        /root agent dropped/.test(l.content)
      ),
      JSON.stringify(logs),
    );

    // A cached answer (SAGE off) to fall back on, then no root agent left.
    const cached = await a.prompt({
      prompt: "plan my trip",
      sageEnabled: false,
    });
    assert.equal(cached.headers.get("x-cache"), "MISS");
    processes.get(other)!.kill();
    const gateway = localGateway(a.handle.kernel);
    const end = Date.now() + 10_000;
    while ((gateway.capabilities().prompt ?? []).length > 0) {
      if (Date.now() > end) throw new Error("the killed root stayed connected");
      await new Promise((r) => setTimeout(r, 20));
    }
    const none = await a.prompt({ prompt: "plan my trip", sageEnabled: true });
    assert.equal(none.status, 503, JSON.stringify(none.body));
    assert.equal(none.headers.get("retry-after"), "5");
    const stale = await a.prompt(
      { prompt: "plan my trip", sageEnabled: false },
      { "Cache-Control": "no-cache" },
    );
    assert.equal(stale.status, 200, JSON.stringify(stale.body));
    assert.equal(stale.headers.get("x-cache"), "STALE");
    assert.equal(stale.body.response, cached.body.response);
  } finally {
    release.resolve();
    for (const p of processes.values()) await p[Symbol.asyncDispose]();
  }
});
