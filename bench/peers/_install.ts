/**
 * Runs `scripts/peers/<name>.sh` (installs a peer into the cache outside the
 * repository on first use) and returns the lines it prints: paths the peer
 * bench needs. A failed install ends the bench with the script's exit code
 * (its reason is already on stderr).
 *
 * @module
 */
import { fileURLToPath } from "node:url";

/** Installs peer `name` if missing; its script's stdout lines. */
export async function installPeer(name: string): Promise<string[]> {
  const script = fileURLToPath(
    new URL(`../../scripts/peers/${name}.sh`, import.meta.url),
  );
  const out = await new Deno.Command("bash", {
    args: [script],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (!out.success) {
    console.error(`installing ${name} failed (scripts/peers/${name}.sh)`);
    Deno.exit(out.code || 1);
  }
  return new TextDecoder().decode(out.stdout).trim().split("\n");
}
