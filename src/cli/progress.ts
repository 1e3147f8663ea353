/**
 * A progress bar on stderr for long loads. It appears only on a terminal and only once a load
 * has taken longer than a moment, so quick loads and piped output stay clean.
 */
export class ProgressBar {
  private readonly start = performance.now();
  private shown = false;
  private lastDraw = 0;

  constructor(
    private readonly label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly delayMs = 300,
  ) {}

  update(done: number, total: number, detail = ""): void {
    if (!this.stream.isTTY) return;
    const elapsed = performance.now() - this.start;
    if (!this.shown && elapsed < this.delayMs) return;
    // Redraw at most ten times a second, and always at the end.
    if (elapsed - this.lastDraw < 100 && done < total) return;
    this.shown = true;
    this.lastDraw = elapsed;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const filled = Math.round(frac * width);
    const bar = "█".repeat(filled) + "░".repeat(width - filled);
    const mb = (n: number): string => (n / 1e6).toFixed(0);
    const line = `${this.label} ${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${mb(done)}/${mb(total)} MB ${detail}`;
    const columns = this.stream.columns || 100;
    this.stream.write(`\r${line.slice(0, columns - 1).padEnd(columns - 1)}`);
  }

  done(): void {
    if (this.shown) this.stream.write("\r" + " ".repeat((this.stream.columns || 100) - 1) + "\r");
  }
}
