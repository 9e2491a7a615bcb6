/**
 * The `plexus` command line: `serve` (the default) runs one node; `token`
 * prints a signed API token (JWT) made with this node's key; `login-link`
 * prints a one-time admin sign-in link for the dashboard; `keygen` prints
 * a new agent key; `agent` runs a demo agent on the agent SDK; `cluster`
 * runs N local nodes as child processes; `dev` runs `serve` under deno's
 * file watcher.
 *
 * A Ctrl-C (SIGINT) or SIGTERM starts a graceful stop; copies arriving
 * within half a second are the same press (under `deno task` one press
 * arrives several times); a later one cuts the stop short (exit 128+n).
 *
 * Exit codes: 0 after a graceful shutdown; 1 when a plugin or the node fails
 * to start (stderr names the plugin and the cause), `token` cannot load or
 * make the node key, or the node refuses an `agent` for good (4401, 4409);
 * 2 for bad flags, bad environment, bad config or an unusable key file (one
 * line on stderr naming the field or file).
 *
 * @module
 */
import { basename, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs, type ParseArgsOptionsConfig } from "node:util";
import {
  cliMessage,
  ConfigError,
  formatHelp,
  loadConfig,
  serveHelp,
} from "./core/config.ts";
import { startNode } from "./core/node.ts";
import { PluginError } from "./core/plugin.ts";
import { formatDuration, parseDuration } from "./core/security/duration.ts";
import { createJwtAuthority, DEFAULT_MAX_TTL_MS } from "./core/security/jwt.ts";
import { loadOrCreateNodeKey } from "./core/security/node_key.ts";
import { issueLoginLink } from "./core/http/session.ts";
import { isRole, ROLES } from "./core/security/roles.ts";
import { VERSION } from "./core/version.ts";
import {
  AgentClient,
  agentGatewayUrl,
  type AgentKey,
  type AgentMessage,
  generateAgentKey,
  parseAgentKey,
} from "./sdk/client.ts";
import {
  CHANNEL_NAME_RE,
  isAgentId,
  parseChannel,
} from "./sdk/protocol/channels.ts";
import { parseEd25519PublicKey } from "./core/security/ed25519.ts";
import { BUILTINS } from "./builtins.ts";
import { builtinNames } from "./core/loader.ts";
import { denoCommand, startLocalCluster } from "./core/local_cluster.ts";
import { V8_FLAGS_ARG } from "./core/runtime_flags.ts";
import { raftCommand } from "./consensus/raft/recover.ts";

const COMMANDS = [
  "serve",
  "dev",
  "token",
  "login-link",
  "keygen",
  "agent",
  "cluster",
  "raft",
];
const USAGE = `plexus ${VERSION}: a Deno-native distributed plugin host

Usage: plexus [command] [flags]

Commands:
  serve    run one node (the default)
  dev      run one node under deno's file watcher (deno task dev)
  token    print a signed API token (JWT) for this node
  login-link  print a one-time admin sign-in link for the dashboard
  keygen   print a new Ed25519 agent key as JSON
  agent    run a demo agent: subscribe and print what arrives
  cluster  run N local nodes on consecutive ports, sharing one KV
  raft     Raft maintenance: 'raft recover' after the loss of quorum

Run 'plexus COMMAND --help' for its flags. 'plexus --version' prints the version.`;

function fail(code: number, message: string): never {
  console.error(`plexus: ${message}`);
  Deno.exit(code);
}

const HELP = { help: { type: "boolean", short: "h" } } as const;

const SIGNAL_NUMBER = { SIGINT: 2, SIGTERM: 15 } as const;
type StopSignal = keyof typeof SIGNAL_NUMBER;

/**
 * How long after a first SIGINT/SIGTERM more of them are still the same
 * request to stop. One Ctrl-C under `deno task` arrives more than once: the
 * terminal signals the whole foreground process group, the task runner
 * forwards its own copy, and under `deno run --watch` the watcher passes on a
 * SIGINT and a SIGTERM; they land about 0.1-0.3 ms apart here (later on a
 * loaded machine). A person pressing again to cut a slow drain short does so
 * well after half a second.
 */
const SAME_PRESS_MS = 500;

/**
 * Calls `stop` on the first SIGINT or SIGTERM, ignores those within
 * {@linkcode SAME_PRESS_MS} of it, and calls `force` on each later one.
 */
function onStopSignals(
  stop: (signal: StopSignal) => void,
  force: (signal: StopSignal) => void,
): void {
  let first: number | undefined;
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => {
      const now = performance.now();
      if (first === undefined) {
        first = now;
        stop(signal);
      } else if (now - first >= SAME_PRESS_MS) {
        force(signal);
      }
    });
  }
}

/** A subcommand's flags, strictly (no positionals); a bad one exits 2 with one line. */
function flags<O extends ParseArgsOptionsConfig>(argv: string[], options: O) {
  try {
    return parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options,
    }).values;
  } catch (err) {
    fail(2, cliMessage(err as Error));
  }
}

async function serve(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = loadConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    throw err;
  }
  if (parsed.help) {
    console.log(serveHelp());
    return;
  }
  let node;
  try {
    node = await startNode(parsed.config, { builtins: BUILTINS });
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    if (err instanceof PluginError) {
      fail(1, `plugin '${err.plugin}' failed (${err.phase}): ${err.message}`);
    }
    fail(1, `cannot start: ${(err as Error).message}`);
  }
  onStopSignals(
    (signal) => {
      node.shutdown(signal).then(
        () => Deno.exit(0),
        (err) => fail(1, `shutdown failed: ${(err as Error).message}`),
      );
    },
    (signal) => {
      console.error(`plexus: second ${signal}; exiting now`);
      Deno.exit(128 + SIGNAL_NUMBER[signal]);
    },
  );
}

/** What `plexus dev` watches (besides every module it loads), relative to main.ts. */
const DEV_WATCH = [
  "core/",
  "plugins/",
  "consensus/",
  "transports/",
  "gateway/",
  "sdk/",
  "builtins.ts",
  "main.ts",
];
/** The drop-in folder `plexus dev` makes and watches, relative to the working directory. */
const DEV_PLUGINS_DIR = "plugins.d";

function devHelp(): string {
  return formatHelp(
    "Usage: plexus dev [SERVE FLAGS...]",
    `Runs 'plexus serve' under 'deno run --watch' with the permissions of 'deno task start', restarting the node when ${
      DEV_WATCH.join(", ")
    } change. Plugins loaded from local files (--plugin ./x.ts, the drop-in folder, ./${DEV_PLUGINS_DIR}/ made if missing) are not restarted but hot swapped by the node itself (serve --watch-plugins, docs/hot-swap.md). Ctrl-C or SIGTERM drains the node and ends the watcher: SIGTERM is passed on as SIGINT, since the watcher sends its program SIGTERM itself to restart it. The watcher gives a drain 0.5 s (on a restart too), then ends the run. Needs --allow-run=deno and --allow-write=./${DEV_PLUGINS_DIR}; with --allow-read and --allow-env it reads the config to find the plugin files.`,
    [["-h, --help", "show this help"]],
  );
}

async function dev(argv: string[]): Promise<void> {
  if (argv.includes("-h") || argv.includes("--help")) {
    console.log(devHelp());
    return;
  }
  try {
    await Deno.mkdir(DEV_PLUGINS_DIR, { recursive: true });
  } catch (err) {
    fail(1, `dev: cannot make ./${DEV_PLUGINS_DIR}: ${(err as Error).message}`);
  }
  const script = new URL(import.meta.url);
  const watch = DEV_WATCH.map((p) => fileURLToPath(new URL(p, script)));
  // Plugins are the node's to reload (--watch-plugins): deno's watcher,
  // which would restart the node, must not see their files. A bad flag is
  // left for 'serve' to report.
  const plugins = [`${DEV_PLUGINS_DIR}/`];
  const mayRead = ["read", "env"].every((name) =>
    Deno.permissions.querySync({ name } as Deno.PermissionDescriptor)
      .state === "granted"
  );
  if (mayRead) {
    try {
      const parsed = loadConfig(argv);
      const config = parsed.help ? undefined : parsed.config;
      for (const spec of config?.plugins ?? []) {
        if (/^(\.{0,2}\/|file:)/.test(spec)) {
          const file = spec.startsWith("file:")
            ? fileURLToPath(spec)
            : resolve(spec);
          plugins.push(basename(file) === "mod.ts" ? dirname(file) : file);
        }
      }
      if (config) plugins.push(resolve(config.pluginsDir));
    } catch { /* serve says what is wrong */ }
  }
  let watcher: Deno.ChildProcess;
  try {
    watcher = new Deno.Command(denoCommand(), {
      args: [
        "run",
        V8_FLAGS_ARG,
        `--watch=${watch.join(",")}`,
        `--watch-exclude=${plugins.join(",")}`,
        "--allow-net",
        "--allow-read",
        "--allow-write=./data",
        "--allow-env",
        "--allow-import",
        fileURLToPath(script),
        "serve",
        "--watch-plugins",
        ...argv,
      ],
      stdin: "inherit",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
  } catch (err) {
    fail(1, `dev: cannot start deno: ${(err as Error).message}`);
  }
  const send = (signal: Deno.Signal) => {
    try {
      watcher.kill(signal);
    } catch { /* already exited */ }
  };
  let stopping = false;
  let forced: number | undefined;
  onStopSignals(
    () => {
      stopping = true;
      // The watcher ends on SIGINT; on SIGTERM it would only end this run.
      send("SIGINT");
    },
    (signal) => {
      forced = 128 + SIGNAL_NUMBER[signal];
      send("SIGKILL");
    },
  );
  const status = await watcher.status;
  // A watcher idle between runs (the node already stopped, or failed to
  // start) has no listener left and dies of the SIGINT we sent: a stop too.
  const asked = stopping && status.signal === "SIGINT";
  Deno.exit(forced ?? (asked ? 0 : status.code));
}

function tokenHelp(): string {
  const rows = [
    ["--role ROLE", `required; one of ${ROLES.join(", ")}`],
    [
      "--ttl DURATION",
      `required; lifetime such as 30s, 15m, 1h, 7d (at most ${
        formatDuration(DEFAULT_MAX_TTL_MS)
      })`,
    ],
    ["--sub NAME", "required; who the token is for (its 'sub'), e.g. ci"],
    [
      "--data-dir DIR",
      "where the node key lives (DIR/node-key.jwk, made if missing); default ./data; env PLEXUS_DATA_DIR",
    ],
    [
      "--config FILE.json",
      "JSON config file (its dataDir is used); default none; env PLEXUS_CONFIG",
    ],
    ["-h, --help", "show this help"],
  ];
  return formatHelp(
    "Usage: plexus token --role ROLE --ttl DURATION --sub NAME [flags]",
    "Prints one JWT for the HTTP API on stdout, signed with this node's key.",
    rows,
  );
}

/** node:util parseArgs errors as one line naming the flag. */

async function token(argv: string[]): Promise<void> {
  const values = flags(argv, {
    ...HELP,
    role: { type: "string" },
    ttl: { type: "string" },
    sub: { type: "string" },
    "data-dir": { type: "string" },
    config: { type: "string" },
  });
  if (values.help) {
    console.log(tokenHelp());
    return;
  }
  const { role, ttl, sub } = values;
  if (role === undefined) {
    fail(2, `--role: required, one of ${ROLES.join(", ")}`);
  }
  if (!isRole(role)) {
    fail(
      2,
      `--role: expected one of ${ROLES.join(", ")}, got '${
        JSON.stringify(role).slice(1, -1)
      }'`,
    );
  }
  if (ttl === undefined) fail(2, "--ttl: required, e.g. --ttl 1h");
  let ttlMs: number;
  try {
    ttlMs = parseDuration(ttl, { minMs: 1000, maxMs: DEFAULT_MAX_TTL_MS });
  } catch (err) {
    fail(2, `--ttl: ${(err as Error).message}`);
  }
  // deno-lint-ignore no-control-regex
  if (sub === undefined || !/^[^\u0000-\u001f\u007f]{1,256}$/.test(sub)) {
    fail(
      2,
      sub === undefined
        ? "--sub: required, e.g. --sub ci"
        : `--sub: expected 1-256 printable characters, got ${
          JSON.stringify(sub).slice(0, 80)
        }`,
    );
  }
  const configArgs = [
    ...(values["data-dir"] === undefined
      ? []
      : [`--data-dir=${values["data-dir"]}`]),
    ...(values.config === undefined ? [] : [`--config=${values.config}`]),
  ];
  let dataDir: string;
  let issuer: string, audience: string;
  try {
    const parsed = loadConfig(configArgs);
    if (parsed.help) throw new Error("unreachable: --help was handled");
    ({ dataDir, auth: { issuer, audience } } = parsed.config);
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    throw err;
  }
  let jwt: string;
  try {
    const key = await loadOrCreateNodeKey(dataDir);
    jwt = await createJwtAuthority(key, { issuer, audience }).issue(sub, role, {
      ttl: ttlMs,
    });
  } catch (err) {
    fail(1, `cannot issue a token: ${(err as Error).message}`);
  }
  console.log(jwt);
}

function loginLinkHelp(): string {
  return formatHelp(
    "Usage: plexus login-link [flags]",
    "Prints a one-time admin sign-in link for the dashboard of the node that uses this data dir (signed with its key; one use; for nodes without an identity provider, docs/console.md).",
    [
      [
        "--url URL",
        "the node's address as the browser reaches it; default http://HOST:PORT from the config",
      ],
      ["--ttl DURATION", "how long the link works, 10s to 1h; default 5m"],
      [
        "--data-dir DIR",
        "where the node key lives (DIR/node-key.jwk); default ./data; env PLEXUS_DATA_DIR",
      ],
      [
        "--config FILE.json",
        "JSON config file (its dataDir, host, port and auth.issuer are used); env PLEXUS_CONFIG",
      ],
      ["-h, --help", "show this help"],
    ],
  );
}

async function loginLink(argv: string[]): Promise<void> {
  const values = flags(argv, {
    ...HELP,
    url: { type: "string" },
    ttl: { type: "string" },
    "data-dir": { type: "string" },
    config: { type: "string" },
  });
  if (values.help) {
    console.log(loginLinkHelp());
    return;
  }
  let ttlMs = 300_000;
  if (values.ttl !== undefined) {
    try {
      ttlMs = parseDuration(values.ttl, { minMs: 10_000, maxMs: 3_600_000 });
    } catch (err) {
      fail(2, `--ttl: ${(err as Error).message}`);
    }
  }
  const configArgs = [
    ...(values["data-dir"] === undefined
      ? []
      : [`--data-dir=${values["data-dir"]}`]),
    ...(values.config === undefined ? [] : [`--config=${values.config}`]),
  ];
  let dataDir: string, issuer: string, base: URL;
  try {
    const parsed = loadConfig(configArgs);
    if (parsed.help) throw new Error("unreachable: --help was handled");
    const { config } = parsed;
    ({ dataDir, auth: { issuer } } = config);
    const host = config.host.includes(":") ? `[${config.host}]` : config.host;
    base = new URL(values.url ?? `http://${host}:${config.port}`);
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    if (err instanceof TypeError) fail(2, `--url: not a URL: ${values.url}`);
    throw err;
  }
  let token: string;
  try {
    token = await issueLoginLink(await loadOrCreateNodeKey(dataDir), {
      issuer,
      ttlMs,
    });
  } catch (err) {
    fail(1, `cannot make a login link: ${(err as Error).message}`);
  }
  const link = new URL("/ui/auth/link", base);
  link.searchParams.set("token", token);
  console.log(link.href);
}

function keygenHelp(): string {
  return formatHelp(
    "Usage: plexus keygen",
    'Prints a new Ed25519 agent key as one JSON object on stdout: {"id": did:key, "publicKey": base64url, "privateKey": base64url of the 32-byte seed}. Keep privateKey secret; enrol id and publicKey with POST /api/v1/agents. Needs no permissions.',
    [["-h, --help", "show this help"]],
  );
}

async function keygen(argv: string[]): Promise<void> {
  const values = flags(argv, HELP);
  if (values.help) {
    console.log(keygenHelp());
    return;
  }
  console.log(JSON.stringify(await generateAgentKey()));
}

function agentHelp(): string {
  return formatHelp(
    "Usage: plexus agent --url URL --key FILE [--subscribe TOPIC]... [flags]",
    "Runs a demo agent: connects to a node's agent gateway, subscribes, prints each message it receives as one JSON line on stdout (state changes go to stderr), reconnects with backoff; SIGINT/SIGTERM close it. Needs --allow-net and --allow-read for the key file.",
    [
      [
        "--url URL",
        "required; the gateway, e.g. ws://127.0.0.1:8086/ws/agent (a node's http://HOST:PORT works too)",
      ],
      [
        "--key FILE",
        "required; the JSON printed by 'plexus keygen', or just the base64url seed",
      ],
      ["--id ID", "the enrolled agent id; default the key file's id (did:key)"],
      [
        "--subscribe TOPIC",
        "repeatable; a channel name (backend.{id}.TOPIC) or a full backend.{id}.NAME channel",
      ],
      [
        "--node-key KEY",
        "repeatable; accept only these node keys (base64url, hex or did:key); default any",
      ],
      [
        "--as ROLE",
        "run a demo agent of the prompt service instead: root (capability prompt), planning (plan) or ordering (order); enrol its key with the worker role (docs/prompts.md)",
      ],
      [
        "--llm-url URL",
        "with --as: ask this Ollama-compatible endpoint (POST URL/api/generate) first, falling back to the rules",
      ],
      ["--llm-model NAME", "with --llm-url: the model (default llama3.2)"],
      ["-h, --help", "show this help"],
    ],
  );
}

async function agent(argv: string[]): Promise<void> {
  const values = flags(argv, {
    ...HELP,
    url: { type: "string" },
    id: { type: "string" },
    key: { type: "string" },
    subscribe: { type: "string", multiple: true },
    "node-key": { type: "string", multiple: true },
    as: { type: "string" },
    "llm-url": { type: "string" },
    "llm-model": { type: "string" },
  });
  if (values.help) {
    console.log(agentHelp());
    return;
  }
  if (values.url === undefined) {
    fail(2, "--url: required, e.g. --url ws://127.0.0.1:8086/ws/agent");
  }
  let url: string;
  try {
    url = agentGatewayUrl(values.url);
  } catch (err) {
    fail(2, `--url: ${(err as Error).message}`);
  }
  if (values.key === undefined) {
    fail(2, "--key: required, a file holding the output of 'plexus keygen'");
  }
  if (values.id !== undefined && !isAgentId(values.id)) {
    fail(
      2,
      `--id: expected 1-128 letters, digits, ':', '_' or '-', got ${
        JSON.stringify(values.id).slice(0, 80)
      }`,
    );
  }
  const nodeKeys: string[] = [];
  for (const k of values["node-key"] ?? []) {
    try {
      parseEd25519PublicKey(k);
    } catch (err) {
      fail(2, `--node-key: ${(err as Error).message}`);
    }
    nodeKeys.push(k);
  }
  const file = values.key;
  let key: AgentKey;
  try {
    key = await parseAgentKey(await Deno.readTextFile(file));
  } catch (err) {
    fail(
      2,
      err instanceof TypeError
        ? `--key: '${file}' is not an agent key: ${err.message}`
        : `--key: cannot read '${file}': ${(err as Error).message}`,
    );
  }
  const id = values.id ?? key.id;
  const channels: string[] = [];
  for (const topic of values.subscribe ?? []) {
    const full = topic.startsWith("backend.") ? parseChannel(topic) : undefined;
    if (
      full
        ? full.side !== "backend" || full.id !== id
        : !CHANNEL_NAME_RE.test(topic)
    ) {
      fail(
        2,
        `--subscribe: expected a channel name such as 'commands' or backend.${id}.NAME, got ${
          JSON.stringify(topic).slice(0, 80)
        }`,
      );
    }
    channels.push(topic);
  }

  const say = (line: string) => console.error(`plexus agent: ${line}`);
  const client = new AgentClient({
    url,
    id,
    privateKey: Uint8Array.fromBase64(key.privateKey, {
      alphabet: "base64url",
    }),
    ...(nodeKeys.length ? { trustedNodeKeys: nodeKeys } : {}),
  });
  client.on("connecting", (e) => {
    say(
      `connecting to ${e.url} (attempt ${e.attempt}${
        e.resume ? ", resuming" : ""
      })`,
    );
  });
  client.on("ready", (e) => {
    say(
      `ready: node ${e.node}, session ${e.sid}${e.resumed ? " (resumed)" : ""}`,
    );
  });
  client.on("disconnected", (e) => {
    say(
      `disconnected (${e.code}${e.reason ? `: ${e.reason}` : ""})${
        e.retryInMs === undefined ? "" : `; reconnecting in ${e.retryInMs} ms`
      }`,
    );
  });
  client.on("error", (e) => say(`${e.context}: ${e.error.message}`));
  if (values.as !== undefined) {
    const demo = await import("./plugins/prompts/demo/agents.ts");
    if (!(values.as in demo.DEMO_ROLES)) {
      fail(
        2,
        `--as: expected one of ${
          Object.keys(demo.DEMO_ROLES).join(", ")
        }, got ${JSON.stringify(values.as).slice(0, 80)}`,
      );
    }
    const role = values.as as keyof typeof demo.DEMO_ROLES;
    const llmUrl = values["llm-url"];
    demo.startDemoAgent(client, role, {
      key: Uint8Array.fromBase64(key.privateKey, { alphabet: "base64url" }),
      ...(llmUrl
        ? { llm: demo.ollamaLlm(llmUrl, values["llm-model"] ?? "llama3.2") }
        : {}),
    }).then(
      (s) => say(`${role} agent serving ${s.channel}`),
      (err) => say(`cannot serve as ${role}: ${(err as Error).message}`),
    );
  }
  const print = (m: AgentMessage) => {
    console.log(JSON.stringify({
      channel: m.channel,
      type: m.type ?? "msg",
      id: m.id,
      payload: m.payload,
      priority: m.priority,
      signed: m.signed,
      ...(m.correlationId === undefined
        ? {}
        : { correlationId: m.correlationId }),
      receivedAt: new Date().toISOString(),
    }));
  };
  // Handlers first: messages queued for the agent arrive right after the handshake.
  for (const ch of channels) {
    client.subscribe(ch, print).then(
      (s) => say(`subscribed to ${s.channel}`),
      (err) => say(`cannot subscribe to ${ch}: ${(err as Error).message}`),
    );
  }
  onStopSignals(
    (signal) => {
      say(`${signal}: closing`);
      void client.close();
    },
    (signal) => Deno.exit(128 + SIGNAL_NUMBER[signal]),
  );
  client.connect().catch(() => {}); // the outcome is in client.closed
  const info = await client.closed;
  if (info.error) fail(1, `agent stopped: ${info.error.message}`);
  Deno.exit(0);
}

function clusterHelp(): string {
  return formatHelp(
    "Usage: plexus cluster --nodes N [--consensus NAME] [flags] [-- SERVE FLAGS...]",
    "Runs N nodes (node-1..node-N) as child processes on consecutive ports, sharing one KV and listing each other as --peers. A node that exits is reported and the rest keep running; SIGINT/SIGTERM stop them all.",
    [
      ["--nodes N", "required; 1 to 32"],
      [
        "--consensus NAME",
        `default kv-lease; built in: ${
          builtinNames(BUILTINS, "consensus").join(", ")
        }; pbft (4+ nodes) makes each node an Ed25519 key (DIR/node-i/pbft-key.json) and the member list DIR/pbft.json`,
      ],
      ["--port PORT", "first node's port; default 8086"],
      ["--host HOST", "default 127.0.0.1"],
      [
        "--data-dir DIR",
        "parent of the nodes' data dirs; default ./data/cluster",
      ],
      ["--kv PATH|URL", "shared KV; default DIR/cluster.kv"],
      ["-- FLAGS", "anything after -- is passed to every node's serve"],
      ["-h, --help", "show this help"],
    ],
  );
}

async function cluster(argv: string[]): Promise<void> {
  const cut = argv.indexOf("--");
  const extraArgs = cut >= 0 ? argv.slice(cut + 1) : [];
  const values = flags(cut >= 0 ? argv.slice(0, cut) : argv, {
    ...HELP,
    nodes: { type: "string" },
    consensus: { type: "string" },
    port: { type: "string" },
    host: { type: "string" },
    "data-dir": { type: "string" },
    kv: { type: "string" },
  });
  if (values.help) {
    console.log(clusterHelp());
    return;
  }
  const nodes = Number(values.nodes);
  if (values.nodes === undefined) fail(2, "cluster: --nodes is required");
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 32) {
    fail(
      2,
      `cluster: --nodes must be an integer from 1 to 32, got '${values.nodes}'`,
    );
  }
  const consensus = values.consensus ?? "kv-lease";
  const known = builtinNames(BUILTINS, "consensus");
  if (!known.includes(consensus)) {
    fail(
      2,
      `cluster: --consensus '${consensus}' is not built in (built in: ${
        known.join(", ")
      })`,
    );
  }
  if (consensus === "pbft" && nodes < 4) {
    fail(
      2,
      `cluster: --consensus pbft needs --nodes 4 or more (3f + 1 with f = 1), got ${nodes}`,
    );
  }
  const port = Number(values.port ?? 8086);
  if (!Number.isInteger(port) || port < 1 || port + nodes - 1 > 65535) {
    fail(
      2,
      `cluster: --port must leave room for ${nodes} ports below 65536, got '${values.port}'`,
    );
  }
  let c: ReturnType<typeof startLocalCluster>;
  try {
    c = startLocalCluster({
      nodes,
      consensus,
      port,
      host: values.host,
      dataDir: values["data-dir"],
      kv: values.kv,
      extraArgs,
      script: new URL(import.meta.url).pathname,
    });
  } catch (err) {
    fail(1, `cluster: ${(err as Error).message.replace(/^cluster: /, "")}`);
  }
  let forced: number | undefined;
  onStopSignals(
    (signal) => {
      console.error(`cluster: ${signal}: stopping every node`);
      c.stop();
    },
    (signal) => {
      console.error(`cluster: second ${signal}: killing every node`);
      forced = 128 + SIGNAL_NUMBER[signal];
      c.kill();
    },
  );
  // Return only once every node has exited, even when forced.
  const ok = await c.done;
  Deno.exit(forced ?? (ok ? 0 : 1));
}

if (import.meta.main) {
  const [first, ...rest] = Deno.args;
  if (first === "--version" || first === "-V") {
    console.log(VERSION);
  } else if (first === "--help" || first === "-h" || first === "help") {
    console.log(`${USAGE}\n\n${serveHelp()}`);
  } else if (first === undefined || first.startsWith("-")) {
    await serve(Deno.args);
  } else if (first === "token") {
    await token(rest);
  } else if (first === "login-link") {
    await loginLink(rest);
  } else if (first === "keygen") {
    await keygen(rest);
  } else if (first === "agent") {
    await agent(rest);
  } else if (first === "dev") {
    await dev(rest);
  } else if (first === "cluster") {
    await cluster(rest);
  } else if (first === "raft") {
    Deno.exit(await raftCommand(rest));
  } else if (COMMANDS.includes(first)) {
    await serve(rest);
  } else {
    fail(
      2,
      `unknown command '${first}' (commands: ${
        COMMANDS.join(", ")
      }; see --help)`,
    );
  }
}
