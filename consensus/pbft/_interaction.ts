/**
 * A small scripted-interaction language for PBFT tests, after Raft's
 * `_interaction.ts` (etcd-io/raft's datadriven `testdata/*.txt`): each block
 * is a command, a `----` line and the expected output, separated by blank
 * lines; `#` lines are comments. {@linkcode runScript} executes a script and
 * returns it with fresh outputs, so a test compares it with the file (and
 * `REWRITE=1` writes it back).
 *
 * Commands: `replicas N [k=K] [window=L] [batch=B] [vc=T]` (first),
 * `request ID CLIENT T` (a client request arriving at replica ID),
 * `process-ready [ID...]`, `deliver-msgs [ID...] [type=T]`,
 * `drop-msgs [type=T] [to=ID]`, `stabilize`, `tick ID... [n=N]`,
 * `crash ID`, `restart ID`, `status`.
 *
 * @module
 */
import { clientRequest, TestCluster } from "./_cluster.ts";
import type { PbftMessage, PbftReady, PbftRecord } from "./types.ts";

const short = (d: string) => d.slice(0, 6);

/**
 * One message on one line.
 *
 * @example Usage
 * ```ts
 * import { fmtMessage } from "./_interaction.ts";
 * fmtMessage({ from: "1", to: "2", mac: "", payload: { type: "prepare", view: 0, seq: 1, digest: "abcdef12" } });
 * // "1->2 prepare v=0 n=1 d=abcdef"
 * ```
 */
export function fmtMessage(m: PbftMessage): string {
  const p = m.payload;
  const head = `${m.from}->${m.to} ${p.type}`;
  switch (p.type) {
    case "pre-prepare":
      return `${head} v=${p.view} n=${p.seq} d=${short(p.digest)} batch=[${
        p.batch.map((r) => `${r.client}:${r.t}`).join(",")
      }]`;
    case "prepare":
    case "commit":
      return `${head} v=${p.view} n=${p.seq} d=${short(p.digest)}`;
    case "checkpoint":
      return `${head} n=${p.seq} d=${short(p.digest)}`;
    case "view-change":
      return `${head} v=${p.view} stable=${p.stable.seq} P=[${
        p.prepared.map((e) => `${e.seq}@${e.view}:${short(e.digest)}`).join(
          ",",
        )
      }] Q=${p.prePrepared.length}`;
    case "new-view":
      return `${head} v=${p.view} V=[${
        p.viewChanges.map((v) => v.replica).join(",")
      }]`;
    case "request":
      return `${head} [${
        p.requests.map((r) => `${r.client}:${r.t}`).join(",")
      }]`;
    case "fetch-state":
      return `${head} n=${p.seq}`;
    case "fetch-batch":
      return `${head} n=${p.seq} d=${short(p.digest)}`;
    case "batch":
      return `${head} n=${p.seq} d=${short(p.digest)} batch=[${
        p.batch.map((r) => `${r.client}:${r.t}`).join(",")
      }]`;
    case "status":
      return `${head} v=${p.view} executed=${p.executed}`;
    case "state":
      return `${head} n=${p.stable.seq}`;
    case "reply":
      return `${head} [${
        p.results.map((r) => `${r.client}:${r.t}`).join(",")
      }]`;
  }
}

function fmtRecord(r: PbftRecord): string {
  switch (r.k) {
    case "view":
      return `view v=${r.view}${r.changing ? " changing" : ""}`;
    case "q":
    case "p":
    case "exec":
      return `${r.k} n=${r.seq} v=${r.view} d=${short(r.digest)}`;
    case "stable":
      return `stable n=${r.seq} proof=${r.proof.length}${
        r.data === undefined ? " (state to fetch)" : ""
      }`;
  }
}

function fmtReady(id: string, rd: PbftReady): string[] {
  const out = [`> ${id} handling Ready`];
  for (const m of rd.early) out.push(`  Send early ${fmtMessage(m)}`);
  if (rd.compact) {
    out.push(`  Compact [${rd.compact.map(fmtRecord).join("; ")}]`);
  }
  for (const r of rd.persist) out.push(`  Persist ${fmtRecord(r)}`);
  for (const m of rd.messages) out.push(`  Send ${fmtMessage(m)}`);
  if (rd.snapshot) out.push(`  Install state n=${rd.snapshot.seq}`);
  for (const e of rd.executed) {
    out.push(
      `  Execute n=${e.seq} v=${e.view} [${
        e.batch.map((r) => `${r.client}:${r.t}`).join(",")
      }]${e.checkpoint ? " checkpoint" : ""}`,
    );
  }
  return out;
}

/**
 * Runs one script and returns it with every output recomputed.
 *
 * @example Usage
 * ```ts
 * import { runScript } from "./_interaction.ts";
 * const out = runScript("replicas 4\n----\n\nstatus\n----\n");
 * out.includes("1: view=0 primary=1"); // true
 * ```
 */
export function runScript(text: string): string {
  const blocks = text.split(/\n\n(?=[^\n])/);
  let c: TestCluster | undefined;
  const out: string[] = [];
  for (const block of blocks) {
    const lines = block.split("\n");
    const sep = lines.indexOf("----");
    const cmdLines = sep < 0 ? lines : lines.slice(0, sep);
    const comments = cmdLines.filter((l) => l.startsWith("#"));
    const cmd = cmdLines.filter((l) => !l.startsWith("#") && l.trim())[0];
    if (!cmd) {
      out.push(block);
      continue;
    }
    const [name, ...args] = cmd.trim().split(/\s+/);
    const kv = Object.fromEntries(
      args.filter((a) => a.includes("=")).map((a) => a.split("=")),
    );
    const pos = args.filter((a) => !a.includes("="));
    const result: string[] = [];
    const cluster = () => {
      if (!c) throw new Error(`'${cmd}' before 'replicas N'`);
      return c;
    };
    const process = (ids: string[]) => {
      for (const id of ids) {
        const r = cluster().replica(id);
        if (r.down || !r.node.hasReady()) continue;
        // Show the Ready, then let the cluster handle it the same way.
        const rd = r.node.ready();
        result.push(...fmtReady(id, rd));
        if (rd.compact) r.records = [...rd.compact];
        r.records.push(...rd.persist);
        cluster().inflight.push(...rd.early, ...rd.messages);
        if (rd.snapshot) r.state = rd.snapshot.data;
        for (const e of rd.executed) {
          r.executed.push(e);
          r.state += `${e.seq}:${e.digest};`;
          if (e.checkpoint) r.node.checkpoint(e.seq, r.state);
        }
        if (r.node.hasReady()) process([id]);
      }
    };
    const deliver = (ids: string[], type?: string) => {
      const got = cluster().deliver((m) =>
        (ids.length === 0 || ids.includes(m.to)) &&
        (type === undefined || m.payload.type === type)
      );
      const byTo = new Map<string, string[]>();
      for (const m of got) {
        byTo.set(m.to, [...(byTo.get(m.to) ?? []), fmtMessage(m)]);
      }
      for (const [to, ms] of byTo) {
        result.push(`> ${to} receiving messages`, ...ms.map((m) => `  ${m}`));
      }
    };
    switch (name) {
      case "replicas":
        c = new TestCluster(Number(pos[0]), {
          checkpointInterval: Number(kv.k ?? 4),
          window: kv.window ? Number(kv.window) : undefined,
          maxBatch: Number(kv.batch ?? 64),
          viewChangeTicks: Number(kv.vc ?? 4),
          retransmitTicks: 100,
        });
        result.push("ok");
        break;
      case "request":
        cluster().get(pos[0]).request(
          clientRequest(pos[1], Number(pos[2]), `${pos[1]}:${pos[2]}`),
        );
        result.push("ok");
        break;
      case "process-ready":
        process(pos.length ? pos : cluster().ids);
        break;
      case "deliver-msgs":
        deliver(pos, kv.type);
        break;
      case "drop-msgs": {
        const before = cluster().inflight.length;
        cluster().drop((m) =>
          (kv.type === undefined || m.payload.type === kv.type) &&
          (kv.to === undefined || m.to === kv.to)
        );
        result.push(`dropped ${before - cluster().inflight.length}`);
        break;
      }
      case "stabilize":
        for (let i = 0; i < 100; i++) {
          const n = result.length;
          process(cluster().ids);
          if (cluster().inflight.length === 0 && result.length === n) break;
          deliver([]);
        }
        break;
      case "tick":
        for (let i = 0; i < Number(kv.n ?? 1); i++) {
          for (const id of pos) cluster().get(id).tick();
        }
        result.push("ok");
        break;
      case "crash":
        cluster().crash(pos[0]);
        result.push("ok");
        break;
      case "restart":
        cluster().restart(pos[0]);
        result.push("ok");
        break;
      case "status":
        for (const id of cluster().ids) {
          const s = cluster().get(id).status();
          const down = cluster().replica(id).down ? " down" : "";
          result.push(
            `${id}: view=${s.view} primary=${s.primary}${
              s.changing ? " changing" : ""
            } executed=${s.executed} stable=${s.stable} pending=${s.pending}${down}`,
          );
        }
        break;
      default:
        throw new Error(`Unknown command '${name}' in '${cmd}'`);
    }
    out.push([...comments, cmd, "----", ...result].join("\n"));
  }
  return out.join("\n\n").trimEnd() + "\n";
}
