/** A run spec that cannot be used; the message names the file and the offending field. */
export class SpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SpecError";
  }
}
