import { fileURLToPath } from "node:url";
import path from "node:path";

/** Repository root, found from the compiled test file (dist/test/*.js) or the source. */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const fixturesDir = path.join(repoRoot, "test", "fixtures");
