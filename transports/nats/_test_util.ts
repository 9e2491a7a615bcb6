/**
 * Test helper: publishes bytes to a subject with the `nats` CLI
 * (`PLEXUS_NATS_CLI`, installed by `deno task services`), as an operator's
 * tool would, bypassing the transport.
 *
 * @module
 */
import assert from "node:assert/strict";

/** The `nats` CLI's path, when installed. */
export const NATS_CLI = Deno.env.get("PLEXUS_NATS_CLI");

/** Runs the `nats` CLI against `NATS_URL`, feeding `stdin`; returns stdout. */
export async function natsCli(
  args: string[],
  stdin?: Uint8Array,
): Promise<string> {
  assert.ok(NATS_CLI, "PLEXUS_NATS_CLI is not set");
  const child = new Deno.Command(NATS_CLI, {
    args: ["-s", Deno.env.get("NATS_URL")!, ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
    env: { HOME: Deno.makeTempDirSync() }, // no operator contexts
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(stdin);
    await w.close();
  }
  const out = await child.output();
  assert.ok(
    out.success,
    `nats ${args.join(" ")} exited ${out.code}: ${
      new TextDecoder().decode(out.stderr).slice(-800)
    }`,
  );
  return new TextDecoder().decode(out.stdout);
}

/**
 * `nats pub --jetstream SUBJECT` with `body` on stdin (raw bytes, templates
 * off) and `headers`: resolves once JetStream stored it.
 */
export async function cliPublish(
  subject: string,
  body: Uint8Array | string,
  headers: Record<string, string> = {},
): Promise<void> {
  await natsCli(
    [
      "pub",
      "--jetstream",
      "--no-templates",
      "--force-stdin",
      ...Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}:${v}`]),
      subject,
    ],
    typeof body === "string" ? new TextEncoder().encode(body) : body,
  );
}
