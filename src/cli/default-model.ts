/** The model the CLI uses when no --model is given: the small code model shipped in the package. */
import path from "node:path";
import { fileURLToPath } from "node:url";

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const defaultModelDir = path.join(packageRoot, "models", "tachyon-code-tiny");
