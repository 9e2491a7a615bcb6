/**
 * `deno task demo:debate`: a debate to consensus in one command. Without
 * `--url` it starts a node on embedded defaults in this process (KV in a
 * temporary directory, the sagas, events and debates plugins); with `--url`
 * it uses that running node (loaded with them) and signs its operator token
 * with the node key in `--data-dir`. It enrols three demo agents (`for`,
 * `against`, `follow-majority`), posts a debate and prints every turn as it
 * arrives over `GET /api/v1/events` (Server-Sent Events), then the result.
 *
 * `agent` mode runs one demo agent in its own process (the tests kill it):
 *
 * ```sh ignore
 * deno task demo:debate
 * deno task demo:debate --url http://127.0.0.1:8086 --data-dir ./data --rounds 5
 * deno run -A plugins/debates/agents/run.ts agent --url URL --key key.json --stance for
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { loadConfig } from "../../../core/config.ts";
import { startNode } from "../../../core/node.ts";
import { createJwtAuthority } from "../../../core/security/jwt.ts";
import { loadOrCreateNodeKey } from "../../../core/security/node_key.ts";
import { AgentClient } from "../../../sdk/client.ts";
import {
  type AgentKey,
  generateAgentKey,
  parseAgentKey,
} from "../../../sdk/keys.ts";
import { BUILTINS } from "../../../builtins.ts";
import { serveDebates, type Stance, STANCES } from "./stances.ts";

const HELP =
  `Usage: deno task demo:debate [--url URL --data-dir DIR] [--topic TEXT] [--rounds N]
       deno run -A plugins/debates/agents/run.ts agent --url URL --key FILE --stance STANCE [--think-ms N]

Without --url, starts a node on embedded defaults in this process; with it,
uses that node (it must load builtin:sagas, builtin:events and builtin:debates)
and signs an operator token with the node key in DIR (default ./data).
Enrols three demo agents (for, against, follow-majority), posts a debate and
prints its turns live until it finishes.

agent: runs one demo debate agent with the key in FILE (as printed by
'deno task keygen', enrolled with the worker role) until SIGINT/SIGTERM;
prints one JSON line per question on stdout. Stances: ${STANCES.join(", ")}.`;

/** Reads Server-Sent Events from `res`, calling `on` with each event's type and data. */
async function readSse(
  res: Response,
  on: (type: string, data: string) => boolean,
): Promise<void> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let type = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) type = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length && on(type, data.join("\n"))) return;
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

async function runAgent(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: "string" },
      key: { type: "string" },
      stance: { type: "string" },
      "think-ms": { type: "string", default: "0" },
      channel: { type: "string", default: "tasks.debate" },
    },
  });
  const stance = values.stance as Stance;
  if (!values.url || !values.key || !STANCES.includes(stance)) {
    console.error(
      `demo:debate agent: --url, --key and --stance (${
        STANCES.join("|")
      }) are required`,
    );
    Deno.exit(2);
  }
  const key = await parseAgentKey(await Deno.readTextFile(values.key));
  const agent = new AgentClient({
    url: values.url,
    id: key.id,
    privateKey: Uint8Array.fromBase64(key.privateKey, {
      alphabet: "base64url",
    }),
    backoff: { initialMs: 100, maxMs: 1000 },
  });
  const connected = agent.connect();
  await serveDebates(agent, stance, {
    channel: values.channel,
    thinkMs: Number(values["think-ms"]),
    onQuestion: (q) =>
      console.log(
        JSON.stringify({ debateId: q.debateId, round: q.round, role: q.role }),
      ),
  });
  await connected;
  console.error(`demo:debate agent: ${key.id} (${stance}) ready`);
  const stop = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", () => stop.resolve());
  Deno.addSignalListener("SIGTERM", () => stop.resolve());
  await stop.promise;
  await agent.close();
  Deno.exit(0);
}

async function runDemo(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: "string" },
      "data-dir": { type: "string", default: "./data" },
      topic: {
        type: "string",
        default: "Should every node keep a local copy of the prompt cache?",
      },
      rounds: { type: "string", default: "3" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(HELP);
  let url = values.url;
  let token: string;
  let stopNode = () => Promise.resolve();
  if (url) {
    const parsed = loadConfig([`--data-dir=${values["data-dir"]}`]);
    if (parsed.help) return;
    token = await createJwtAuthority(
      await loadOrCreateNodeKey(parsed.config.dataDir),
      parsed.config.auth,
    ).issue("demo-debate", "operator", { ttl: 600_000 });
  } else {
    const dir = await Deno.makeTempDir({ prefix: "plexus-debate-demo-" });
    const parsed = loadConfig([
      "--port=0",
      `--kv=${join(dir, "plexus.kv")}`,
      `--data-dir=${dir}`,
      `--plugins-dir=${join(dir, "none")}`,
      "--plugin=builtin:sagas",
      "--plugin=builtin:events",
      "--plugin=builtin:debates",
      "--log-level=error",
    ], { env: {} });
    if (parsed.help) return;
    const node = await startNode(parsed.config, {
      sinks: [],
      builtins: BUILTINS,
    });
    url = node.url;
    token = await node.security.jwt.issue("demo-debate", "operator");
    stopNode = async () => {
      await node.shutdown();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    };
    console.log(`node: ${url} (embedded, KV in ${dir})`);
  }
  const api = (path: string, init: RequestInit = {}) =>
    fetch(new URL(path, url), {
      ...init,
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
        ...init.headers,
      },
    });

  const stances: Stance[] = ["for", "against", "follow-majority"];
  const names = new Map<string, string>();
  const agents: AgentClient[] = [];
  for (const stance of stances) {
    const key: AgentKey = await generateAgentKey();
    const res = await api("/api/v1/agents", {
      method: "POST",
      body: JSON.stringify({
        agentId: key.id,
        publicKey: key.publicKey,
        roles: ["worker"],
      }),
    });
    if (!res.ok) {
      throw new Error(`enrolling an agent: ${res.status} ${await res.text()}`);
    }
    await res.body?.cancel();
    const agent = new AgentClient({
      url,
      id: key.id,
      privateKey: Uint8Array.fromBase64(key.privateKey, {
        alphabet: "base64url",
      }),
    });
    const connected = agent.connect();
    await serveDebates(agent, stance);
    await connected;
    agents.push(agent);
    names.set(key.id, stance);
  }

  const res = await api("/api/v1/debates", {
    method: "POST",
    body: JSON.stringify({
      topic: values.topic,
      participants: [...names.keys()],
      rounds: Number(values.rounds),
      turnTimeoutMs: 5000,
      consensus: { method: "majority" },
      moderator: [...names.keys()][2],
    }),
  });
  const debate = await res.json();
  if (res.status !== 201) {
    throw new Error(
      `POST /api/v1/debates: ${res.status} ${JSON.stringify(debate)}`,
    );
  }
  console.log(
    `debate ${debate.id}: "${values.topic}" (${
      stances.join(", ")
    }; ${debate.rounds} round${debate.rounds === 1 ? "" : "s"}, majority)`,
  );
  const filter = `data.debateId == ${JSON.stringify(debate.id)}`;
  // From just before the debate, by the node's clock (its createdAt), not ours.
  const from = debate.createdAt - 1000;
  const sse = await api(
    `/api/v1/events?filter=${encodeURIComponent(filter)}&from=${from}`,
    { headers: { accept: "text/event-stream" } },
  );
  if (!sse.ok) throw new Error(`GET /api/v1/events: ${sse.status}`);
  const who = (id?: string) => names.get(id ?? "") ?? id ?? "?";
  let outcome = "";
  await readSse(sse, (type, text) => {
    const d = JSON.parse(text).data;
    if (type === "debate.turn") {
      console.log(
        `round ${d.round}  ${who(d.agent).padEnd(15)} ${
          d.position.padEnd(9)
        } (${d.confidence})  ${d.argument}`,
      );
    } else if (type === "debate.turn.skipped") {
      console.log(
        `round ${d.round}  ${who(d.agent).padEnd(15)} silent     ${d.reason}`,
      );
    } else if (type === "debate.round.completed") {
      const tally = Object.entries(d.tally).map(([p, n]) => `${n} ${p}`)
        .join(", ");
      console.log(
        `round ${d.round}  tally: ${tally || "none"}${
          d.summary ? ` | moderator: ${d.summary}` : ""
        } → ${d.reached ? "consensus" : "no consensus yet"}`,
      );
    } else if (type === "debate.consensus") {
      console.log(
        `consensus: ${d.position} in round ${d.round} (${
          Math.round(d.share * 100)
        }% of participants)`,
      );
    } else if (type === "debate.finished") {
      outcome = `${d.status} after ${d.roundsRun} round${
        d.roundsRun === 1 ? "" : "s"
      }`;
      return true;
    }
    return false;
  });
  console.log(`finished: ${outcome}`);
  console.log(`full record: GET ${url}/api/v1/debates/${debate.id}`);
  await Promise.all(agents.map((a) => a.close()));
  await stopNode();
}

if (import.meta.main) {
  const [mode, ...rest] = Deno.args;
  (mode === "agent" ? runAgent(rest) : runDemo(Deno.args)).then(
    () => Deno.exit(0),
    (err) => {
      console.error(`demo:debate: ${(err as Error).message}`);
      // A bad flag is a usage error (2), as for every plexus command.
      const usage = String((err as { code?: unknown }).code)
        .startsWith("ERR_PARSE_ARGS");
      Deno.exit(usage ? 2 : 1);
    },
  );
}
