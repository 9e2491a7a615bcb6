/**
 * Test helpers: RabbitMQ's own tools against the services' node
 * (`rabbitmqadmin`, through the management plugin, and `rabbitmqctl`; both
 * wrapped by `deno task services` as `PLEXUS_RABBITMQADMIN` and
 * `PLEXUS_RABBITMQCTL`), as an operator would use them, bypassing the
 * transport.
 *
 * @module
 */
import assert from "node:assert/strict";

/** The `rabbitmqadmin` wrapper, when the management plugin is there. */
export const RABBITMQADMIN = Deno.env.get("PLEXUS_RABBITMQADMIN");

/** Runs `rabbitmqadmin ARGS` (output as raw JSON), feeding `stdin`; returns stdout. */
export async function rabbitmqadmin(
  args: string[],
  stdin?: string,
): Promise<string> {
  assert.ok(RABBITMQADMIN, "PLEXUS_RABBITMQADMIN is not set");
  const child = new Deno.Command(RABBITMQADMIN, {
    args: ["-f", "raw_json", ...args],
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  assert.ok(
    out.success,
    `rabbitmqadmin ${args.join(" ").slice(0, 200)} exited ${out.code}: ${
      new TextDecoder().decode(out.stderr).slice(-800)
    }`,
  );
  return new TextDecoder().decode(out.stdout);
}

/**
 * `rabbitmqadmin publish`: `body` to `exchange` with `routingKey` and
 * `headers` (up to 64 KiB as a base64 argument, so any byte survives;
 * larger bodies on stdin, as UTF-8 text). Resolves with whether a queue
 * took it (`routed`).
 */
export async function adminPublish(
  exchange: string,
  routingKey: string,
  body: Uint8Array | string,
  headers: Record<string, string> = {},
): Promise<boolean> {
  const bytes = typeof body === "string"
    ? new TextEncoder().encode(body)
    : body;
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  const args = [
    "publish",
    `exchange=${exchange}`,
    `routing_key=${routingKey}`,
    `properties=${JSON.stringify({ delivery_mode: 2, headers })}`,
  ];
  // An argument holds at most 128 KiB: a larger body goes on stdin, which
  // rabbitmqadmin reads as text (so it must be UTF-8).
  const out = bytes.length <= 65536
    ? await rabbitmqadmin([
      ...args,
      `payload=${btoa(bin)}`,
      "payload_encoding=base64",
    ])
    : await rabbitmqadmin(
      args,
      new TextDecoder("utf-8", { fatal: true }).decode(bytes),
    );
  return !/NOT routed/.test(out);
}

/** One message as `rabbitmqadmin get … -f raw_json` shows it. */
export interface AdminMessage {
  payload: string;
  payload_encoding: string;
  routing_key: string;
  exchange: string;
  properties: {
    headers?: Record<string, unknown>;
    message_id?: string;
    delivery_mode?: number;
  };
}

/** `rabbitmqadmin get queue=Q count=N ackmode=ack_requeue_true`: a look that leaves them there. */
export async function adminPeek(
  queue: string,
  count = 100,
): Promise<AdminMessage[]> {
  return JSON.parse(
    await rabbitmqadmin([
      "get",
      `queue=${queue}`,
      `count=${count}`,
      "ackmode=ack_requeue_true",
      "encoding=auto",
    ]),
  );
}
