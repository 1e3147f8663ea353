/**
 * `tachyon serve`: the OpenAI-compatible server. Loads each model once, then serves until SIGINT
 * or SIGTERM, on which it stops accepting requests, lets those in flight finish (up to
 * --shutdown-timeout) and exits.
 */
import path from "node:path";
import { parseArgs } from "node:util";
import { TachyonError } from "../errors.js";
import { LoadedModel, loadModel } from "../engine/loaded-model.js";
import { ModelRegistry } from "../server/model-registry.js";
import { assertSameTokenizer } from "../engine/speculative/draft-model.js";
import { createServer } from "../server/server.js";
import { defaultModelDir } from "./default-model.js";
import { loadOptions, modelDir, modelFlags } from "./options.js";

export async function serveCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...modelFlags,
      model: { type: "string", multiple: true },
      shape: { type: "string" },
      "draft-model": { type: "string" },
      host: { type: "string", default: "127.0.0.1" },
      port: { type: "string", default: "8000" },
      "api-key": { type: "string", multiple: true },
      "kv-cache-tokens": { type: "string", default: "16384" },
      "max-batch-tokens": { type: "string", default: "256" },
      "max-running": { type: "string", default: "64" },
      "max-queue": { type: "string", default: "256" },
      "max-body-bytes": { type: "string", default: String(4 * 1024 * 1024) },
      "shutdown-timeout": { type: "string", default: "30" },
    },
    strict: true,
  });
  const int = (flag: keyof typeof values, min: number): number => {
    const v = values[flag] as string;
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) {
      throw new TachyonError(`--${flag} must be an integer >= ${min}, got "${v}"`, "argument");
    }
    return n;
  };
  const port = int("port", 0);
  const kvCacheTokens = int("kv-cache-tokens", 1);
  const schedulerOptions = {
    maxBatchTokens: int("max-batch-tokens", 1),
    maxRunning: int("max-running", 1),
    maxWaiting: int("max-queue", 0),
  };
  const bodyLimit = int("max-body-bytes", 1024);
  const shutdownSeconds = int("shutdown-timeout", 0);

  const models: { name: string; model: LoadedModel }[] = [];
  for (const spec of values.model ?? (values.shape ? [] : [defaultModelDir])) {
    const eq = spec.indexOf("=");
    const dir = modelDir({ model: eq > 0 ? spec.slice(eq + 1) : spec });
    const name = eq > 0 ? spec.slice(0, eq) : path.basename(path.resolve(dir));
    const model = await loadModel(dir, { ...loadOptions(values), kvCacheTokens });
    process.stderr.write(`${name}: ${model.info.architecture} from ${dir} on ${model.deviceNote}\n`);
    models.push({ name, model });
  }
  if (values.shape) {
    // Random weights of a named shape, with the embedded model's tokenizer (the bench's models).
    const model = LoadedModel.random(values.shape, defaultModelDir, {
      ...loadOptions(values),
      kvCacheTokens,
    });
    process.stderr.write(`${values.shape}: random weights on ${model.deviceNote}\n`);
    models.push({ name: values.shape, model });
  }
  // One draft model serves every model for speculation method "draft": they must share its tokenizer.
  const draft =
    values["draft-model"] === undefined
      ? undefined
      : await loadModel(modelDir({ model: values["draft-model"] }), {
          ...loadOptions(values),
          kvCacheTokens,
        });
  if (draft) {
    for (const { model } of models) assertSameTokenizer(model.tokenizer, draft.tokenizer);
    process.stderr.write(`draft model for speculation: ${draft.info.architecture} from ${draft.dir}\n`);
  }
  const names = models.map((m) => m.name);
  const duplicate = names.find((n, i) => names.indexOf(n) !== i);
  if (duplicate)
    throw new TachyonError(
      `two models are named "${duplicate}"; name them with --model NAME=DIR`,
      "argument",
    );

  const server = createServer({
    models: new ModelRegistry(
      models.map((m) => ({ ...m, draft })),
      schedulerOptions,
    ),
    apiKeys: values["api-key"],
    bodyLimit,
  });
  const address = await server.app.listen({ host: values.host, port });
  process.stderr.write(
    `serving ${names.join(", ")} on ${address} (POST /v1/chat/completions, /v1/completions; GET /v1/models, /health, /metrics)` +
      (values["api-key"] ? `; ${values["api-key"].length} API key(s) required` : "") +
      "\n",
  );

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      process.stderr.write(
        `${signal}: finishing requests in flight (up to ${shutdownSeconds} s), then exiting\n`,
      );
      server.shutdown(shutdownSeconds * 1000).then(resolve, resolve);
      // A second signal does not wait.
      process.once(signal, () => process.exit(130));
    };
    process.once("SIGINT", () => stop("SIGINT"));
    process.once("SIGTERM", () => stop("SIGTERM"));
  });
  process.stderr.write("server closed\n");
  return 0;
}
