/**
 * Example plugins, one file each, exported by name: `hello`
 * (`builtin:examples/hello`), an extension showing every part of a plugin.
 * Copy a file to start your own; it loads on its own with `--plugin PATH`.
 *
 * @module
 */
export { default as hello, type HelloApi } from "./hello.ts";
