/**
 * Summarizes the V8 CPU profiles (`deno run --cpu-prof`) in a folder: the
 * hottest frames by self time and, for the project's own functions, by
 * total time (the frame and everything it called), as shares of the busy
 * (non-idle) samples and, given the CPU the process spent per operation,
 * as µs per operation. Used by `bench/gateway.ts --profile DIR`.
 *
 *   deno run -A bench/_gateway_profile.ts DIR [--top 25] [--us-per-op 60]
 *
 * @module
 */
import { flag, numFlag } from "./_util.ts";

interface ProfileNode {
  id: number;
  callFrame: {
    functionName: string;
    url: string;
    lineNumber: number;
  };
  hitCount?: number;
  children?: number[];
}

interface Profile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
}

/** A project file's URL; the first group is its top folder. */
const PROJECT_URL =
  /^file:\/\/.*?\/(core|transports|bench|gateway|sdk|plugins|consensus)\//;

function frameName(n: ProfileNode): string {
  const f = n.callFrame;
  const file = f.url.replace(PROJECT_URL, "$1/")
    .replace(/^.*\/(ext|node)\//, "$1:")
    .replace(/^https?:\/\/[^/]+\//, "");
  return `${f.functionName || "(anonymous)"}${
    file ? ` ${file}:${f.lineNumber + 1}` : ""
  }`;
}

/**
 * Lines like `12.3%  self  op_kv_atomic_write ext:kv/01_db.ts:123`, the
 * top `top` by self time, then the top project frames by total time; with
 * `usPerOp` (the process's CPU per operation, µs), each line also gives its
 * share of that in µs (`7.4 µs`).
 *
 * @example Usage
 * ```ts ignore
 * for (const line of await summarizeProfile("/tmp/prof/node", 25, 60)) console.log(line);
 * ```
 */
export async function summarizeProfile(
  dir: string,
  top = 25,
  usPerOp?: number,
): Promise<string[]> {
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let busy = 0;
  let all = 0;
  let files = 0;
  for await (const entry of Deno.readDir(dir)) {
    if (!entry.name.endsWith(".cpuprofile")) continue;
    files++;
    const p: Profile = JSON.parse(
      await Deno.readTextFile(`${dir}/${entry.name}`),
    );
    const byId = new Map(p.nodes.map((n) => [n.id, n]));
    const parent = new Map<number, number>();
    for (const n of p.nodes) {
      for (const c of n.children ?? []) parent.set(c, n.id);
    }
    const hits = new Map<number, number>();
    for (const s of p.samples) hits.set(s, (hits.get(s) ?? 0) + 1);
    for (const [id, count] of hits) {
      const n = byId.get(id)!;
      all += count;
      const name = frameName(n);
      if (name.startsWith("(idle)")) continue;
      busy += count;
      self.set(name, (self.get(name) ?? 0) + count);
      // Each distinct frame on the stack gets the sample once.
      const seen = new Set<string>();
      for (let cur: number | undefined = id; cur !== undefined;) {
        const f = frameName(byId.get(cur)!);
        if (!seen.has(f)) {
          seen.add(f);
          total.set(f, (total.get(f) ?? 0) + count);
        }
        cur = parent.get(cur);
      }
    }
  }
  if (files === 0) return [`no .cpuprofile in ${dir}`];
  const pct = (n: number) =>
    `${(100 * n / busy).toFixed(1).padStart(5)}%${
      usPerOp ? ` ${(usPerOp * n / busy).toFixed(1).padStart(5)} µs` : ""
    }`;
  const lines = [
    `${files} profile(s); busy ${
      (100 * busy / all).toFixed(1)
    }% of ${all} samples; shares below are of busy samples`,
  ];
  for (const [name, n] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    lines.push(`${pct(n)}  self   ${name}`);
  }
  const project = [...total].filter(([name]) =>
    / (core|transports|gateway|sdk|plugins)\//.test(name)
  ).sort((a, b) => b[1] - a[1]).slice(0, top);
  for (const [name, n] of project) lines.push(`${pct(n)}  total  ${name}`);
  return lines;
}

if (import.meta.main) {
  const dir = Deno.args.find((a) => !a.startsWith("--")) ?? flag("dir");
  if (!dir) throw new Error("usage: _gateway_profile.ts DIR [--top 25]");
  const usPerOp = flag("us-per-op");
  for (
    const line of await summarizeProfile(
      dir,
      numFlag("top", 25),
      usPerOp ? Number(usPerOp) : undefined,
    )
  ) {
    console.log(line);
  }
}
