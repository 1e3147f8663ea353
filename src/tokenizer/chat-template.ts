/**
 * Chat templates: the Jinja program shipped with a model that turns messages into its prompt
 * format, run by @huggingface/jinja with the variables transformers provides.
 */
import { Template } from "@huggingface/jinja";
import { TachyonError } from "../errors.js";

export interface ChatMessage {
  role: string;
  content: string;
}

export class ChatTemplate {
  private readonly template: Template;
  constructor(
    source: string,
    private readonly specialTokens: Record<string, string>,
  ) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new TachyonError(`the chat template does not parse: ${(e as Error).message}`, "tokenizer");
    }
  }

  render(messages: ChatMessage[], addGenerationPrompt: boolean): string {
    try {
      return this.template.render({
        messages,
        add_generation_prompt: addGenerationPrompt,
        ...this.specialTokens,
      });
    } catch (e) {
      // Templates reject malformed chats themselves (raise_exception), e.g. roles out of order.
      throw new TachyonError(`the chat template refused these messages: ${(e as Error).message}`, "argument");
    }
  }
}
