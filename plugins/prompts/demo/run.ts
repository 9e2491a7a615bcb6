/**
 * `deno task demo`: enrols the three demo agents of the prompt service
 * (root, planning, ordering; keys kept in DATA_DIR/demo/*.json) on a local
 * node with an operator token signed by that node's key, and runs all three
 * in this process until Ctrl-C. Start the node first (`deno task dev`).
 *
 * ```sh ignore
 * deno task demo --url http://127.0.0.1:8086 --data-dir ./data
 * ```
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { loadConfig } from "../../../core/config.ts";
import { createJwtAuthority } from "../../../core/security/jwt.ts";
import { loadOrCreateNodeKey } from "../../../core/security/node_key.ts";
import { AgentClient } from "../../../sdk/client.ts";
import {
  type AgentKey,
  generateAgentKey,
  parseAgentKey,
} from "../../../sdk/keys.ts";
import {
  DEMO_ROLES,
  type DemoRole,
  ollamaLlm,
  startDemoAgent,
} from "./agents.ts";

const HELP =
  `Usage: deno task demo [--url URL] [--data-dir DIR] [--llm-url URL --llm-model NAME]

Enrols the prompt service's demo agents (root, planning, ordering) on the node
at URL (default http://127.0.0.1:8086) with a token signed by the node key in
DIR (default ./data), keeps their keys in DIR/demo/, and runs them until Ctrl-C.`;

/** Reads the role's key file, or makes and saves a new key. */
async function demoKey(dir: string, role: DemoRole): Promise<AgentKey> {
  const file = join(dir, `${role}.json`);
  try {
    return await parseAgentKey(await Deno.readTextFile(file));
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const key = await generateAgentKey();
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeTextFile(file, JSON.stringify(key) + "\n", { mode: 0o600 });
  return key;
}

async function main(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      url: { type: "string", default: "http://127.0.0.1:8086" },
      "data-dir": { type: "string", default: "./data" },
      "llm-url": { type: "string" },
      "llm-model": { type: "string", default: "llama3.2" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) return console.log(HELP);
  const parsed = loadConfig([`--data-dir=${values["data-dir"]}`]);
  if (parsed.help) return;
  const { dataDir, auth } = parsed.config;
  const token = await createJwtAuthority(
    await loadOrCreateNodeKey(dataDir),
    auth,
  ).issue("demo", "operator", { ttl: 600_000 });
  const llm = values["llm-url"]
    ? ollamaLlm(values["llm-url"], values["llm-model"]!)
    : undefined;
  const agents: AgentClient[] = [];
  for (const role of Object.keys(DEMO_ROLES) as DemoRole[]) {
    const key = await demoKey(join(dataDir, "demo"), role);
    const res = await fetch(new URL("/api/v1/agents", values.url), {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "content-type": "application/json",
      },
      body: JSON.stringify({
        agentId: key.id,
        publicKey: key.publicKey,
        roles: ["worker"],
        replace: true,
      }),
    });
    if (!res.ok) {
      throw new Error(
        `enrolling the ${role} agent: ${res.status} ${await res.text()}`,
      );
    }
    await res.body?.cancel();
    const seed = Uint8Array.fromBase64(key.privateKey, {
      alphabet: "base64url",
    });
    const agent = new AgentClient({
      url: values.url,
      id: key.id,
      privateKey: seed,
    });
    const connected = agent.connect();
    await startDemoAgent(agent, role, { key: seed, ...llm ? { llm } : {} });
    await connected;
    agents.push(agent);
    console.error(`demo: ${role} agent ${key.id} serves '${DEMO_ROLES[role]}'`);
  }
  console.error("demo: ready; Ctrl-C stops the agents");
  const stop = Promise.withResolvers<void>();
  Deno.addSignalListener("SIGINT", () => stop.resolve());
  Deno.addSignalListener("SIGTERM", () => stop.resolve());
  await stop.promise;
  await Promise.all(agents.map((a) => a.close()));
  Deno.exit(0);
}

if (import.meta.main) {
  main(Deno.args).catch((err) => {
    console.error(`demo: ${(err as Error).message}`);
    Deno.exit(1);
  });
}
