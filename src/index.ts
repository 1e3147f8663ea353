/** tachyon's library API. */
export { loadModel, inspectModel, LoadedModel } from "./engine/loaded-model.js";
export type { Device, LoadOptions, ModelInfo } from "./engine/loaded-model.js";
export type {
  GenerateOptions,
  GeneratedToken,
  GenerationResult,
  FinishReason,
  TokenLogprob,
  SpeculationOptions,
  SpeculationStats,
} from "./engine/generate.js";
export type { Proposer, Proposal } from "./engine/speculative/proposer.js";
export type { SamplingParams } from "./engine/sampling.js";
export type { ChatMessage } from "./tokenizer/chat-template.js";
export type { ModelConfig } from "./model/config.js";
export { Tokenizer } from "./tokenizer/tokenizer.js";
export { TachyonError } from "./errors.js";
