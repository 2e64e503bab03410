// The audit panel's script (bundled by esbuild into dist/webview/audit.js). Holds the records (capped), renders
// only the rows in view, keyed so a frame touches only rows that entered or left it, and filters new records as
// they come instead of re-filtering all. Every message from the extension is parsed with the protocol's schema;
// it posts only WebviewToExtension messages.
import { AUDIT_EVENTS, ExtensionToWebview } from '../broker/protocol';
import type { AuditRecord, VerifyView, WebviewToExtension } from '../broker/protocol';
import { NO_FILTER, agentOptionText, agentsSeen, rowCells, visibleWindow } from '../extension/auditFilter';
import { BROKER_SILENT_NOTE, RowIndex, countText, dismissedFindingId, findingKindWords, findingOf, findingText, rowActions, stopTitle } from '../extension/auditRows';

declare function acquireVsCodeApi(): { postMessage(msg: unknown): void };

const ROW_HEIGHT = 22;
const vscode = acquireVsCodeApi();
const post = (msg: WebviewToExtension) => vscode.postMessage(msg);

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const viewport = $<HTMLDivElement>('viewport');
const spacer = $<HTMLDivElement>('spacer');
const agentSelect = $<HTMLSelectElement>('agent');
const eventSelect = $<HTMLSelectElement>('event');
const textInput = $<HTMLInputElement>('text');
const count = $<HTMLSpanElement>('count');
const verify = $<HTMLSpanElement>('verify');
const note = $<HTMLDivElement>('note');

const index = new RowIndex(NO_FILTER);
let live = new Set<string>();
const dismissed = new Set<string>();
let knownAgents = new Map<string, string>();
/** Rendered rows by record key; a row is built once while it stays in the window. */
let rendered = new Map<number, HTMLElement>();
let frame = 0;
/** Follow the newest rows: true until the user scrolls up, true again at the bottom. Kept by the scroll handler, so a message never reads layout. */
let follow = true;
/** The scrollTop render() set itself: its scroll event is not the user's and needs no second frame. */
let ownScrollTop = -1;
/** The viewport's height, kept by a ResizeObserver: reading clientHeight in render() forced a layout each frame. */
let viewportHeight = viewport.clientHeight;
let spacerHeight = -1;
let shownCount = '';

for (const e of AUDIT_EVENTS) eventSelect.add(new Option(e, e));

function schedule(): void {
  if (!frame) frame = requestAnimationFrame(render);
}

/** Rows change content (live agents, dismissed findings, a new filter): build the visible ones again. */
function invalidate(): void {
  for (const row of rendered.values()) row.remove();
  rendered = new Map();
  schedule();
}

function cell(text: string, cls: string): HTMLSpanElement {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  s.title = text;
  return s;
}

function button(label: string, title: string, data: Record<string, string>): HTMLButtonElement {
  const b = document.createElement('button');
  b.type = 'button';
  b.textContent = label;
  b.title = title;
  Object.assign(b.dataset, data);
  return b;
}

function buildRow(r: AuditRecord): HTMLElement {
  const row = document.createElement('div');
  const finding = findingOf(r);
  row.className = `row${finding ? ' finding' : r.outcome === 'failure' || r.event === 'task.denied' ? ' failure' : ''}`;
  row.setAttribute('role', 'row');
  // Stable hooks for tests and tools: the event name, the record's position in the log and the agent's id.
  row.dataset.event = r.event;
  row.dataset.seq = String(r.seq);
  if (r.agent) row.dataset.agentId = r.agent.id;
  const [time, event, agent, task, scopes, detail] = rowCells(r);
  const { stop, dismiss } = rowActions(r, live, dismissed);
  if (finding) {
    row.dataset.findingId = finding.id;
    if (dismissed.has(finding.id)) row.classList.add('dismissed');
    // The kind in words where the event name would be; the evidence and the action as the detail.
    row.append(cell(time, 'time'), cell(findingKindWords(finding.kind), 'event'), cell(agent, 'agent'), cell(task, 'task'), cell(scopes, 'scopes'), cell(findingText(finding), 'detail'));
  } else {
    row.append(cell(time, 'time'), cell(event, 'event'), cell(agent, 'agent'), cell(task, 'task'), cell(scopes, 'scopes'), cell(detail, 'detail'));
  }
  const action = document.createElement('span');
  action.className = 'action';
  if (stop && r.agent) {
    const label = finding ? 'Stop agent' : 'Stop';
    action.append(button(label, stopTitle(r.agent.name), { agent: r.agent.id }));
  }
  if (dismiss) action.append(button('Dismiss', 'Dismiss this finding (expected behaviour); the dismissal is audited', { dismiss }));
  else if (finding && dismissed.has(finding.id)) action.append(cell('Dismissed', 'note'));
  row.append(action);
  return row;
}

function render(): void {
  frame = 0;
  const total = index.shownCount;
  if (spacerHeight !== total * ROW_HEIGHT) spacer.style.height = `${(spacerHeight = total * ROW_HEIGHT)}px`;
  const height = viewportHeight;
  let top: number;
  if (follow) {
    // Following needs no read of scrollTop: the bottom is known from the row count.
    top = Math.max(0, total * ROW_HEIGHT - height);
    if (top !== ownScrollTop) {
      ownScrollTop = top;
      viewport.scrollTop = top;
    }
  } else {
    top = viewport.scrollTop;
  }
  const { start, end } = visibleWindow(top, height, ROW_HEIGHT, total);
  const next = new Map<number, HTMLElement>();
  const added: HTMLElement[] = [];
  for (let i = start; i < end; i++) {
    const s = index.shown(i)!;
    let row = rendered.get(s.key);
    if (row) rendered.delete(s.key);
    else added.push((row = buildRow(s.record)));
    const y = `${i * ROW_HEIGHT}px`;
    if (row.style.top !== y) row.style.top = y;
    next.set(s.key, row);
  }
  for (const old of rendered.values()) old.remove();
  rendered = next;
  if (added.length) spacer.append(...added);
  const c = countText(total, index.size, index.dropped);
  if (c !== shownCount) count.textContent = shownCount = c;
}

/** Adds the agents named by `fresh` to the filter list; only new records are scanned, so a busy log stays cheap. */
function updateAgents(fresh: readonly AuditRecord[], rebuild: boolean): void {
  const seen = rebuild ? new Map<string, string>() : new Map(knownAgents);
  for (const [id, name] of agentsSeen(fresh)) if (!seen.has(id)) seen.set(id, name);
  if (!rebuild && seen.size === knownAgents.size) return;
  knownAgents = seen;
  const current = agentSelect.value;
  agentSelect.replaceChildren(new Option('All agents', ''), ...[...seen].map(([id, name]) => new Option(agentOptionText(id, name), id)));
  agentSelect.value = current;
}

const VERIFY_LABEL: Record<VerifyView['state'], string> = {
  running: 'Verifying…',
  intact: '✓ Chain verifies',
  broken: '✗ Chain broken',
  unverifiable: '⚠ Chain holds; checkpoints not all checkable here',
  error: '? Not verified',
};

function showVerify(v: VerifyView): void {
  verify.className = `verify ${v.state}`;
  verify.dataset.state = v.state;
  verify.textContent = VERIFY_LABEL[v.state];
  verify.title = v.state === 'running' ? '' : v.message;
}

function setFilter(): void {
  index.setFilter({ agent: agentSelect.value, event: eventSelect.value, text: textInput.value });
  invalidate();
}

window.addEventListener('message', (e: MessageEvent) => {
  const parsed = ExtensionToWebview.safeParse(e.data);
  if (!parsed.success) return;
  const msg = parsed.data;
  switch (msg.type) {
    case 'records': {
      // Rendered on the next frame: a burst of messages costs one layout, not one each.
      if (msg.reset) {
        index.clear(msg.older ?? 0);
        dismissed.clear();
        follow = true;
        invalidate();
      }
      let closed = false;
      for (const r of msg.records) {
        const id = dismissedFindingId(r);
        if (id !== undefined && !dismissed.has(id)) {
          dismissed.add(id);
          closed = true;
        }
      }
      index.append(msg.records);
      updateAgents(msg.records, msg.reset);
      if (closed) invalidate();
      else schedule();
      return;
    }
    case 'agents': {
      const next = new Set(msg.live);
      if (next.size === live.size && [...next].every((id) => live.has(id))) return;
      live = next;
      invalidate();
      return;
    }
    case 'verify':
      showVerify(msg.result);
      return;
    case 'broker':
      // Above the rows, not in them: the rows stay the log's own.
      note.textContent = msg.answering ? '' : BROKER_SILENT_NOTE;
      note.hidden = msg.answering;
      return;
  }
});

viewport.addEventListener(
  'scroll',
  () => {
    const top = viewport.scrollTop;
    // Our own scroll to the bottom: render() already drew this window.
    if (follow && Math.abs(top - ownScrollTop) < 1) return;
    ownScrollTop = -1;
    follow = top + viewportHeight >= index.shownCount * ROW_HEIGHT - ROW_HEIGHT;
    schedule();
  },
  { passive: true },
);
new ResizeObserver(() => {
  viewportHeight = viewport.clientHeight;
  ownScrollTop = -1;
  schedule();
}).observe(viewport);
spacer.addEventListener('click', (e) => {
  const data = (e.target as HTMLElement).dataset;
  if (data?.agent) post({ type: 'stopAgent', agentId: data.agent });
  else if (data?.dismiss) post({ type: 'dismissFinding', id: data.dismiss });
});
agentSelect.addEventListener('change', setFilter);
eventSelect.addEventListener('change', setFilter);
textInput.addEventListener('input', setFilter);
$('verifyButton').addEventListener('click', () => post({ type: 'verify' }));
$('exportButton').addEventListener('click', () => post({ type: 'export' }));

post({ type: 'ready' });
