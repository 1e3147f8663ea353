/**
 * The models the CLI uses when none is given: the small code model shipped in the package, and
 * its draft model for --spec draft.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const defaultModelDir = path.join(packageRoot, "models", "tachyon-code-tiny");
export const defaultDraftModelDir = path.join(packageRoot, "models", "tachyon-code-draft");
