/** What speculation achieved for one request, as the CLI, the API's usage and the bench report it. */
export interface SpeculationStats {
  /** The proposer: "mtp", "draft", "ngram" or "custom". */
  method: string;
  /** Verification steps while decoding (target forward passes after the first token). */
  steps: number;
  proposedTokens: number;
  acceptedTokens: number;
  /** acceptedTokens / proposedTokens (0 when nothing was proposed). */
  acceptanceRate: number;
  /** Tokens per verification step: 1 + accepted proposals, on average. */
  meanAcceptedLength: number;
}

export class SpeculationCounter {
  steps = 0;
  proposed = 0;
  accepted = 0;

  record(proposed: number, accepted: number): void {
    this.steps++;
    this.proposed += proposed;
    this.accepted += accepted;
  }

  stats(method: string): SpeculationStats {
    return {
      method,
      steps: this.steps,
      proposedTokens: this.proposed,
      acceptedTokens: this.accepted,
      acceptanceRate: this.proposed > 0 ? this.accepted / this.proposed : 0,
      meanAcceptedLength: this.steps > 0 ? 1 + this.accepted / this.steps : 0,
    };
  }
}
