/**
 * A WebSocket opening handshake written by hand over TCP, for tests that
 * need to set `Origin` (the platform's WebSocket cannot; a browser always
 * does). Reads the answer's status and body, then hangs up.
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Options for {@linkcode rawUpgrade}. */
export interface RawUpgradeOptions {
  /** The `Origin` header; none when undefined. */
  origin?: string;
}

/**
 * Sends the upgrade request for `url` (`ws://host:port/path`) and returns the
 * answer's status and body (101 has none).
 *
 * @example Usage
 * ```ts ignore
 * const { status } = await rawUpgrade("ws://127.0.0.1:8086/ws", { origin: "https://evil.example" });
 * ```
 */
export async function rawUpgrade(
  url: string,
  options: RawUpgradeOptions = {},
): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  const conn = await Deno.connect({
    hostname: u.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: Number(u.port || 80),
  });
  try {
    const key = crypto.getRandomValues(new Uint8Array(16)).toBase64();
    await conn.write(encoder.encode(
      `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\n` +
        "Upgrade: websocket\r\nConnection: Upgrade\r\n" +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n` +
        (options.origin === undefined ? "" : `Origin: ${options.origin}\r\n`) +
        "\r\n",
    ));
    let text = "";
    const buf = new Uint8Array(4096);
    for (;;) {
      const end = text.indexOf("\r\n\r\n");
      if (end >= 0) {
        const length = Number(
          /\r\ncontent-length: *(\d+)/i.exec(text.slice(0, end))?.[1] ?? 0,
        );
        if (text.length - end - 4 >= length) {
          const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
          return { status, body: text.slice(end + 4, end + 4 + length) };
        }
      }
      const n = await conn.read(buf);
      if (n === null) {
        throw new Error(`connection closed after '${text.slice(0, 200)}'`);
      }
      text += decoder.decode(buf.subarray(0, n), { stream: true });
    }
  } finally {
    conn.close();
  }
}
