/**
 * Stop strings on streamed text. Text that might be the start of a stop string is held back
 * until the next token shows whether it is; a matched stop string and everything after it is
 * never emitted.
 */
export class StopStringMatcher {
  private text = "";
  private emitted = 0;
  private readonly longest: number;

  constructor(private readonly stops: readonly string[]) {
    this.longest = Math.max(0, ...stops.map((s) => s.length));
  }

  /** Adds decoded text; returns what may be shown now and whether a stop string was reached. */
  push(delta: string): { text: string; stopped: boolean } {
    if (this.stops.length === 0) return { text: delta, stopped: false };
    this.text += delta;
    const from = Math.max(0, this.emitted - this.longest + 1);
    let hit = -1;
    for (const s of this.stops) {
      const i = this.text.indexOf(s, from);
      if (i >= 0 && (hit < 0 || i < hit)) hit = i;
    }
    if (hit >= 0) return { text: this.take(Math.max(hit, this.emitted)), stopped: true };
    return { text: this.take(this.text.length - this.heldBack()), stopped: false };
  }

  /** Whatever was held back, once the stream ends without a stop string. */
  flush(): string {
    return this.take(this.text.length);
  }

  /** Length of the longest tail of the text that is a proper prefix of some stop string. */
  private heldBack(): number {
    const max = Math.min(this.longest - 1, this.text.length - this.emitted);
    for (let n = max; n > 0; n--) {
      const tail = this.text.slice(this.text.length - n);
      if (this.stops.some((s) => s.startsWith(tail))) return n;
    }
    return 0;
  }

  private take(end: number): string {
    const out = this.text.slice(this.emitted, end);
    this.emitted = Math.max(this.emitted, end);
    return out;
  }
}
