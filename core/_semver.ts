// @ts-types="@types/semver"
import semver from "semver";

/** Whether `v` is a valid semantic version. */
export function isVersion(v: string): boolean {
  return semver.valid(v) !== null;
}

/** Whether `r` is a valid semver range ("^1", "~1.2", ">=1 <3", "*"). */
export function isRange(r: string): boolean {
  return semver.validRange(r) !== null;
}

/** Whether version `v` satisfies `range` (prereleases included). */
export function satisfies(v: string, range: string): boolean {
  return semver.satisfies(v, range, { includePrerelease: true });
}
