/**
 * A small scripted-interaction language for Raft tests, after
 * etcd-io/raft's datadriven `testdata/*.txt`: each block is a command, a
 * `----` line and the expected output, separated by blank lines; `#` lines
 * are comments. {@linkcode runScript} executes a script and returns it with
 * fresh outputs, so a test compares it with the file (and `REWRITE=1`
 * writes it back).
 *
 * Commands: `add-nodes N` (the first call bootstraps voters 1..N; later ones
 * add nodes that join with no configuration), `campaign ID`,
 * `propose ID DATA`, `conf-change add|remove NODE [via=ID]`,
 * `transfer-leadership from=ID to=ID`, `read-index ID CTX`,
 * `process-ready [ID...]`, `deliver-msgs [ID...]`, `drop-msgs [ID...]`,
 * `stabilize`,
 * `tick ID [N]`, `tick-election ID`, `tick-heartbeat ID`,
 * `partition A B`, `cut FROM TO` (one way), `isolate ID`, `heal`,
 * `crash ID`, `restart ID`, `compact ID`, `raft-state`, `raft-log ID`.
 *
 * @module
 */
import { TestCluster } from "./_network.ts";
import type { Entry, Message, Ready } from "./types.ts";

function fmtEntry(e: Entry): string {
  return `${e.term}/${e.index}${e.type === "conf" ? " conf" : ""} ${
    JSON.stringify(e.data)
  }`;
}

/**
 * One message on one line.
 *
 * @example Usage
 * ```ts
 * import { fmtMessage } from "./_interaction.ts";
 * fmtMessage({ type: "heartbeat", from: "1", to: "2", term: 3, commit: 4 });
 * // "1->2 heartbeat term=3 commit=4"
 * ```
 */
export function fmtMessage(m: Message): string {
  let s = `${m.from}->${m.to} ${m.type} term=${m.term}`;
  if (m.logTerm !== undefined) s += ` logTerm=${m.logTerm}`;
  if (m.index !== undefined) s += ` index=${m.index}`;
  if (m.commit !== undefined) s += ` commit=${m.commit}`;
  if (m.reject) s += " reject";
  if (m.rejectHint !== undefined) s += ` rejectHint=${m.rejectHint}`;
  if (m.entries) s += ` entries=[${m.entries.map(fmtEntry).join(", ")}]`;
  if (m.snapshot) {
    s += ` snapshot=${m.snapshot.term}/${m.snapshot.index} voters=${
      m.snapshot.voters.join(",")
    }`;
  }
  if (m.context) s += ` context=${m.context}`;
  if (m.transferee) s += ` transferee=${m.transferee}`;
  return s;
}

function fmtReady(id: string, rd: Ready): string[] {
  const out = [`> ${id} handling Ready`];
  if (rd.hardState) {
    const h = rd.hardState;
    out.push(
      `  HardState term=${h.term} vote=${h.vote || "-"} commit=${h.commit}`,
    );
  }
  if (rd.snapshot) {
    out.push(`  Snapshot ${rd.snapshot.term}/${rd.snapshot.index}`);
  }
  for (const e of rd.entries) out.push(`  Entry ${fmtEntry(e)}`);
  for (const m of rd.messages) out.push(`  Send ${fmtMessage(m)}`);
  for (const e of rd.committed) out.push(`  Apply ${fmtEntry(e)}`);
  for (const r of rd.readStates) {
    out.push(`  ReadState index=${r.index} context=${r.context}`);
  }
  return out;
}

/**
 * Runs one script and returns it with every output recomputed.
 *
 * @example Usage
 * ```ts
 * import { runScript } from "./_interaction.ts";
 * runScript("add-nodes 1\n----\n").split("\n")[2];
 * // "1: follower term=0 vote=- lead=- commit=0 applied=0 last=0 voters=1"
 * ```
 */
export function runScript(text: string): string {
  let cluster: TestCluster | undefined;
  const c = () => {
    if (!cluster) throw new Error("add-nodes first");
    return cluster;
  };
  const bootstrap: string[] = [];
  const out: string[] = [];
  const lines = text.split("\n");
  let i = 0;

  const process = (ids: string[]): string[] => {
    const res: string[] = [];
    for (const id of ids) {
      const p = c().peers.get(id)!;
      if (p.down || !p.node.hasReady()) continue;
      const rd = p.node.ready();
      res.push(...fmtReady(id, rd));
      p.storage.save(rd);
      c().inflight.push(...rd.messages);
      if (rd.snapshot) {
        p.applied = p.applied.filter((e) => e.index <= rd.snapshot!.index);
      }
      p.applied.push(...rd.committed);
      p.readStates.push(...rd.readStates);
      p.node.advance(rd);
    }
    return res;
  };

  const deliver = (ids: string[]): string[] => {
    const res: string[] = [];
    for (const id of ids) {
      const got = c().deliver((m) => m.to === id);
      if (got.length === 0) continue;
      res.push(`> ${id} receiving messages`);
      for (const m of got) res.push(`  ${fmtMessage(m)}`);
    }
    return res;
  };

  const run = (cmd: string): string[] => {
    const [name, ...args] = cmd.trim().split(/\s+/);
    const kv = Object.fromEntries(
      args.filter((a) => a.includes("=")).map((a) => a.split("=")),
    );
    const all = () => [...c().peers.keys()];
    switch (name) {
      case "add-nodes": {
        const n = Number(args[0]);
        const start = cluster ? cluster.peers.size : 0;
        const ids = Array.from({ length: n }, (_, k) => String(start + k + 1));
        if (!cluster) {
          bootstrap.push(...ids);
          cluster = new TestCluster(ids);
        } else for (const id of ids) cluster.add(id, []);
        return ids.map((id) => `${id}: ${state(id)}`);
      }
      case "campaign":
        c().get(args[0]).campaign();
        return ["ok"];
      case "propose":
        return [
          c().get(args[0]).propose(args.slice(1).join(" ")) ? "ok" : "dropped",
        ];
      case "conf-change": {
        const via = kv.via ?? c().leader()?.id;
        if (!via) return ["no leader"];
        const type = args[0] as "add" | "remove";
        return [
          c().get(via).proposeConfChange({ type, node: args[1] })
            ? "ok"
            : "dropped",
        ];
      }
      case "transfer-leadership":
        c().get(kv.from).transferLeader(kv.to);
        return ["ok"];
      case "read-index":
        return [c().get(args[0]).readIndex(args[1]) ? "ok" : "dropped"];
      case "process-ready":
        return process(args.length ? args : all());
      case "deliver-msgs":
        return deliver(args.length ? args : all());
      case "drop-msgs": {
        const ids = args.length ? args : all();
        const n = c().inflight.length;
        c().inflight = c().inflight.filter((m) => !ids.includes(m.to));
        return [`dropped ${n - c().inflight.length}`];
      }
      case "stabilize": {
        const res: string[] = [];
        for (let round = 0; round < 100; round++) {
          const r = process(all());
          const d = deliver(all());
          if (r.length === 0 && d.length === 0) {
            c().inflight = [];
            return res.length ? res : ["(nothing to do)"];
          }
          res.push(...r, ...d);
        }
        throw new Error("stabilize did not converge in 100 rounds");
      }
      case "tick":
        c().tick(args[0], Number(args[1] ?? 1));
        return ["ok"];
      case "tick-election":
        c().tick(args[0], c().get(args[0]).electionTick);
        return ["ok"];
      case "tick-heartbeat":
        c().tick(args[0], c().get(args[0]).heartbeatTick);
        return ["ok"];
      case "partition":
        c().partition(args[0], args[1]);
        return ["ok"];
      case "cut":
        c().cut.add(`${args[0]}->${args[1]}`);
        return ["ok"];
      case "isolate":
        c().isolate(args[0]);
        return ["ok"];
      case "heal":
        c().heal();
        return ["ok"];
      case "crash":
        c().crash(args[0]);
        return ["ok"];
      case "restart":
        c().restart(args[0], bootstrap.includes(args[0]) ? bootstrap : []);
        return [`${args[0]}: ${state(args[0])}`];
      case "compact": {
        const p = c().peers.get(args[0])!;
        const snap = p.node.compact(
          p.node.log.applied,
          JSON.stringify(p.applied.map((e) => e.data)),
        );
        p.storage.compact(snap);
        return [
          `snapshot ${snap.term}/${snap.index} voters=${snap.voters.join(",")}`,
        ];
      }
      case "raft-state":
        return all().map((id) => `${id}: ${state(id)}`);
      case "raft-log": {
        const n = c().get(args[0]);
        const res: string[] = [];
        if (n.log.snapIndex > 0) {
          res.push(`snapshot ${n.log.snapTerm}/${n.log.snapIndex}`);
        }
        for (let k = n.log.firstIndex(); k <= n.log.lastIndex(); k++) {
          res.push(fmtEntry(n.log.entry(k)));
        }
        return res.length ? res : ["(empty)"];
      }
      default:
        throw new Error(`Unknown command '${name}' in '${cmd}'`);
    }
  };

  const state = (id: string): string => {
    const p = c().peers.get(id)!;
    if (p.down) return "down";
    const s = p.node.status();
    return `${s.role} term=${s.term} vote=${s.vote || "-"} lead=${
      s.lead || "-"
    } commit=${s.commit} applied=${s.applied} last=${s.lastIndex} voters=${
      s.voters.join(",")
    }`;
  };

  while (i < lines.length) {
    const line = lines[i];
    if (line.trim() === "" || line.startsWith("#")) {
      out.push(line);
      i++;
      continue;
    }
    const cmd = line;
    i++;
    if (lines[i] !== "----") {
      throw new Error(`Expected '----' after '${cmd}' at line ${i + 1}`);
    }
    i++;
    while (i < lines.length && lines[i].trim() !== "") i++;
    out.push(cmd, "----", ...run(cmd));
  }
  return out.join("\n");
}
