/**
 * Recovery from the loss of quorum: rewrites the membership in a surviving
 * node's Raft log so it can elect itself (and serve) without the dead
 * nodes — `plexus raft recover --data-dir DIR --members ID[,ID...]`.
 *
 * What it does, on the stopped node's log: appends one configuration entry
 * naming the new voters, at a term above every term in the log, and marks
 * every entry in the log committed (including entries that were not yet
 * committed when quorum was lost).
 *
 * DANGER: entries that were committed on the lost nodes but never reached
 * this one are gone for good, and entries this node held uncommitted now
 * count as committed. Recover the survivor with the longest log, and never
 * restart the old nodes with their old data: wipe their `raft/` folder
 * first (they would otherwise hold a divergent history).
 *
 * @module
 */
import { join } from "node:path";
import { parseArgs } from "node:util";
import { FileStorage } from "./file_storage.ts";
import type { ConfChangeData, Entry } from "./types.ts";

/** Options of {@linkcode recoverQuorum}. */
export interface RecoverOptions {
  /** The voters after recovery; must include this node. */
  members: string[];
  /** This node's id. @default {read from `raft/node-id` (written by the plugin) or `node-id` in the data dir} */
  nodeId?: string;
}

/** What {@linkcode recoverQuorum} changed. */
export interface RecoverReport {
  nodeId: string;
  previousVoters: string[];
  voters: string[];
  /** Index of the configuration entry written. */
  index: number;
  term: number;
  /** Commit index before; everything up to `index` is committed now. */
  commitBefore: number;
}

/**
 * Rewrites the membership of the node whose data dir is `dataDir` (the node
 * must be stopped).
 *
 * @example Usage
 * ```ts
 * import { join } from "node:path";
 * import { FileStorage } from "./file_storage.ts";
 * import { recoverQuorum } from "./recover.ts";
 * const dataDir = await Deno.makeTempDir();
 * const log = await FileStorage.open(join(dataDir, "raft"));
 * await log.saveVoters(["n1", "n2", "n3"]); // a node of a lost 3-node cluster
 * log.close();
 * const report = await recoverQuorum(dataDir, { members: ["n1"], nodeId: "n1" });
 * report.voters; // ["n1"]
 * await Deno.remove(dataDir, { recursive: true });
 * ```
 */
export async function recoverQuorum(
  dataDir: string,
  options: RecoverOptions,
): Promise<RecoverReport> {
  let nodeId = options.nodeId;
  if (!nodeId) {
    // The raft plugin records its id; a node without --node-id has one too.
    for (
      const file of [join(dataDir, "raft", "node-id"), join(dataDir, "node-id")]
    ) {
      try {
        nodeId = (await Deno.readTextFile(file)).trim();
        if (nodeId) break;
      } catch { /* try the next */ }
    }
    if (!nodeId) {
      throw new Error(
        `Cannot tell this node's id: no --node-id and no readable node-id file in ${dataDir}/raft or ${dataDir}`,
      );
    }
  }
  const members = [...new Set(options.members)].sort();
  if (!members.includes(nodeId)) {
    throw new RangeError(
      `Cannot recover: the members [${
        members.join(", ")
      }] must include this node '${nodeId}'`,
    );
  }
  const dir = join(dataDir, "raft");
  try {
    await Deno.stat(join(dir, "raft.log"));
  } catch {
    throw new Error(`Cannot recover: no Raft log at ${join(dir, "raft.log")}`);
  }
  const storage = await FileStorage.open(dir);
  try {
    const st = storage.state();
    const last = st.entries.at(-1);
    const lastIndex = last?.index ?? st.snapshot?.index ?? 0;
    const lastTerm = last?.term ?? st.snapshot?.term ?? 0;
    let previousVoters = storage.voters() ?? [];
    if (st.snapshot) previousVoters = st.snapshot.voters;
    for (const e of st.entries) {
      if (e.type === "conf") {
        previousVoters = (JSON.parse(e.data) as ConfChangeData).voters;
      }
    }
    const term = Math.max(st.hardState.term, lastTerm) + 1;
    const removed = previousVoters.filter((v) => !members.includes(v));
    const added = members.filter((v) => !previousVoters.includes(v));
    const data: ConfChangeData = removed.length > 0
      ? { type: "remove", node: removed[0], voters: members }
      : { type: "add", node: added[0] ?? nodeId, voters: members };
    const entry: Entry = {
      term,
      index: lastIndex + 1,
      type: "conf",
      data: JSON.stringify(data),
    };
    await storage.save({
      entries: [entry],
      hardState: { term, vote: "", commit: entry.index },
      messages: [],
      committed: [],
      readStates: [],
    });
    await storage.saveVoters(members);
    return {
      nodeId,
      previousVoters,
      voters: members,
      index: entry.index,
      term,
      commitBefore: st.hardState.commit,
    };
  } finally {
    storage.close();
  }
}

const HELP =
  `Usage: plexus raft recover --data-dir DIR --members ID[,ID...] [--node-id ID]

Recovers a stopped Raft node after the loss of quorum: its log gets a new
membership (--members, which must include this node) and every entry it
holds counts as committed. Start the node again afterwards; it elects itself
once it has a majority of the new members.

DANGER: committed entries that never reached this node are lost. Pick the
survivor with the longest log; wipe the raft/ folder of every old node
before it rejoins.`;

/**
 * `plexus raft ...`: the Raft subcommands (`recover`). Returns the exit code.
 *
 * @example Usage
 * ```ts ignore
 * Deno.exit(await raftCommand(["recover", "--data-dir", "./data/n1", "--members", "n1"]));
 * ```
 */
export async function raftCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "recover") {
    console.error(
      sub === undefined || sub === "--help" || sub === "-h"
        ? HELP
        : `plexus raft: unknown subcommand '${sub}' (subcommands: recover)`,
    );
    return sub === "--help" || sub === "-h" ? 0 : 2;
  }
  let values;
  try {
    values = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        "data-dir": { type: "string" },
        members: { type: "string" },
        "node-id": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (err) {
    console.error(`plexus raft recover: ${(err as Error).message}`);
    return 2;
  }
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!values["data-dir"] || !values.members) {
    console.error("plexus raft recover: --data-dir and --members are required");
    return 2;
  }
  try {
    const report = await recoverQuorum(values["data-dir"], {
      members: values.members.split(",").map((s) => s.trim()).filter(Boolean),
      nodeId: values["node-id"],
    });
    console.log(JSON.stringify(report));
    console.error(
      `raft recover: ${report.nodeId} now has voters [${
        report.voters.join(", ")
      }] (was [${
        report.previousVoters.join(", ")
      }]); entries up to ${report.index} count as committed (commit was ${report.commitBefore}). Start the node.`,
    );
    return 0;
  } catch (err) {
    console.error(`plexus raft recover: ${(err as Error).message}`);
    return 1;
  }
}
