/**
 * docs/plugins.md, followed from a folder outside the repository: every file
 * the guide shows (`deno.json`, the node's `plexus.json`, one plugin of each
 * kind and its test) is read from the guide's code blocks at test time, so
 * the guide cannot drift from what works, and written into `my-plugins/`
 * beside a `plexus` link to this repository, with an empty HOME. There the
 * guide's `deno test` must pass, and each example's `deno run` command, as
 * written (through bash, so its `$(…)` is the shell's), starts a real node
 * at each trust level:
 *
 * - webhook-relay (extension) serves its route and runs its task at
 *   `trusted`, `worker` and `process`, and `GET /api/v1/plugins` shows the
 *   level and the permissions it got;
 * - fewest-picks (balancer), solo (consensus) and loopback (transport) work
 *   `trusted` (the node's task balancer picks with it; the cluster view names
 *   this node leader under `solo`; `/health` shows the transport up) and
 *   stop the node at `worker` and `process` with the refusal naming the
 *   plugin and `trusted`.
 *
 * A level the guide shows no command for is the guide's command with
 * `--plugin-trust NAME=LEVEL` changed, plus, for `process`, the guide's
 * `--allow-run` flag, as its "Trust levels" section says. The nodes start in
 * parallel. The repository's `deno.lock` must come out unchanged.
 *
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  deadline,
  type LogLine,
  PlexusProcess,
  REPO,
  START_TIMEOUT_MS,
} from "./_process.ts";
import {
  authorEnv,
  authorFolder,
  type Block,
  codeBlocks,
  commands,
  fileBlock,
  section,
  sha256,
} from "./_guide.ts";

const DOC = "docs/plugins.md";
/** The folder the guide's layout names, beside the clone. */
const AUTHOR_DIR = "my-plugins";
/** The files the guide labels with a `// NAME` first line. */
const FILES = [
  "deno.json",
  "webhook_relay.ts",
  "webhook_relay_test.ts",
  "fewest_picks.ts",
  "fewest_picks_test.ts",
  "solo.ts",
  "solo_test.ts",
  "loopback.ts",
  "loopback_test.ts",
];
/** The node's config file: the guide's one `json` block. */
const CONFIG_FILE = "plexus.json";
/** The guide's config without its `pluginGrants`. */
const UNGRANTED_FILE = "no-grants.json";
/** The webhook URL in the guide's config; replaced by this test's webhook. */
const DOC_WEBHOOK = "http://127.0.0.1:8087/hook";
/** What the guide says a node needs for the `process` level. */
const ALLOW_RUN = `--allow-run="$(realpath "$(which deno)")"`;

type Level = "trusted" | "worker" | "process";
const LEVELS: readonly Level[] = ["trusted", "worker", "process"];

/** One example: its section and plugin. */
interface Example {
  heading: string;
  name: string;
  kind: "extension" | "balancer" | "consensus" | "transport";
}
const EXAMPLES: readonly Example[] = [
  {
    heading: "## An extension: webhook-relay",
    name: "webhook-relay",
    kind: "extension",
  },
  {
    heading: "## A balancer: fewest-picks",
    name: "fewest-picks",
    kind: "balancer",
  },
  { heading: "## A consensus: solo", name: "solo", kind: "consensus" },
  { heading: "## A transport: loopback", name: "loopback", kind: "transport" },
];

/** The example's `deno run` command for each level (see the module doc). */
function levelCommands(blocks: Block[], example: Example): Map<Level, string> {
  const where = `${DOC} '${example.heading}'`;
  const trustOf = new RegExp(`--plugin-trust ${example.name}=(\\S+)`);
  const shown = new Map<Level, string>();
  for (const line of commands(blocks, "deno run")) {
    const level = trustOf.exec(line)?.[1] as Level | undefined;
    assert.ok(
      level && LEVELS.includes(level),
      `${where}: a 'deno run' command without --plugin-trust ${example.name}=LEVEL: ${line}`,
    );
    assert.ok(!shown.has(level), `${where}: two commands for '${level}'`);
    shown.set(level, line);
  }
  const base = shown.get("trusted") ?? shown.get("worker");
  assert.ok(base, `${where}: no 'deno run' command at trusted or worker`);
  const out = new Map<Level, string>();
  for (const level of LEVELS) {
    let line = shown.get(level) ??
      base.replace(trustOf, `--plugin-trust ${example.name}=${level}`);
    if (level === "process" && !line.includes("--allow-run")) {
      line = line.replace(
        " ../plexus/main.ts",
        ` ${ALLOW_RUN} ../plexus/main.ts`,
      );
    }
    out.set(level, line);
  }
  return out;
}

/** This test's webhook: keeps every post and wakes whoever waits for one. */
function webhook() {
  const posts: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      posts.push(await req.json());
      for (const wake of waiters) wake();
      return new Response(null, { status: 204 });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}/hook`,
    /** Resolves with the first post `pred` accepts. */
    async post(
      pred: (body: Record<string, unknown>) => boolean,
      what: string,
    ): Promise<Record<string, unknown>> {
      const find = () => posts.find(pred);
      const found = find();
      if (found) return found;
      const { promise, resolve } = Promise.withResolvers<void>();
      const wake = () => find() && resolve();
      waiters.add(wake);
      try {
        await deadline(promise, START_TIMEOUT_MS, what);
        return find()!;
      } finally {
        waiters.delete(wake);
      }
    },
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** Reads until `done` says yes (a task's status has no event to wait on). */
async function poll<T>(
  read: () => Promise<T>,
  done: (v: T) => boolean,
  what: string,
): Promise<T> {
  const end = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > end) {
      throw new Error(
        `timed out waiting for ${what}: ${JSON.stringify(value)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

Deno.test("plugin kinds guide: from a folder beside the clone, each kind's example passes its test and runs on a node at the levels the guide says, and is refused at the others", async () => {
  const doc = await Deno.readTextFile(join(REPO, DOC));
  const blocks = codeBlocks(doc);
  const json = blocks.filter((b) => b.info === "json");
  assert.equal(json.length, 1, `${DOC}: expected one json block (plexus.json)`);
  const config = json[0].lines.join("\n");
  assert.ok(
    config.includes(DOC_WEBHOOK),
    `${DOC}: plexus.json has no ${DOC_WEBHOOK}`,
  );
  assert.ok(
    section(doc, "## Trust levels", DOC).includes(ALLOW_RUN),
    `${DOC}: the trust levels section does not give ${ALLOW_RUN}`,
  );
  // What the guide quotes the node saying: its plain blocks' `plexus:` lines.
  const quoted = blocks.filter((b) => b.info === "")
    .flatMap((b) => b.lines).filter((l) => l.startsWith("plexus: "));
  const quotedRefusal = {
    name: "solo",
    text: quoted.find((l) => l.includes("plugin 'solo' is a consensus"))!,
  };
  assert.ok(quotedRefusal.text, `${DOC}: no quoted refusal of 'solo'`);
  const quotedUngranted = quoted.find((l) =>
    l.includes("asks for more than it was granted")
  )!;
  assert.ok(quotedUngranted, `${DOC}: no quoted refusal for a missing grant`);
  const testCmd = commands(blocks, "deno test");
  // The summary the guide says `deno test` prints (its comment).
  const testSummary = blocks.filter((b) => b.info === "sh")
    .flatMap((b) => b.lines).find((l) => l.startsWith("deno test "))
    ?.match(/#\s*(ok \| \d+ passed \| 0 failed)/)?.[1];
  assert.ok(testSummary, `${DOC}: the 'deno test' line gives no summary`);
  assert.equal(testCmd.length, 1, `${DOC}: expected one 'deno test' command`);
  const runs = new Map(
    EXAMPLES.map((e) => [
      e.name,
      levelCommands(codeBlocks(section(doc, e.heading, DOC)), e),
    ]),
  );
  const lockBefore = await sha256(join(REPO, "deno.lock"));

  await using hook = webhook();
  await using folder = await authorFolder(AUTHOR_DIR, {
    ...Object.fromEntries(FILES.map((f) => [f, fileBlock(blocks, f, DOC)])),
    [CONFIG_FILE]: config.replaceAll(DOC_WEBHOOK, hook.url),
    [UNGRANTED_FILE]: JSON.stringify({
      ...JSON.parse(config.replaceAll(DOC_WEBHOOK, hook.url)),
      pluginGrants: undefined,
    }),
  });
  const env = await authorEnv(folder.home);
  const nodes: PlexusProcess[] = [];
  // Ends the children that run to their exit, should the test fail first.
  const killer = new AbortController();

  /** Runs one of the guide's command lines in the author's folder. */
  const spawn = (line: string, extra: string[] = []) =>
    new Deno.Command("bash", {
      args: ["-c", `exec ${line} "$@"`, "bash", ...extra],
      cwd: folder.dir,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: killer.signal,
    }).spawn();

  /** Starts a node from `line` with its own data dir; waits until it listens. */
  const start = async (id: string, line: string): Promise<PlexusProcess> => {
    const data = `./data/${id}`;
    const node = new PlexusProcess(
      spawn(line, ["--port", "0", "--data-dir", data]),
      join(folder.dir, data),
    );
    nodes.push(node);
    const listening: LogLine = await node.waitForLog(
      (r) => typeof r.url === "string" && r.msg.startsWith("plexus listening"),
      `${id}: the 'plexus listening' log line`,
    ).catch((err) => {
      throw new Error(`${id} (${line}): ${err.message}`);
    });
    node.url = listening.url as string;
    return node;
  };

  /** The node's entry in `GET /api/v1/plugins`. */
  const listed = async (node: PlexusProcess, name: string) => {
    const res = await node.api("/api/v1/plugins");
    assert.equal(res.status, 200);
    const all = await res.json() as { name: string }[];
    const entry = all.find((p) => p.name === name);
    assert.ok(entry, `${name} not in ${JSON.stringify(all)}`);
    return entry as {
      name: string;
      kind: string;
      trust: string;
      permissions: unknown;
    };
  };

  /** Submits a webhook.send task and waits until it is done and posted. */
  const relayTask = async (node: PlexusProcess, text: string) => {
    const res = await node.api("/api/v1/tasks", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "webhook.send", payload: { text } }),
    });
    const body = await res.json();
    assert.equal(res.status, 202, JSON.stringify(body));
    const posted = await hook.post(
      (p) => p.text === text,
      `the post '${text}'`,
    );
    assert.deepEqual(posted, { task: body.id, text });
    const view = await poll(
      async () => (await node.api(`/api/v1/tasks/${body.id}`)).json(),
      (v) => v.status === "done" || v.status === "dead",
      `task ${body.id} done`,
    );
    assert.equal(view.status, "done", JSON.stringify(view));
    assert.deepEqual(view.result, { sent: true });
  };

  const extension = async (level: Level) => {
    const node = await start(
      `relay-${level}`,
      runs.get("webhook-relay")!.get(level)!,
    );
    const stats = await node.fetch("/plugins/webhook-relay/stats");
    assert.equal(stats.status, 200);
    assert.deepEqual(await stats.json(), { sent: 0, failed: 0, limited: 0 });
    await relayTask(node, `hello from ${level}`);
    const entry = await listed(node, "webhook-relay");
    assert.equal(entry.trust, level);
    assert.deepEqual(
      entry.permissions,
      level === "trusted" ? "all" : {
        read: false,
        write: false,
        net: ["127.0.0.1"],
        env: false,
        sys: false,
        run: false,
        ffi: false,
        import: false,
      },
    );
  };

  const balancer = async () => {
    const node = await start(
      "balancer",
      runs.get("fewest-picks")!.get("trusted")!,
    );
    const entry = await listed(node, "fewest-picks");
    assert.equal(entry.trust, "trusted");
    assert.equal(entry.kind, "balancer");
    await relayTask(node, "picked by fewest-picks");
    const nodeId = (await (await node.fetch("/health")).json()).nodeId;
    const counts = await poll(
      async () => (await node.fetch("/plugins/fewest-picks/counts")).json(),
      (c) => c[nodeId]?.ok === 1,
      "the balancer's report of the task",
    );
    assert.deepEqual(counts, { [nodeId]: { picks: 1, ok: 1, failed: 0 } });
  };

  const consensus = async () => {
    const node = await start("consensus", runs.get("solo")!.get("trusted")!);
    const res = await node.api("/api/v1/cluster");
    const cluster = await res.json();
    assert.equal(res.status, 200, JSON.stringify(cluster));
    assert.equal(cluster.consensus, "solo");
    assert.equal(cluster.leader, cluster.nodeId);
    assert.equal(cluster.epoch, 1);
    assert.deepEqual(
      cluster.members.map((
        m: { id: string; address: string },
      ) => [m.id, m.address]),
      [[cluster.nodeId, node.url]],
    );
    assert.equal((await listed(node, "solo")).trust, "trusted");
  };

  const transport = async () => {
    const node = await start(
      "transport",
      runs.get("loopback")!.get("trusted")!,
    );
    const health = await (await node.fetch("/health")).json();
    assert.equal(health.status, "healthy", JSON.stringify(health));
    assert.equal(
      health.services.loopback?.status,
      "up",
      JSON.stringify(health),
    );
    assert.match(health.services.loopback.detail, /^ping [\d.]+ ms$/);
    assert.equal((await listed(node, "loopback")).trust, "trusted");
  };

  /** A synchronous kind at a sandbox level: the node must not start. */
  /** Runs `line` to its exit; the node must refuse to start, exit 1. */
  const mustRefuse = async (id: string, line: string): Promise<string> => {
    const child = spawn(line, ["--port", "0", "--data-dir", `./data/${id}`]);
    const out = await deadline(
      child.output(),
      START_TIMEOUT_MS,
      `${line} to exit`,
    );
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 1, `${line}: exit ${out.code}\n${stderr}`);
    return stderr;
  };

  /** A synchronous kind at a sandbox level: the node must not start. */
  const refused = async (example: Example, level: Level) => {
    const line = runs.get(example.name)!.get(level)!;
    const stderr = await mustRefuse(`${example.name}-${level}`, line);
    assert.ok(
      stderr.includes(`plugin '${example.name}' is a ${example.kind}`) &&
        stderr.includes(`{"${example.name}": "trusted"}`),
      `${line}: not the refusal naming '${example.name}' and trusted:\n${stderr}`,
    );
    // The refusal the guide quotes, word for word.
    if (example.name === quotedRefusal.name) {
      assert.ok(
        stderr.includes(quotedRefusal.text),
        `${DOC} quotes '${quotedRefusal.text}'; the node said:\n${stderr}`,
      );
    }
  };

  /** The relay sandboxed without its grant: refused as the guide quotes. */
  const ungranted = async () => {
    const line = runs.get("webhook-relay")!.get("worker")!;
    assert.ok(line.includes(`--config ${CONFIG_FILE}`), line);
    const stderr = await mustRefuse(
      "relay-ungranted",
      line.replace(`--config ${CONFIG_FILE}`, `--config ${UNGRANTED_FILE}`),
    );
    assert.ok(
      stderr.includes(quotedUngranted),
      `${DOC} quotes '${quotedUngranted}'; the node said:\n${stderr}`,
    );
  };

  const runTests = async () => {
    const [cmd, ...args] = testCmd[0].split(/\s+/);
    const out = await deadline(
      new Deno.Command(cmd, {
        args,
        cwd: folder.dir,
        env,
        clearEnv: true,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: killer.signal,
      }).output(),
      START_TIMEOUT_MS,
      `'${testCmd[0]}' to finish`,
    );
    const text = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `'${testCmd[0]}' failed:\n${text}`);
    assert.ok(text.includes(testSummary), `not '${testSummary}':\n${text}`);
    for (const f of FILES.filter((f) => f.endsWith("_test.ts"))) {
      assert.match(text, new RegExp(`running \\d+ tests? from \\./${f}`));
    }
  };

  try {
    const started = performance.now();
    await Promise.all([
      runTests(),
      ...LEVELS.map(extension),
      balancer(),
      consensus(),
      transport(),
      ungranted(),
      ...EXAMPLES.filter((e) => e.kind !== "extension").flatMap((e) =>
        (["worker", "process"] as const).map((l) => refused(e, l))
      ),
    ]);
    console.log(
      `  ${nodes.length} nodes, 7 refusals and the authors' tests in ${
        Math.round(performance.now() - started)
      } ms`,
    );
    // Each node stops cleanly, a process-level plugin's child with it.
    for (const node of nodes) node.signal("SIGTERM");
    for (const node of nodes) {
      const status = await node.exit();
      assert.equal(status.code, 0, node.stderr);
    }
    await Deno.stat(join(folder.dir, "deno.lock"));
    assert.equal(
      await sha256(join(REPO, "deno.lock")),
      lockBefore,
      "the repository's deno.lock changed",
    );
  } finally {
    killer.abort();
    await Promise.all(nodes.map((n) => n.close()));
  }
});
