/**
 * Runs `deno task NAME ARGS` in the repository root the way a person does:
 * in a pseudo-terminal (util-linux `script`), where Ctrl-C is the terminal
 * sending SIGINT to the whole foreground process group, or as the leader of
 * a process group of its own, which `kill %1` signals as a whole.
 *
 * @module
 */
import { deadline, type LogLine, REPO } from "./_process.ts";

const decoder = new TextDecoder();

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const out = await new Deno.Command(cmd, { args, stderr: "null" }).output();
    return decoder.decode(out.stdout);
  } catch {
    return ""; // not installed
  }
}

/** Whether util-linux `script` is here to give a task a pseudo-terminal. */
export const HAS_PTY: boolean = Deno.build.os === "linux" &&
  (await run("script", ["--version"])).includes("util-linux");

/** The child pids of `pid` (`pgrep -P`). */
export async function childPids(pid: number): Promise<number[]> {
  return (await run("pgrep", ["-P", String(pid)])).split("\n")
    .filter(Boolean).map(Number);
}

/** The command line of process `pid`, split at spaces (from `ps`). */
export async function cmdline(pid: number): Promise<string[]> {
  return (await run("ps", ["-o", "args=", "-p", String(pid)])).trim()
    .split(/\s+/).filter(Boolean);
}

/** Those of `pids` that are still running (a zombie counts as exited). */
export async function running(pids: number[]): Promise<number[]> {
  if (pids.length === 0) return [];
  const out = await run("ps", ["-o", "pid=,stat=", "-p", pids.join(",")]);
  return out.split("\n").map((l) => l.trim().split(/\s+/))
    .filter(([pid, stat]) => pid && !stat?.startsWith("Z")).map(([pid]) =>
      Number(pid)
    );
}

/** Sends `signal` to `pid` (negative: a process group) unless it is gone. */
export function kill(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(pid, signal);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** A running `deno task` (see {@linkcode startTask}). */
export interface TaskRun extends AsyncDisposable {
  /** `deno task`'s pid, also its process group id. */
  readonly pid: number;
  /** Everything it printed so far, stdout and stderr mixed, `\r` removed. */
  readonly output: string;
  /** The JSON log lines in {@linkcode output}. */
  readonly records: LogLine[];
  /** Its exit status (for a terminal: that of `script -e`, the same code). */
  readonly status: Promise<Deno.CommandStatus>;
  readonly exited: boolean;
  /** Types Ctrl-C into the terminal (terminal runs only). */
  ctrlC(): Promise<void>;
  /** Resolves with the `n`th (1-based) log line matching `pred`. */
  waitForLog(
    pred: (line: LogLine) => boolean,
    what: string,
    options?: { n?: number; timeoutMs?: number },
  ): Promise<LogLine>;
  /** Waits for the exit; rejects after `timeoutMs`. */
  exit(timeoutMs?: number): Promise<Deno.CommandStatus>;
}

/** Options of {@linkcode startTask}. */
export interface TaskOptions {
  /** In a pseudo-terminal (needs {@linkcode HAS_PTY}), else in its own process group. */
  terminal: boolean;
  /** Pids to SIGKILL on disposal too (processes that left the group). */
  alsoKill?: () => number[];
}

/**
 * Starts `deno task NAME ARGS` in the repository root with this Deno,
 * without the PLEXUS_* environment of the tests. Disposing kills its process
 * group (and `alsoKill`) and waits for the exit.
 */
export async function startTask(
  task: string,
  args: string[],
  options: TaskOptions,
): Promise<TaskRun> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const [k, v] of Object.entries(Deno.env.toObject())) {
    if (!k.startsWith("PLEXUS_")) env[k] ??= v;
  }
  const quote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;
  const argv = [Deno.execPath(), "task", task, ...args];
  const child = options.terminal
    ? new Deno.Command("script", {
      args: ["-qfec", `exec ${argv.map(quote).join(" ")}`, "/dev/null"],
      cwd: REPO,
      env,
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn()
    : new Deno.Command(argv[0], {
      args: argv.slice(1),
      cwd: REPO,
      env,
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true, // its own session and process group
    }).spawn();
  const keyboard = options.terminal ? child.stdin.getWriter() : undefined;
  let output = "";
  const records: LogLine[] = [];
  let rest = "";
  const take = (text: string) => {
    // The terminal adds \r, echoes ^C and the watcher clears the screen.
    // deno-lint-ignore no-control-regex
    text = text.replaceAll("\r", "").replaceAll(/\x1b\[[0-9;]*[A-Za-z]/g, "");
    output += text;
    rest += text;
    let nl: number;
    while ((nl = rest.indexOf("\n")) >= 0) {
      const line = rest.slice(0, nl).replace(/^(\^C)+/, "");
      rest = rest.slice(nl + 1);
      if (!line.startsWith("{")) continue;
      try {
        records.push(JSON.parse(line));
      } catch { /* not a log line */ }
    }
  };
  const read = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      take(chunk);
    }
  };
  const reading = Promise.all([read(child.stdout), read(child.stderr)]);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    return s;
  });

  // In a terminal, `deno task` is script's child (exec'd by its shell).
  let pid = child.pid;
  if (options.terminal) {
    const end = Date.now() + 10_000;
    while (true) {
      const [p] = await childPids(child.pid);
      if (p) {
        pid = p;
        break;
      }
      if (exited || Date.now() > end) {
        throw new Error(`no 'deno task' under script; output:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  const run: TaskRun = {
    pid,
    get output() {
      return output;
    },
    records,
    status,
    get exited() {
      return exited;
    },
    async ctrlC() {
      if (!keyboard) throw new Error("ctrlC needs a terminal run");
      await keyboard.write(new Uint8Array([3]));
    },
    async waitForLog(pred, what, { n = 1, timeoutMs = 60_000 } = {}) {
      const end = Date.now() + timeoutMs;
      while (true) {
        const hit = records.filter(pred)[n - 1];
        if (hit) return hit;
        if (exited || Date.now() > end) {
          throw new Error(
            `${
              exited ? "exited" : `timed out after ${timeoutMs} ms`
            } waiting for ${what}; output:\n${output}`,
          );
        }
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    async exit(timeoutMs = 30_000) {
      const s = await deadline(status, timeoutMs, `'deno task ${task}' to exit`)
        .catch((err) => {
          throw new Error(`${err.message}; output:\n${output}`);
        });
      await deadline(reading, 5_000, "its output to close");
      return s;
    },
    async [Symbol.asyncDispose]() {
      const others = options.alsoKill?.() ?? [];
      for (const p of others) kill(p, "SIGKILL");
      // Gone before the caller removes the folder they write to.
      for (let i = 0; i < 100 && (await running(others)).length; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      if (!exited) {
        kill(-pid, "SIGKILL");
        kill(child.pid, "SIGKILL");
      }
      await status;
      await keyboard?.close().catch(() => {});
      await deadline(reading, 5_000, "its output to close").catch(() => {});
    },
  };
  return run;
}
