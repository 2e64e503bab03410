// Where the extension hands text to VS Code to show (notifications, the status bar, quick picks, input boxes,
// progress titles, tree items), that text must be one the reader can trust: a whole string literal (no `+`), a
// call of a guard as the whole argument (inert() where VS Code renders `[label](command:…)` links, pickInert()
// where it renders `$(icon)`, oneLine() in a tree row or a plain hover), or an expression on an allow-list of
// reviewed pure builders (unit-tested: they apply the guards themselves). Read with the TypeScript compiler, so a
// message built in a variable first, `'Writ: ' + name`, `inert('Writ: ') + err.message`, a destructured
// `showErrorMessage` or `window['showWarningMessage']` is caught, not only the textual form the old regex saw.
import ts from 'typescript';

/** What a sink renders, so which guards make its text safe. */
type Guards = ReadonlySet<string>;
const NOTIFY: Guards = new Set(['inert', 'pickInert']);
/** Quick picks, input boxes and status bar text render `$(icon)` too. */
const PICK: Guards = new Set(['pickInert']);
/** Tree rows and plain-text hovers: printable on one line is enough (no links, no icons). */
const TREE: Guards = new Set(['oneLine', 'inert', 'pickInert']);

const MESSAGE = new Set(['showErrorMessage', 'showWarningMessage', 'showInformationMessage']);
/** Every API whose text argument is checked: it may only be called directly, by name. */
const SINKS = new Set([...MESSAGE, 'setStatusBarMessage', 'showInputBox', 'withProgress', 'showQuickPick', 'createQuickPick', 'createInputBox', 'createStatusBarItem']);
/** Assigned properties that VS Code shows (a quick pick's, an input box's, a tree item's, a status bar item's). */
const SHOWN_PROPS: Record<string, Guards> = { title: PICK, placeholder: PICK, prompt: PICK, text: PICK, label: TREE, description: TREE, tooltip: TREE };
const ITEM_PROPS = new Set(['label', 'description', 'detail']);

/**
 * The unchecked places in one file: `file:line: what: the expression's start`. `builders` holds the reviewed
 * expressions, normalised as norm() does (`row.label`, `findingMessage()`), as `file: expr` or `*: expr`.
 */
export function uncheckedUiText(file: string, source: string, builders: ReadonlySet<string>): string[] {
  const sf = ts.createSourceFile(file, source, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out: string[] = [];
  const report = (node: ts.Node, what: string) => {
    const line = sf.getLineAndCharacterOfPosition(node.getStart(sf)).line + 1;
    out.push(`${file}:${line}: ${what}: ${node.getText(sf).replace(/\s+/g, ' ').slice(0, 50)}`);
  };
  const reviewed = (e: ts.Expression) => builders.has(`${file}: ${norm(e)}`) || builders.has(`*: ${norm(e)}`);

  const safe = (e: ts.Expression, guards: Guards, depth = 0): boolean => {
    if (ts.isParenthesizedExpression(e) || ts.isNonNullExpression(e)) return safe(e.expression, guards, depth);
    if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) return true;
    if (ts.isConditionalExpression(e)) return safe(e.whenTrue, guards, depth) && safe(e.whenFalse, guards, depth);
    if (ts.isCallExpression(e) && ts.isIdentifier(e.expression) && guards.has(e.expression.text)) return true;
    if (reviewed(e)) return true;
    // A const declared once in the file (and no parameter of that name) is read through: `const title = reviewTitle(r)`.
    if (ts.isIdentifier(e) && depth < 3) {
      const init = constant(e.text);
      return init !== undefined && safe(init, guards, depth + 1);
    }
    return false;
  };
  const check = (e: ts.Expression | undefined, guards: Guards, what: string) => {
    if (e && !safe(e, guards)) report(e, what);
  };
  /** An options object: the named properties shown. Anything but an object literal cannot be read here. */
  const checkOptions = (e: ts.Expression | undefined, props: readonly string[], guards: Guards, what: string) => {
    if (!e) return;
    if (!ts.isObjectLiteralExpression(e)) return void (reviewed(e) || report(e, `${what} options`));
    for (const p of e.properties) {
      if (ts.isSpreadAssignment(p)) report(p, `${what} options spread`);
      else if (p.name && ts.isIdentifier(p.name) && props.includes(p.name.text)) {
        if (ts.isPropertyAssignment(p)) check(p.initializer, guards, `${what} ${p.name.text}`);
        else if (ts.isShorthandPropertyAssignment(p)) check(p.name, guards, `${what} ${p.name.text}`);
        else report(p, `${what} ${p.name.text}`);
      }
    }
  };
  /** The initializer of the one `const name = …` in the file; undefined when it is not one const (or a parameter shares the name). */
  const constant = (name: string): ts.Expression | undefined => {
    const found: ts.Node[] = [];
    const visit = (n: ts.Node) => {
      if ((ts.isVariableDeclaration(n) || ts.isParameter(n) || ts.isBindingElement(n)) && ts.isIdentifier(n.name) && n.name.text === name) found.push(n);
      ts.forEachChild(n, visit);
    };
    visit(sf);
    const d = found.length === 1 ? found[0]! : undefined;
    if (!d || !ts.isVariableDeclaration(d) || !ts.isVariableDeclarationList(d.parent) || !(d.parent.flags & ts.NodeFlags.Const)) return undefined;
    return d.initializer;
  };
  /** Quick pick items: arrays of object literals, `.map` to one, a variable holding one, or a reviewed builder. */
  const checkItems = (e: ts.Expression, depth = 0): void => {
    if (ts.isParenthesizedExpression(e)) return checkItems(e.expression, depth);
    if (reviewed(e)) return;
    if (ts.isArrayLiteralExpression(e)) {
      for (const el of e.elements) checkItems(ts.isSpreadElement(el) ? el.expression : el, depth);
      return;
    }
    if (ts.isConditionalExpression(e)) return (checkItems(e.whenTrue, depth), checkItems(e.whenFalse, depth));
    if (ts.isObjectLiteralExpression(e)) {
      for (const p of e.properties) {
        if (ts.isSpreadAssignment(p)) check(p.expression, PICK, 'quick pick item spread');
        else if (p.name && ts.isIdentifier(p.name) && ITEM_PROPS.has(p.name.text)) {
          if (ts.isPropertyAssignment(p)) check(p.initializer, PICK, `quick pick item ${p.name.text}`);
          else if (ts.isShorthandPropertyAssignment(p)) check(p.name, PICK, `quick pick item ${p.name.text}`);
          else report(p, `quick pick item ${p.name.text}`);
        }
      }
      return;
    }
    if (ts.isCallExpression(e) && ts.isPropertyAccessExpression(e.expression) && e.expression.name.text === 'map') {
      const fn = e.arguments[0];
      if (fn && ts.isArrowFunction(fn) && !ts.isBlock(fn.body)) return checkItems(fn.body, depth);
    }
    if (ts.isIdentifier(e) && depth < 3) {
      const init = constant(e.text);
      if (init) return checkItems(init, depth + 1);
    }
    report(e, 'quick pick items');
  };

  const visit = (n: ts.Node): void => {
    if (ts.isCallExpression(n)) {
      const callee = n.expression;
      const name = ts.isPropertyAccessExpression(callee) ? callee.name.text : ts.isIdentifier(callee) ? callee.text : undefined;
      const [a0, a1] = n.arguments;
      if (name && MESSAGE.has(name)) check(a0, NOTIFY, name);
      else if (name === 'setStatusBarMessage') check(a0, PICK, name);
      else if (name === 'showInputBox' || name === 'createInputBox') checkOptions(a0, ['title', 'prompt', 'placeHolder', 'value'], PICK, name);
      else if (name === 'withProgress') checkOptions(a0, ['title'], NOTIFY, name);
      else if (name === 'showQuickPick') {
        if (a0) checkItems(a0);
        checkOptions(a1, ['title', 'placeHolder'], PICK, name);
      }
      if (name && SINKS.has(name) && ts.isIdentifier(callee)) report(n, `${name} called by a bare name (destructured or aliased)`);
    } else if (ts.isNewExpression(n) && /(^|\.)TreeItem$/.test(norm(n.expression))) {
      check(n.arguments?.[0], TREE, 'TreeItem label');
    } else if (ts.isBinaryExpression(n) && n.operatorToken.kind === ts.SyntaxKind.EqualsToken && ts.isPropertyAccessExpression(n.left)) {
      const prop = n.left.name.text;
      if (prop === 'items') checkItems(n.right);
      else if (SHOWN_PROPS[prop]) check(n.right, SHOWN_PROPS[prop]!, `.${prop} =`);
    } else if (ts.isPropertyAccessExpression(n) && SINKS.has(n.name.text)) {
      // Only as the callee of a direct call: `const show = window.showErrorMessage` or `.bind` would escape the check.
      if (!(ts.isCallExpression(n.parent) && n.parent.expression === n)) report(n, `${n.name.text} taken, not called`);
    } else if (ts.isElementAccessExpression(n)) {
      const key = n.argumentExpression;
      if (/(^|\.)window$/.test(norm(n.expression)) || ((ts.isStringLiteral(key) || ts.isNoSubstitutionTemplateLiteral(key)) && SINKS.has(key.text))) report(n, 'window API by element access');
    } else if (ts.isVariableDeclaration(n) && n.initializer && /(^|\.)window$/.test(norm(n.initializer))) {
      report(n, 'vscode.window destructured or aliased');
    }
    ts.forEachChild(n, visit);
  };
  visit(sf);
  return out;
}

/** `row.label`, `findingMessage()`, `this.item`: an expression without its call arguments. */
export function norm(e: ts.Expression): string {
  if (ts.isParenthesizedExpression(e) || ts.isNonNullExpression(e)) return norm(e.expression);
  if (ts.isIdentifier(e)) return e.text;
  if (e.kind === ts.SyntaxKind.ThisKeyword) return 'this';
  if (ts.isPropertyAccessExpression(e)) return `${norm(e.expression)}.${e.name.text}`;
  if (ts.isCallExpression(e)) return `${norm(e.expression)}()`;
  return `<${ts.SyntaxKind[e.kind]}>`;
}
