/**
 * The `plexus` command line: `serve` (the default) runs one node; `token`
 * prints a signed API token (JWT) made with this node's key.
 *
 * Exit codes: 0 after a graceful shutdown; 1 when a plugin or the node fails
 * to start (stderr names the plugin and the cause) or `token` cannot load or
 * make the node key; 2 for bad flags, bad environment or bad config (one
 * line on stderr naming the field).
 *
 * @module
 */
import { parseArgs } from "node:util";
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
import { isRole, ROLES } from "./core/security/roles.ts";
import { VERSION } from "./core/version.ts";

const COMMANDS = ["serve", "token"];
const USAGE = `plexus ${VERSION}: a Deno-native distributed plugin host

Usage: plexus [command] [flags]

Commands:
  serve    run one node (the default)
  token    print a signed API token (JWT) for this node

Run 'plexus serve --help' or 'plexus token --help' for the flags. 'plexus --version' prints the version.`;

function fail(code: number, message: string): never {
  console.error(`plexus: ${message}`);
  Deno.exit(code);
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
    node = await startNode(parsed.config);
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    if (err instanceof PluginError) {
      fail(1, `plugin '${err.plugin}' failed (${err.phase}): ${err.message}`);
    }
    fail(1, `cannot start: ${(err as Error).message}`);
  }
  let signals = 0;
  const onSignal = (signal: Deno.Signal, code: number) => () => {
    if (++signals > 1) {
      console.error(`plexus: second ${signal}; exiting now`);
      Deno.exit(128 + code);
    }
    node.shutdown(signal).then(
      () => Deno.exit(0),
      (err) => fail(1, `shutdown failed: ${(err as Error).message}`),
    );
  };
  Deno.addSignalListener("SIGINT", onSignal("SIGINT", 2));
  Deno.addSignalListener("SIGTERM", onSignal("SIGTERM", 15));
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
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        help: { type: "boolean", short: "h" },
        role: { type: "string" },
        ttl: { type: "string" },
        sub: { type: "string" },
        "data-dir": { type: "string" },
        config: { type: "string" },
      },
    }));
  } catch (err) {
    fail(2, cliMessage(err as Error));
  }
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
