/**
 * The demo agent's calculator tool: a recursive-descent parser for + - * /, unary minus,
 * parentheses and decimal numbers. User text is never handed to `eval` or `Function`.
 *
 *   expression := term (('+' | '-') term)*
 *   term       := unary (('*' | '/') unary)*
 *   unary      := '-'* primary
 *   primary    := number | '(' expression ')'
 */
export class ArithmeticError extends Error {
  override readonly name = 'ArithmeticError';
}

/** Bounds recursion so that a message full of '(' fails cleanly instead of overflowing the stack. */
const MAX_NESTING = 200;

const NUMBER = /\d+(?:\.\d+)?|\.\d+/y;

class Parser {
  #position = 0;
  #nesting = 0;

  readonly #source: string;

  constructor(source: string) {
    this.#source = source;
  }

  parse(): number {
    const value = this.#parseExpression();
    this.#skipWhitespace();
    if (this.#position < this.#source.length) throw this.#unexpected();
    if (!Number.isFinite(value)) throw new ArithmeticError('result is too large');
    return value;
  }

  #parseExpression(): number {
    let value = this.#parseTerm();
    for (let operator = this.#peek(); operator === '+' || operator === '-'; operator = this.#peek()) {
      this.#position++;
      const right = this.#parseTerm();
      value = operator === '+' ? value + right : value - right;
    }
    return value;
  }

  #parseTerm(): number {
    let value = this.#parseUnary();
    for (let operator = this.#peek(); operator === '*' || operator === '/'; operator = this.#peek()) {
      this.#position++;
      const right = this.#parseUnary();
      if (operator === '/' && right === 0) throw new ArithmeticError('division by zero');
      value = operator === '*' ? value * right : value / right;
    }
    return value;
  }

  #parseUnary(): number {
    let negate = false;
    while (this.#peek() === '-') {
      this.#position++;
      negate = !negate;
    }
    const value = this.#parsePrimary();
    return negate ? -value : value;
  }

  #parsePrimary(): number {
    if (this.#peek() === '(') {
      if (++this.#nesting > MAX_NESTING) throw new ArithmeticError('expression is nested too deeply');
      this.#position++;
      const value = this.#parseExpression();
      if (this.#peek() !== ')') throw this.#unexpected("')'");
      this.#position++;
      this.#nesting--;
      return value;
    }
    NUMBER.lastIndex = this.#position;
    const match = NUMBER.exec(this.#source);
    if (!match) throw this.#unexpected('a number');
    this.#position = NUMBER.lastIndex;
    return Number(match[0]);
  }

  /** The next non-whitespace character, or undefined at the end. */
  #peek(): string | undefined {
    this.#skipWhitespace();
    return this.#source[this.#position];
  }

  #skipWhitespace(): void {
    while (/\s/.test(this.#source[this.#position] ?? '')) this.#position++;
  }

  #unexpected(expected?: string): ArithmeticError {
    const found =
      this.#position < this.#source.length ? `unexpected '${this.#source[this.#position]}' at position ${this.#position}` : 'unexpected end of expression';
    return new ArithmeticError(expected ? `${found}, expected ${expected}` : found);
  }
}

export function evaluateArithmetic(expression: string): number {
  return new Parser(expression).parse();
}

/** Runs of characters that can make up an expression; the first qualifying run wins. */
const CANDIDATE_RUN = /[\d.+\-*/()\s]+/g;
/** An operand's end (digit or ')'), a binary operator, then an operand's start. */
const BINARY_OPERATION = /[\d)]\s*[+\-*/][\s(-]*\.?\d/;

export function findArithmeticExpression(text: string): string | null {
  for (const [run] of text.matchAll(CANDIDATE_RUN)) {
    if (BINARY_OPERATION.test(run)) {
      // A sentence's closing period ("What is 2+3.") is not part of the expression.
      return run.trim().replace(/\.+$/, '');
    }
  }
  return null;
}
