/**
 * Imported first by a `process`-level sandbox's entry: installs the stdio
 * port (see `stdio_port.ts`) that `worker_main.ts` then uses.
 *
 * @module
 */
import { installChildPort } from "./stdio_port.ts";

installChildPort();
