/**
 * The `plexus` command line: `serve` (the default) runs one node.
 *
 * Exit codes: 0 after a graceful shutdown; 1 when a plugin or the node fails
 * to start (stderr names the plugin and the cause); 2 for bad flags, bad
 * environment or bad config (one line on stderr naming the field).
 *
 * @module
 */
import { ConfigError, loadConfig, serveHelp } from "./core/config.ts";
import { startNode } from "./core/node.ts";
import { PluginError } from "./core/plugin.ts";
import { VERSION } from "./core/version.ts";

const COMMANDS = ["serve"];
const USAGE = `plexus ${VERSION}: a Deno-native distributed plugin host

Usage: plexus [command] [flags]

Commands:
  serve    run one node (the default)

Run 'plexus serve --help' for the flags. 'plexus --version' prints the version.`;

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

if (import.meta.main) {
  const [first, ...rest] = Deno.args;
  if (first === "--version" || first === "-V") {
    console.log(VERSION);
  } else if (first === "--help" || first === "-h" || first === "help") {
    console.log(`${USAGE}\n\n${serveHelp()}`);
  } else if (first === undefined || first.startsWith("-")) {
    await serve(Deno.args);
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
