import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { ArithmeticError, evaluateArithmetic, findArithmeticExpression } from '../../src/runs/calculator.js';

describe('evaluateArithmetic', () => {
  it.each([
    ['42', 42],
    ['2+3*4', 14],
    ['2*3+4', 10],
    ['(2+3)*4', 20],
    ['10-4-3', 3],
    ['100/10/5', 2],
    ['8-2*3/4', 6.5],
    ['-5', -5],
    ['--5', 5],
    ['2 - -3', 5],
    ['-(2+3)*2', -10],
    ['-2*-3', 6],
    ['1.5*4', 6],
    ['.5 + 0.25', 0.75],
    ['  ( 1.5 + 2 ) * 4  ', 14],
    ['((((7))))', 7],
    ['7/2', 3.5],
    ['0/5', 0],
  ])('%s = %s', (expression, expected) => {
    expect(evaluateArithmetic(expression)).toBe(expected);
  });

  it.each([
    ['1/0', /division by zero/],
    ['5/(2-2)', /division by zero/],
    ['', /unexpected end of expression/],
    ['2+', /unexpected end of expression/],
    ['2 3', /unexpected '3' at position 2/],
    ['(2+3', /expected '\)'/],
    ['2+3)', /unexpected '\)'/],
    ['1.2.3', /unexpected '\.'/],
    ['2**3', /unexpected '\*'/],
    ['+2', /unexpected '\+'/],
    ['abc', /unexpected 'a' at position 0/],
    ['2+3; process.exit()', /unexpected ';'/],
    ['('.repeat(10_000) + '1' + ')'.repeat(10_000), /nested too deeply/],
    ['9'.repeat(400) + '*10', /too large/],
  ])('rejects %j', (expression, message) => {
    expect(() => evaluateArithmetic(expression)).toThrow(ArithmeticError);
    expect(() => evaluateArithmetic(expression)).toThrow(message);
  });

  type Tree =
    | { kind: 'number'; value: number }
    | { kind: 'negate'; operand: Tree }
    | { kind: 'parens'; inner: Tree }
    | { kind: 'binary'; operator: '+' | '-' | '*' | '/'; left: Tree; right: Tree };

  const { tree } = fc.letrec<{ tree: Tree }>((recurse) => ({
    tree: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      fc.record({ kind: fc.constant('number' as const), value: fc.integer({ min: -20, max: 20 }) }),
      fc.record({ kind: fc.constant('negate' as const), operand: recurse('tree') }),
      fc.record({ kind: fc.constant('parens' as const), inner: recurse('tree') }),
      fc.record({
        kind: fc.constant('binary' as const),
        operator: fc.constantFrom('+' as const, '-' as const, '*' as const, '/' as const),
        left: recurse('tree'),
        right: recurse('tree'),
      }),
    ),
  }));

  /** Reference semantics, computed on the tree; null where the expression divides by zero. */
  function referenceValue(node: Tree): number | null {
    switch (node.kind) {
      case 'number':
        return node.value;
      case 'negate': {
        const operand = referenceValue(node.operand);
        return operand === null ? null : -operand;
      }
      case 'parens':
        return referenceValue(node.inner);
      case 'binary': {
        const left = referenceValue(node.left);
        const right = referenceValue(node.right);
        if (left === null || right === null) return null;
        if (node.operator === '+') return left + right;
        if (node.operator === '-') return left - right;
        if (node.operator === '*') return left * right;
        return right === 0 ? null : left / right;
      }
    }
  }

  const precedence = (node: Tree): number => (node.kind === 'binary' ? (node.operator === '+' || node.operator === '-' ? 1 : 2) : 3);

  /** Prints with only the parentheses the tree needs (plus its explicit 'parens' nodes). */
  function render(node: Tree, space: string): string {
    switch (node.kind) {
      case 'number':
        return String(node.value);
      case 'negate':
        return `-${node.operand.kind === 'binary' ? `(${render(node.operand, space)})` : render(node.operand, space)}`;
      case 'parens':
        return `(${render(node.inner, space)})`;
      case 'binary': {
        const own = precedence(node);
        const left = render(node.left, space);
        const right = render(node.right, space);
        // Operators are left-associative, so an equal-precedence right operand needs parentheses.
        return [precedence(node.left) < own ? `(${left})` : left, node.operator, precedence(node.right) <= own ? `(${right})` : right].join(space);
      }
    }
  }

  it('matches a reference evaluator on random expression trees', () => {
    fc.assert(
      fc.property(tree, fc.constantFrom('', ' '), (expressionTree, space) => {
        const expression = render(expressionTree, space);
        const expected = referenceValue(expressionTree);
        if (expected === null) {
          expect(() => evaluateArithmetic(expression)).toThrow('division by zero');
        } else {
          expect(evaluateArithmetic(expression)).toBe(expected);
        }
      }),
      { numRuns: 500 },
    );
  });
});

describe('findArithmeticExpression', () => {
  it.each([
    ['what is 2+3*4?', '2+3*4'],
    ['(1.5 + 2) * 4 please', '(1.5 + 2) * 4'],
    ['2+3', '2+3'],
    ['What is 7 / 2.', '7 / 2'],
    ['version 2 of 10-3', '10-3'],
    ['negative: -3 * -2', '-3 * -2'],
    ['hello world', null],
    ['version 2', null],
    ['a-b', null],
    ['', null],
    ['- * / +', null],
    ['room 101, floor 3', null],
  ])('%j -> %j', (text, expected) => {
    expect(findArithmeticExpression(text)).toBe(expected);
  });

  it('finds expressions that the evaluator accepts', () => {
    const expression = findArithmeticExpression('Please compute (10 - 4) / 3 for me.');
    expect(expression).toBe('(10 - 4) / 3');
    expect(evaluateArithmetic(expression!)).toBe(2);
  });
});
