// Where the extension hands text to VS Code to show (notifications, the status bar, quick picks, input boxes,
// progress titles, tree items), that text must be one the reader can trust: a whole string literal (no `+`), a
// call of a guard as the whole argument (inert() where VS Code renders `[label](command:…)` links, pickInert()
// where it renders `$(icon)`, oneLine() in a tree row or a plain hover), or an expression on an allow-list of
// reviewed pure builders (unit-tested: they apply the guards themselves). Read with the TypeScript compiler, so a
// message built in a variable first, `'Writ: ' + name`, `inert('Writ: ') + err.message`, a destructured
// `showErrorMessage` or `window['showWarningMessage']` is caught, not only the textual form the old regex saw.
// A guard counts only when the file imports it from extension/inert.ts under that name and declares nothing else by
// it (a local `const inert = (s) => s` is no guard). Notification buttons and options (`{ detail }`), progress
// reports, webview titles, input validation messages, quick pick item buttons' tooltips, and shown properties
// written with `+=`, `x['tooltip'] =` or Object.assign are checked too.
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
const SINKS = new Set([...MESSAGE, 'setStatusBarMessage', 'showInputBox', 'withProgress', 'showQuickPick', 'createQuickPick', 'createInputBox', 'createStatusBarItem', 'createWebviewPanel', 'createTreeView']);
/**
 * Assigned properties that VS Code shows (a quick pick's, an input box's, a tree item's, a status bar item's, a
 * tree view's message and badge).
 */
const SHOWN_PROPS: Record<string, Guards> = {
  title: PICK, placeholder: PICK, prompt: PICK, text: PICK, value: PICK, validationMessage: PICK, label: TREE, description: TREE, tooltip: TREE, message: TREE,
};
/** Assigned properties that VS Code shows an object's fields of: a view's badge `{ value, tooltip }`. */
const SHOWN_OBJECT_PROPS: Record<string, readonly string[]> = { badge: ['tooltip'] };
/** The module the guards come from (extension/inert.ts), as a file imports it. */
const GUARD_MODULE = /(^|\/)inert(\.ts)?$/;
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
  /**
   * A reviewed builder, by its shape (`row.label`, `findingMessage()`) and by where its name comes from: a call's
   * function and a property's object must be imported from an extension module, or be a const holding a call of
   * such an import (`const row = agentRow(a)`), or a parameter whose type is imported (`ctx: WritContext`). A
   * function declared in the file itself counts only when listed as `file: local name()`. So a local
   * `const row = { label: a.name }` or `const render = () => …` does not pass for the reviewed one.
   */
  const reviewed = (e: ts.Expression): boolean => {
    const shape = norm(e);
    if (!builders.has(`${file}: ${shape}`) && !builders.has(`*: ${shape}`) && !builders.has(`${file}: local ${shape}`)) return false;
    const root = rootOf(e);
    if (!root) return false;
    const d = declarationOf(root);
    if (d === 'import') return true;
    if (!d) return false;
    if (ts.isCallExpression(e) && ts.isIdentifier(e.expression) && e.expression === root) return builders.has(`${file}: local ${shape}`) && isFunctionDeclaration(d);
    if (ts.isVariableDeclaration(d) && ts.isVariableDeclarationList(d.parent) && d.parent.flags & ts.NodeFlags.Const && d.initializer) {
      const init = d.initializer;
      const callee = ts.isCallExpression(init) ? rootOf(init.expression) : undefined;
      return !!callee && declarationOf(callee) === 'import';
    }
    if (ts.isParameter(d) && d.type && ts.isTypeReferenceNode(d.type) && ts.isIdentifier(d.type.typeName)) return importedNames.has(d.type.typeName.text);
    return false;
  };
  const guardNames = importedGuards(sf);
  /** Names imported from the extension's own modules (`./x`, `../extension/x`). */
  const importedNames = new Set<string>();
  for (const st of sf.statements) {
    if (!ts.isImportDeclaration(st) || !ts.isStringLiteral(st.moduleSpecifier) || !st.moduleSpecifier.text.startsWith('.')) continue;
    const named = st.importClause?.namedBindings;
    if (named && ts.isNamedImports(named)) for (const el of named.elements) importedNames.add(el.name.text);
  }
  /** The identifier an expression starts from: `row` in `row.label`, `render` in `render()`, `MODE_ITEMS` in `MODE_ITEMS.map()`. */
  const rootOf = (e: ts.Expression): ts.Identifier | undefined => {
    if (ts.isIdentifier(e)) return e;
    if (ts.isParenthesizedExpression(e) || ts.isNonNullExpression(e) || ts.isPropertyAccessExpression(e) || ts.isCallExpression(e)) return rootOf(e.expression);
    return undefined;
  };
  const isFunctionDeclaration = (d: ts.Node) =>
    ts.isFunctionDeclaration(d) || (ts.isVariableDeclaration(d) && !!d.initializer && (ts.isArrowFunction(d.initializer) || ts.isFunctionExpression(d.initializer)));
  /**
   * What a name refers to where it is used: the nearest enclosing declaration (a parameter, a variable or function
   * of an enclosing block), 'import' for an import from the extension's modules, undefined when unknown.
   */
  const declarationOf = (id: ts.Identifier): ts.Node | 'import' | undefined => {
    const name = id.text;
    const inList = (list: ts.VariableDeclarationList): ts.Node | undefined => {
      for (const d of list.declarations) {
        if (ts.isIdentifier(d.name)) {
          if (d.name.text === name) return d;
        } else if (d.name.getText(sf).match(new RegExp(`\\b${name}\\b`))) return d.name;
      }
      return undefined;
    };
    for (let a: ts.Node | undefined = id.parent; a; a = a.parent) {
      if (ts.isFunctionLike(a)) for (const p of a.parameters) if (p.name.getText(sf).match(new RegExp(`\\b${name}\\b`))) return p;
      if ((ts.isForStatement(a) || ts.isForOfStatement(a) || ts.isForInStatement(a)) && a.initializer && ts.isVariableDeclarationList(a.initializer)) {
        const d = inList(a.initializer);
        if (d) return d;
      }
      if (ts.isCatchClause(a) && a.variableDeclaration?.name.getText(sf) === name) return a.variableDeclaration;
      const statements = ts.isBlock(a) || ts.isSourceFile(a) || ts.isModuleBlock(a) || ts.isCaseClause(a) || ts.isDefaultClause(a) ? a.statements : undefined;
      for (const st of statements ?? []) {
        if (ts.isVariableStatement(st)) {
          const d = inList(st.declarationList);
          if (d) return d;
        } else if ((ts.isFunctionDeclaration(st) || ts.isClassDeclaration(st)) && st.name?.text === name) return st;
        else if (ts.isImportDeclaration(st) && importedNames.has(name)) {
          const named = st.importClause?.namedBindings;
          if (named && ts.isNamedImports(named) && named.elements.some((el) => el.name.text === name)) return 'import';
        }
      }
    }
    return undefined;
  };

  const safe = (e: ts.Expression, guards: Guards, depth = 0): boolean => {
    if (ts.isParenthesizedExpression(e) || ts.isNonNullExpression(e)) return safe(e.expression, guards, depth);
    if (ts.isStringLiteral(e) || ts.isNoSubstitutionTemplateLiteral(e)) return true;
    // Nothing shown (a validateInput that accepts the value).
    if (e.kind === ts.SyntaxKind.NullKeyword || (ts.isIdentifier(e) && e.text === 'undefined')) return true;
    if (ts.isConditionalExpression(e)) return safe(e.whenTrue, guards, depth) && safe(e.whenFalse, guards, depth);
    if (ts.isCallExpression(e) && ts.isIdentifier(e.expression) && guards.has(guardNames.get(e.expression.text) ?? '')) return true;
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
  /**
   * An options object: the named properties shown (`validateInput`: what its function returns). Anything but an
   * object literal (or a const holding one) cannot be read here.
   */
  const checkOptions = (e: ts.Expression | undefined, props: readonly string[], guards: Guards, what: string, depth = 0) => {
    if (!e) return;
    if (ts.isParenthesizedExpression(e)) return checkOptions(e.expression, props, guards, what, depth);
    if (reviewed(e)) return;
    if (ts.isIdentifier(e) && depth < 3) {
      const init = constant(e.text);
      if (init) return checkOptions(init, props, guards, what, depth + 1);
    }
    if (!ts.isObjectLiteralExpression(e)) return report(e, `${what} options`);
    for (const p of e.properties) {
      if (ts.isSpreadAssignment(p)) report(p, `${what} options spread`);
      else if (p.name && (ts.isIdentifier(p.name) || ts.isStringLiteral(p.name)) && props.includes(p.name.text)) {
        const check1 = p.name.text === 'validateInput' ? (x: ts.Expression) => checkReturns(x, guards, `${what} ${p.name!.getText(sf)}`) : (x: ts.Expression) => check(x, guards, `${what} ${p.name!.getText(sf)}`);
        if (ts.isPropertyAssignment(p)) check1(p.initializer);
        else if (ts.isShorthandPropertyAssignment(p)) check1(p.name);
        else if (p.name.text === 'validateInput' && ts.isMethodDeclaration(p)) checkBody(p, guards, `${what} validateInput`);
        else report(p, `${what} ${p.name.text}`);
      } else if (p.name && ts.isComputedPropertyName(p.name)) report(p, `${what} computed property`);
    }
  };
  /** What a function returns (an arrow's expression, each `return` of a body), or the function in a const. */
  const checkReturns = (e: ts.Expression, guards: Guards, what: string, depth = 0): void => {
    if (ts.isParenthesizedExpression(e)) return checkReturns(e.expression, guards, what, depth);
    if (reviewed(e)) return;
    if (ts.isArrowFunction(e) || ts.isFunctionExpression(e)) return checkBody(e, guards, what);
    if (ts.isIdentifier(e) && depth < 3) {
      const init = constant(e.text);
      if (init) return checkReturns(init, guards, what, depth + 1);
    }
    report(e, what);
  };
  const checkBody = (fn: ts.FunctionLikeDeclaration, guards: Guards, what: string): void => {
    if (!fn.body) return;
    if (!ts.isBlock(fn.body)) return check(fn.body, guards, what);
    const visitReturns = (n: ts.Node): void => {
      if (ts.isReturnStatement(n)) check(n.expression, guards, what);
      if (!ts.isFunctionLike(n)) ts.forEachChild(n, visitReturns);
    };
    visitReturns(fn.body);
  };
  /** Quick pick item buttons: an array of object literals (or consts holding one), each button's tooltip shown. */
  const checkButtons = (e: ts.Expression, what: string): void => {
    if (reviewed(e)) return;
    if (!ts.isArrayLiteralExpression(e)) return report(e, what);
    for (const el of e.elements) checkOptions(ts.isSpreadElement(el) ? el.expression : el, ['tooltip'], TREE, what);
  };
  /** An assignment to a shown property: `x.prop = v`, `x.prop += v`, `x['prop'] = v`, Object.assign(x, { prop: v }). */
  const checkShown = (prop: string, right: ts.Expression, what: string): void => {
    if (prop === 'items') checkItems(right);
    else if (prop === 'buttons') checkButtons(right, `${what} buttons`);
    else if (SHOWN_PROPS[prop]) check(right, SHOWN_PROPS[prop]!, `${what}${prop}`);
    else if (SHOWN_OBJECT_PROPS[prop]) checkOptions(right, SHOWN_OBJECT_PROPS[prop]!, TREE, `${what}${prop}`);
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
        else if (p.name && ts.isIdentifier(p.name) && p.name.text === 'buttons') {
          if (ts.isPropertyAssignment(p)) checkButtons(p.initializer, 'quick pick item buttons');
          else report(p, 'quick pick item buttons');
        } else if (p.name && ts.isIdentifier(p.name) && ITEM_PROPS.has(p.name.text)) {
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
      if (name && MESSAGE.has(name)) {
        check(a0, NOTIFY, name);
        // After the message: the options (`{ modal, detail }`) and the buttons (strings or `{ title }` items).
        for (const a of n.arguments.slice(1)) {
          const arg = ts.isSpreadElement(a) ? a.expression : a;
          if (ts.isSpreadElement(a)) check(arg, NOTIFY, `${name} buttons spread`);
          else if (ts.isObjectLiteralExpression(arg) || (ts.isIdentifier(arg) && constant(arg.text) && ts.isObjectLiteralExpression(constant(arg.text)!)))
            checkOptions(arg, ['detail', 'title'], NOTIFY, `${name} argument`);
          else check(arg, NOTIFY, `${name} button`);
        }
      }
      else if (name === 'setStatusBarMessage') check(a0, PICK, name);
      else if (name === 'showInputBox' || name === 'createInputBox') checkOptions(a0, ['title', 'prompt', 'placeHolder', 'value', 'validateInput'], PICK, name);
      else if (name === 'withProgress') checkOptions(a0, ['title'], NOTIFY, name);
      else if (name === 'report' && a0 && ts.isObjectLiteralExpression(a0)) checkOptions(a0, ['message'], NOTIFY, 'progress.report');
      else if (name === 'createWebviewPanel') check(a1, TREE, 'webview panel title');
      else if (name === 'createTreeView') checkOptions(a1, ['message'], TREE, name);
      else if (norm(callee) === 'Object.assign') {
        for (const a of n.arguments.slice(1)) {
          if (!ts.isObjectLiteralExpression(a)) {
            if (!reviewed(a)) report(a, 'Object.assign source');
            continue;
          }
          for (const p of a.properties) {
            if (ts.isSpreadAssignment(p) || (p.name && ts.isComputedPropertyName(p.name))) report(p, 'Object.assign source spread or computed');
            else if (p.name && (ts.isIdentifier(p.name) || ts.isStringLiteral(p.name))) {
              if (ts.isPropertyAssignment(p)) checkShown(p.name.text, p.initializer, 'Object.assign ');
              else if (ts.isShorthandPropertyAssignment(p)) checkShown(p.name.text, p.name, 'Object.assign ');
              else if (SHOWN_PROPS[p.name.text] || p.name.text === 'items') report(p, `Object.assign ${p.name.text}`);
            }
          }
        }
      }
      else if (name === 'showQuickPick') {
        if (a0) checkItems(a0);
        checkOptions(a1, ['title', 'placeHolder'], PICK, name);
      }
      if (name && SINKS.has(name) && ts.isIdentifier(callee)) report(n, `${name} called by a bare name (destructured or aliased)`);
    } else if (ts.isNewExpression(n) && /(^|\.)TreeItem$/.test(norm(n.expression))) {
      check(n.arguments?.[0], TREE, 'TreeItem label');
    } else if (ts.isBinaryExpression(n) && n.operatorToken.kind >= ts.SyntaxKind.FirstAssignment && n.operatorToken.kind <= ts.SyntaxKind.LastAssignment) {
      // `=`, and `+=`, `??=`, `||=`: what is added must be safe too (what was there already was checked when set).
      const left = n.left;
      const key = ts.isElementAccessExpression(left) ? left.argumentExpression : undefined;
      const prop = ts.isPropertyAccessExpression(left) ? left.name.text : key && (ts.isStringLiteral(key) || ts.isNoSubstitutionTemplateLiteral(key)) ? key.text : undefined;
      if (prop) checkShown(prop, n.right, `${n.operatorToken.getText(sf)} .`);
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

/**
 * The guards a file may call: local name → the name it has in extension/inert.ts, for each named import from it,
 * unless the file declares something else by that local name (a parameter, a variable, a function).
 */
function importedGuards(sf: ts.SourceFile): Map<string, string> {
  const out = new Map<string, string>();
  for (const st of sf.statements) {
    if (!ts.isImportDeclaration(st) || !ts.isStringLiteral(st.moduleSpecifier) || !GUARD_MODULE.test(st.moduleSpecifier.text)) continue;
    const named = st.importClause?.namedBindings;
    if (st.importClause?.isTypeOnly || !named || !ts.isNamedImports(named)) continue;
    for (const el of named.elements) if (!el.isTypeOnly) out.set(el.name.text, (el.propertyName ?? el.name).text);
  }
  const visit = (n: ts.Node): void => {
    if ((ts.isVariableDeclaration(n) || ts.isParameter(n) || ts.isBindingElement(n) || ts.isFunctionDeclaration(n) || ts.isClassDeclaration(n)) && n.name && ts.isIdentifier(n.name)) out.delete(n.name.text);
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
