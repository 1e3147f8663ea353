/**
 * The models a server serves, by the name requests give in their `model` field, each with the
 * scheduler that batches its requests.
 */
import type { LoadedModel } from "../engine/loaded-model.js";
import { Scheduler, type SchedulerOptions } from "../engine/scheduler.js";
import type { DraftModel } from "../engine/speculative/draft-model.js";
import { ApiError } from "./api-error.js";

export interface ServedModel {
  name: string;
  model: LoadedModel;
  scheduler: Scheduler;
  /** The draft model for requests that speculate with method "draft" (same tokenizer), if loaded. */
  draft?: DraftModel;
  /** Unix seconds when it was loaded, for /v1/models. */
  created: number;
}

export class ModelRegistry {
  private readonly models = new Map<string, ServedModel>();

  constructor(
    models: { name: string; model: LoadedModel; draft?: DraftModel }[],
    options: SchedulerOptions = {},
  ) {
    const created = Math.floor(Date.now() / 1000);
    for (const { name, model, draft } of models) {
      if (this.models.has(name)) throw new Error(`two models are named "${name}"`);
      this.models.set(name, {
        name,
        model,
        scheduler: new Scheduler(model.executor, model.tokenizer, options),
        draft,
        created,
      });
    }
  }

  get(name: string): ServedModel {
    const served = this.models.get(name);
    if (!served) {
      throw new ApiError(
        404,
        `The model '${name}' does not exist on this server; it serves: ${[...this.models.keys()].join(", ")}.`,
        "invalid_request_error",
        "model",
        "model_not_found",
      );
    }
    return served;
  }

  list(): ServedModel[] {
    return [...this.models.values()];
  }

  /** Refuses new requests on every model; running ones go on. */
  close(): void {
    for (const m of this.models.values()) m.scheduler.close();
  }

  abortAll(): void {
    for (const m of this.models.values()) m.scheduler.abortAll();
  }
}
