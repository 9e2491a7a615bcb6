/**
 * Runs every benchmark in bench/ one after another (or, with `--dir peers`,
 * every peer benchmark in bench/peers/: `deno task bench:peers`).
 *
 *   deno run --allow-read --allow-run=deno bench/run_all.ts [--quick] [--dir peers]
 *
 * Runs each `bench/*.ts` not starting with `_` (and not this file) as
 * `deno run -A bench/<file> [--quick]`, streaming its output. A benchmark
 * fails when it exits non-zero, runs past the time limit, or does not print
 * a result object (`bench`, `metric`, `unit`, `value`, `baseline`, `ratio`)
 * as its last stdout line. Prints a summary on stderr and exits 1 if any
 * failed.
 *
 * @module
 */
import { V8_FLAGS_ARG } from "../core/runtime_flags.ts";
import { fileURLToPath } from "node:url";

const quick = Deno.args.includes("--quick");
/** Generous per-benchmark limit; each is meant to finish in under 60 s. */
const LIMIT_MS = 180_000;
const dirIndex = Deno.args.indexOf("--dir");
const benchDir = new URL(
  dirIndex >= 0 ? `./${Deno.args[dirIndex + 1]}/` : ".",
  import.meta.url,
);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function err(line: string): void {
  Deno.stderr.writeSync(encoder.encode(line + "\n"));
}

interface Outcome {
  file: string;
  ok: boolean;
  seconds: number;
  why?: string;
  result?: Record<string, unknown>;
}

function checkResult(line: string): Record<string, unknown> | string {
  let obj: unknown;
  try {
    obj = JSON.parse(line);
  } catch {
    return `last stdout line is not JSON: ${line.slice(0, 120)}`;
  }
  if (obj === null || typeof obj !== "object" || Array.isArray(obj)) {
    return "last stdout line is not a JSON object";
  }
  const r = obj as Record<string, unknown>;
  for (const k of ["bench", "metric", "unit"]) {
    if (typeof r[k] !== "string") return `result lacks string '${k}'`;
  }
  for (const k of ["value", "ratio"]) {
    if (typeof r[k] !== "number") return `result lacks number '${k}'`;
  }
  const b = r.baseline as Record<string, unknown> | undefined;
  if (typeof b?.name !== "string" || typeof b?.value !== "number") {
    return "result lacks baseline {name, value}";
  }
  return r;
}

async function runOne(file: string): Promise<Outcome> {
  const path = fileURLToPath(new URL(file, benchDir));
  // Each bench runs with the node's runtime flags (core/runtime_flags.ts).
  const args = [
    "run",
    "-A",
    V8_FLAGS_ARG,
    path,
    ...(quick ? ["--quick"] : []),
  ];
  err(`\n=== deno ${args.join(" ")}`);
  const t0 = performance.now();
  const child = new Deno.Command("deno", {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGTERM");
    } catch {
      // already exited
    }
  }, LIMIT_MS);
  // Stream stdout through while remembering its last non-empty line.
  let last = "";
  let pending = "";
  for await (const chunk of child.stdout) {
    await Deno.stdout.write(chunk);
    pending += decoder.decode(chunk, { stream: true });
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const l of lines) if (l.trim()) last = l.trim();
  }
  if (pending.trim()) last = pending.trim();
  const status = await child.status;
  clearTimeout(timer);
  const seconds = (performance.now() - t0) / 1000;
  if (timedOut) {
    return { file, ok: false, seconds, why: `killed after ${LIMIT_MS} ms` };
  }
  if (!status.success) {
    return { file, ok: false, seconds, why: `exit code ${status.code}` };
  }
  const result = checkResult(last);
  if (typeof result === "string") {
    return { file, ok: false, seconds, why: result };
  }
  return { file, ok: true, seconds, result };
}

const files: string[] = [];
for await (const entry of Deno.readDir(benchDir)) {
  if (
    entry.isFile && entry.name.endsWith(".ts") && !entry.name.startsWith("_") &&
    entry.name !== "run_all.ts"
  ) files.push(entry.name);
}
files.sort();

const outcomes: Outcome[] = [];
for (const file of files) outcomes.push(await runOne(file));

err("\n=== summary");
for (const o of outcomes) {
  const r = o.result;
  const detail = r
    ? `${r.metric} ${r.value} ${r.unit} vs ${
      (r.baseline as { value: number }).value
    } (${(r.baseline as { name: string }).name}), ratio ${r.ratio}`
    : o.why;
  err(
    `${o.ok ? "ok  " : "FAIL"} ${o.file} (${
      o.seconds.toFixed(1)
    } s): ${detail}`,
  );
}
const failed = outcomes.filter((o) => !o.ok).length;
if (files.length === 0) err("no benchmarks found");
if (failed > 0) {
  err(`${failed} of ${outcomes.length} benchmarks failed`);
  Deno.exit(1);
}
