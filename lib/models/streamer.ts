// Decoding generated token ids to text as they arrive, without ever writing half a character.

/** What turning ids back into text needs from a tokenizer (GPT2Tokenizer has it). */
export interface TokenDecoder {
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
}

/**
 * Writes the text of token ids as they arrive. A token can end inside a multi-byte character
 * (byte-level BPE), which decodes to U+FFFD until the next token completes it, so a trailing
 * U+FFFD is held back until then (or until end()). The whole sequence is decoded each time, not
 * only the new ids: tokenizers that drop a word's leading space at the start of a decode
 * (SentencePiece's) would lose spaces if decoded piecewise.
 */
export class TextStreamer {
  private readonly ids: number[] = [];
  private written = "";

  constructor(
    private readonly tokenizer: TokenDecoder,
    private readonly write: (text: string) => void,
  ) {}

  push(id: number): void {
    this.ids.push(id);
    this.flush(false);
  }

  end(): void {
    this.flush(true);
  }

  private flush(final: boolean): void {
    const decoded = this.tokenizer.decode(this.ids, { skipSpecialTokens: true });
    const ready = final ? decoded : decoded.replace(/\uFFFD+$/, "");
    if (ready.length > this.written.length) this.write(ready.slice(this.written.length));
    this.written = ready;
  }
}
