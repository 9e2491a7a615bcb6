/**
 * Restarts a test service started by `scripts/services.sh` (`deno task
 * services`), for the conformance case that restarts the broker mid-run.
 *
 * @module
 */

const SERVICES = new URL("../../scripts/services.sh", import.meta.url)
  .pathname;

/**
 * Whether `pid` runs (a zombie counts as gone). `ps`, not /proc: Deno lets
 * only --allow-all read /proc, and `deno task test` does not grant it —
 * reading it there threw, so every pid looked dead and the restart case
 * killed nothing.
 */
async function alive(pid: number): Promise<boolean> {
  const { stdout } = await new Deno.Command("ps", {
    args: ["-o", "stat=", "-p", String(pid)],
    stdout: "piped",
    stderr: "null",
  }).output();
  const stat = new TextDecoder().decode(stdout).trim();
  return stat !== "" && !stat.startsWith("Z");
}

/**
 * Kills the service `name` (`redis`, `kafka`, `denokv`, `nats` or `rabbitmq`,
 * whose pid file holds the Erlang VM's pid) with `signal`,
 * waits for the process to exit, and starts it again with the services
 * script (which starts only what is not answering). Needs `PLEXUS_RUN`.
 */
export async function restartService(
  name: "redis" | "kafka" | "denokv" | "nats" | "rabbitmq",
  options: { signal?: Deno.Signal; timeoutMs?: number } = {},
): Promise<void> {
  const run = Deno.env.get("PLEXUS_RUN");
  if (!run) {
    throw new Error(
      `Cannot restart ${name}: PLEXUS_RUN is not set (run: eval "$(deno task services)")`,
    );
  }
  const pid = Number((await Deno.readTextFile(`${run}/${name}.pid`)).trim());
  if (!Number.isInteger(pid) || pid <= 0) {
    throw new Error(`Cannot restart ${name}: bad pid file ${run}/${name}.pid`);
  }
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  if (!await alive(pid)) {
    throw new Error(
      `Cannot restart ${name}: its pid file names ${pid}, which is not running`,
    );
  }
  Deno.kill(pid, options.signal ?? "SIGKILL");
  while (await alive(pid)) {
    if (Date.now() > deadline) {
      throw new Error(`${name} (pid ${pid}) did not exit after the signal`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  // The services script starts what does not answer; a port the dead
  // process held can still accept for a moment, so run it until a new
  // process runs under the pid file.
  for (;;) {
    const out = await new Deno.Command("bash", {
      args: [SERVICES],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!out.success) {
      // The script's own lines say why; the service's log tail follows them.
      const err = new TextDecoder().decode(out.stderr);
      const own = err.split("\n").filter((l) => l.startsWith("services:"));
      throw new Error(
        `Cannot restart ${name}: services.sh exited ${out.code}:\n${
          own.slice(-5).join("\n")
        }\n${err.slice(-1500)}`,
      );
    }
    const now = Number(
      (await Deno.readTextFile(`${run}/${name}.pid`).catch(() => "")).trim(),
    );
    if (now !== pid && await alive(now)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `Cannot restart ${name}: no new process within ${
          options.timeoutMs ?? 60_000
        } ms (the services script left pid ${now})`,
      );
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}
