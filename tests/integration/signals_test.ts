/**
 * Ctrl-C and SIGTERM through `deno task` itself, as a person meets them:
 * the terminal signals the whole foreground process group and the task
 * runner forwards its own copy, so one press reaches the node twice
 * (`deno run --watch` adds a SIGINT and a SIGTERM of its own). The copies
 * land 0.1-0.3 ms apart and are often merged into one on the way (a press
 * counted twice showed in 4 of 6 runs), so each test also sends the task
 * runner's copy 100 ms late, as a loaded machine may: then a press counted
 * twice fails every run.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { FIXTURES, freePort, freePortRange, REPO } from "./_process.ts";
import { V8_FLAGS_ARG } from "../../core/runtime_flags.ts";
import {
  childPids,
  cmdline,
  HAS_PTY,
  kill,
  running,
  startTask,
  type TaskRun,
} from "./_task.ts";

const LATE_COPY_MS = 100;
/** Above main.ts's SAME_PRESS_MS (500): a separate press. */
const SEPARATE_PRESS_MS = 800;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A data dir the tasks may write to (they get --allow-write=./data). */
async function dataDir(): Promise<string> {
  await Deno.mkdir(join(REPO, "data"), { recursive: true });
  return await Deno.makeTempDir({
    dir: join(REPO, "data"),
    prefix: "it-signals-",
  });
}

/** Flags for one node on a free port, everything under `dir`. */
function nodeArgs(dir: string, extra: string[] = []): string[] {
  return [
    "--port",
    String(freePort()),
    "--data-dir",
    dir,
    "--kv",
    join(dir, "plexus.kv"),
    "--plugins-dir",
    join(dir, "plugins.d"),
    ...extra,
  ];
}

const SLOW = ["--plugin", join(FIXTURES, "slow_plugin.ts")];

const listening = (r: { msg: string }) => r.msg.startsWith("plexus listening");
const msg = (m: string) => (r: { msg: string }) => r.msg === m;

/** The URL the node logged. */
async function nodeUrl(
  task: TaskRun,
  n = 1,
  timeoutMs?: number,
): Promise<string> {
  const what = n === 1 ? "the node to listen" : `listen line ${n}`;
  return (await task.waitForLog(listening, what, { n, timeoutMs }))
    .url as string;
}

/** `deno task`'s child: the node for `start`, the cluster process for `cluster`. */
async function taskChild(task: TaskRun): Promise<number> {
  const [pid] = await childPids(task.pid);
  assert.ok(pid, `no child of 'deno task' (pid ${task.pid})`);
  return pid;
}

/** One press: the terminal's SIGINT, then the task runner's copy, late. */
async function press(task: TaskRun, copyTo: number): Promise<void> {
  await task.ctrlC();
  await sleep(LATE_COPY_MS);
  kill(copyTo, "SIGINT");
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await dataDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test({
  name:
    "signals: one Ctrl-C under 'deno task start' in a terminal drains the in-flight request, logs 'stopped' and exits 0",
  ignore: !HAS_PTY,
  fn: () =>
    withDir(async (dir) => {
      await using task = await startTask("start", nodeArgs(dir, SLOW), {
        terminal: true,
      });
      const url = await nodeUrl(task);
      const node = await taskChild(task);
      const inflight = fetch(`${url}/plugins/slow/sleep/1000`).then(
        async (res) => ({ status: res.status, body: await res.json() }),
        (err: Error) => err.message,
      );
      await task.waitForLog(msg("slow request started"), "the slow request");
      await press(task, node);
      assert.deepEqual(await inflight, { status: 200, body: { slept: 1000 } });
      const status = await task.exit();
      assert.doesNotMatch(task.output, /second SIG/);
      assert.equal(status.code, 0, task.output);
      const msgs = task.records.map((r) => r.msg);
      assert.ok(msgs.includes("shutting down"), task.output);
      assert.equal(msgs.at(-1), "stopped", task.output);
    }),
});

Deno.test({
  name:
    "signals: a second, separate Ctrl-C under 'deno task start' ends a long drain at once with 130",
  ignore: !HAS_PTY,
  fn: () =>
    withDir(async (dir) => {
      await using task = await startTask("start", nodeArgs(dir, SLOW), {
        terminal: true,
      });
      const url = await nodeUrl(task);
      const node = await taskChild(task);
      const inflight = fetch(`${url}/plugins/slow/sleep/60000`).then(
        (res) => res.body?.cancel(),
        () => {}, // the connection dies with the node
      );
      try {
        await task.waitForLog(msg("slow request started"), "the slow request");
        await press(task, node);
        await task.waitForLog(msg("shutting down"), "the drain to start");
        await sleep(SEPARATE_PRESS_MS - LATE_COPY_MS);
        assert.ok(
          !task.exited,
          `the first press alone ended it:\n${task.output}`,
        );
        const t0 = performance.now();
        await task.ctrlC();
        const status = await task.exit(10_000);
        const took = performance.now() - t0;
        assert.equal(status.code, 130, task.output);
        assert.ok(took < 5_000, `exited at once (took ${took.toFixed(0)} ms)`);
        assert.match(task.output, /plexus: second SIGINT; exiting now/);
        assert.ok(!task.records.some(msg("stopped")), task.output);
      } finally {
        await inflight;
      }
    }),
});

Deno.test(
  "signals: SIGTERM to the process group of 'deno task start' (what 'kill %1' sends) drains and exits 0",
  () =>
    withDir(async (dir) => {
      await using task = await startTask("start", nodeArgs(dir), {
        terminal: false,
      });
      await nodeUrl(task);
      const node = await taskChild(task);
      // The node runs with the runtime's flags (core/runtime_flags.ts).
      assert.ok((await cmdline(node)).includes(V8_FLAGS_ARG));
      kill(-task.pid, "SIGTERM");
      await sleep(LATE_COPY_MS);
      kill(node, "SIGTERM");
      const status = await task.exit();
      assert.doesNotMatch(task.output, /second SIG/);
      assert.equal(status.code, 0, task.output);
      assert.ok(task.records.some(msg("shutting down")), task.output);
      assert.equal(task.records.at(-1)?.msg, "stopped", task.output);
    }),
);

/** `pid` and every process below it. */
async function tree(pid: number): Promise<number[]> {
  const below = await Promise.all((await childPids(pid)).map(tree));
  return [pid, ...below.flat()];
}

Deno.test({
  name:
    "signals: one Ctrl-C under 'deno task dev' in a terminal stops the node and the watcher, exit 0",
  ignore: !HAS_PTY,
  fn: () =>
    withDir(async (dir) => {
      await using task = await startTask("dev", nodeArgs(dir), {
        terminal: true,
      });
      await nodeUrl(task);
      const pids = await tree(task.pid);
      await press(task, await taskChild(task));
      const status = await task.exit();
      assert.doesNotMatch(task.output, /second SIG/);
      assert.equal(status.code, 0, task.output);
      assert.equal(task.records.at(-1)?.msg, "stopped", task.output);
      assert.deepEqual(await running(pids), [], "every process is gone");
    }),
});

Deno.test(
  "signals: SIGTERM to the process group of 'deno task dev' stops the node and the watcher, exit 0",
  () =>
    withDir(async (dir) => {
      await using task = await startTask("dev", nodeArgs(dir), {
        terminal: false,
      });
      await nodeUrl(task);
      const pids = await tree(task.pid);
      const supervisor = await taskChild(task);
      // The watched node runs with the runtime's flags (core/runtime_flags.ts).
      const lines = await Promise.all(
        pids.map((p) => cmdline(p).catch(() => [] as string[])),
      );
      const served = lines.filter((l) => l.includes("serve"));
      assert.ok(served.length > 0, JSON.stringify(lines));
      for (const l of served) assert.ok(l.includes(V8_FLAGS_ARG), l.join(" "));
      kill(-task.pid, "SIGTERM");
      await sleep(LATE_COPY_MS);
      kill(supervisor, "SIGTERM");
      const status = await task.exit(20_000);
      assert.doesNotMatch(task.output, /second SIG/);
      assert.equal(status.code, 0, task.output);
      assert.ok(task.records.some(msg("shutting down")), task.output);
      assert.equal(task.records.at(-1)?.msg, "stopped", task.output);
      assert.deepEqual(await running(pids), [], "every process is gone");
    }),
);

Deno.test(
  "signals: 'deno task dev' hot swaps a drop-in plugin when its file changes, without restarting the node",
  () =>
    withDir(async (dir) => {
      const plugin = (version: string) =>
        `export default {
  manifest: { name: "devswap", version: "${version}", kind: "extension", api: "^1", provides: [] },
  setup(ctx) {
    ctx.http.get("/version", (c) => c.json({ version: "${version}" }));
    return Promise.resolve({ stop: () => Promise.resolve() });
  },
};
`;
      const file = join(dir, "plugins.d", "devswap.ts");
      await Deno.mkdir(join(dir, "plugins.d"), { recursive: true });
      await Deno.writeTextFile(file, plugin("1.0.0"));
      await using task = await startTask("dev", nodeArgs(dir), {
        terminal: false,
      });
      const url = await nodeUrl(task);
      const version = async () =>
        (await (await fetch(`${url}/plugins/devswap/version`)).json()).version;
      assert.equal(await version(), "1.0.0");
      await Deno.writeTextFile(file, plugin("2.0.0"));
      await task.waitForLog(
        msg("plugin devswap reloaded: 1.0.0 -> 2.0.0"),
        "the reload",
        { timeoutMs: 15_000 },
      );
      assert.equal(await version(), "2.0.0");
      // A broken save is refused; the last good version keeps serving.
      await Deno.writeTextFile(file, "export default {{{");
      await task.waitForLog(
        (r) => r.level === "error" && /devswap changed/.test(r.msg),
        "the refusal",
        { timeoutMs: 15_000 },
      );
      assert.equal(await version(), "2.0.0");
      assert.ok(
        !task.records.some(msg("stopped")),
        `the node restarted:\n${task.output}`,
      );
      kill(-task.pid, "SIGTERM");
      assert.equal((await task.exit(20_000)).code, 0, task.output);
    }),
);

Deno.test({
  name:
    "signals: one Ctrl-C under 'deno task cluster' returns only after every node has exited, exit 0",
  ignore: !HAS_PTY,
  fn: () =>
    withDir(async (dir) => {
      const port = freePortRange(2, { alsoAbove: 1000 });
      let nodes: number[] = [];
      await using task = await startTask("cluster", [
        "--nodes",
        "2",
        "--port",
        String(port),
        "--data-dir",
        dir,
        "--",
        ...SLOW,
      ], { terminal: true, alsoKill: () => nodes });
      const url = await nodeUrl(task);
      await nodeUrl(task, 2);
      nodes = [...task.output.matchAll(/node-\d=http:\/\/\S+ pid (\d+)/g)]
        .map((m) => Number(m[1]));
      assert.equal(nodes.length, 2, task.output);
      // A node that takes a while to drain.
      const inflight = fetch(`${url}/plugins/slow/sleep/1500`).then(
        (res) => res.status,
        (err: Error) => err.message,
      );
      await task.waitForLog(msg("slow request started"), "the slow request");
      await press(task, await taskChild(task));
      const status = await task.exit();
      const left = await running(nodes);
      assert.deepEqual(left, [], "no node outlives the command");
      assert.doesNotMatch(task.output, /second SIG/);
      assert.equal(status.code, 0, task.output);
      assert.equal(
        task.output.match(/stopping every node/g)?.length,
        1,
        task.output,
      );
      assert.equal(await inflight, 200);
      for (const id of ["node-1", "node-2"]) {
        assert.match(
          task.output,
          new RegExp(`${id} \\(pid \\d+\\) exited with code 0`),
        );
      }
    }),
});
