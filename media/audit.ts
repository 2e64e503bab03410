// The audit panel's script (bundled by esbuild into dist/webview/audit.js). Holds every record, renders only
// the rows in view (tens of thousands stay smooth), filters by agent, event and text. Every message from the
// extension is parsed with the protocol's schema; it posts only WebviewToExtension messages.
import { AUDIT_EVENTS, ExtensionToWebview } from '../broker/protocol';
import type { AuditRecord, VerifyView, WebviewToExtension } from '../broker/protocol';
import { NO_FILTER, agentsSeen, filterIndices, matchesPanelFilter, rowCells, rowText, visibleWindow } from '../extension/auditFilter';
import type { PanelFilter } from '../extension/auditFilter';

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

let records: AuditRecord[] = [];
let texts: string[] = [];
let shown: number[] = [];
let filter: PanelFilter = { ...NO_FILTER };
let live = new Set<string>();
let knownAgents = new Map<string, string>();
let frame = 0;

for (const e of AUDIT_EVENTS) eventSelect.add(new Option(e, e));

function refilter(): void {
  shown = filterIndices(records, filter, texts);
  schedule();
}

function atBottom(): boolean {
  return viewport.scrollTop + viewport.clientHeight >= viewport.scrollHeight - ROW_HEIGHT;
}

function schedule(): void {
  if (!frame) frame = requestAnimationFrame(render);
}

function cell(text: string, cls: string): HTMLSpanElement {
  const s = document.createElement('span');
  s.className = cls;
  s.textContent = text;
  s.title = text;
  return s;
}

/** Set when new records arrive while the view is at the bottom: the next frame scrolls to the newest. */
let stickToBottom = false;

function render(): void {
  frame = 0;
  spacer.style.height = `${shown.length * ROW_HEIGHT}px`;
  if (stickToBottom) {
    stickToBottom = false;
    viewport.scrollTop = viewport.scrollHeight;
  }
  const { start, end } = visibleWindow(viewport.scrollTop, viewport.clientHeight, ROW_HEIGHT, shown.length);
  const rows: HTMLElement[] = [];
  for (let i = start; i < end; i++) {
    const r = records[shown[i]!]!;
    const row = document.createElement('div');
    row.className = `row${r.outcome === 'failure' || r.event === 'task.denied' ? ' failure' : ''}`;
    row.setAttribute('role', 'row');
    // Stable hooks for tests and tools: the event name and the agent's id.
    row.dataset.event = r.event;
    if (r.agent) row.dataset.agentId = r.agent.id;
    row.style.top = `${i * ROW_HEIGHT}px`;
    const [time, event, agent, task, scopes, detail] = rowCells(r);
    row.append(cell(time, 'time'), cell(event, 'event'), cell(agent, 'agent'), cell(task, 'task'), cell(scopes, 'scopes'), cell(detail, 'detail'));
    const action = document.createElement('span');
    action.className = 'action';
    if (r.agent && live.has(r.agent.id)) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = 'Stop';
      b.title = `Stop ${r.agent.name}: revoke its grants, tokens and sub-agents`;
      b.dataset.agent = r.agent.id;
      action.append(b);
    }
    row.append(action);
    rows.push(row);
  }
  spacer.replaceChildren(...rows);
  count.textContent = shown.length === records.length ? `${records.length} records` : `${shown.length} of ${records.length} records`;
}

/** Adds the agents named by `fresh` to the filter list; only new records are scanned, so a busy log stays cheap. */
function updateAgents(fresh: readonly AuditRecord[], rebuild: boolean): void {
  const seen = rebuild ? new Map<string, string>() : new Map(knownAgents);
  for (const [id, name] of agentsSeen(fresh)) if (!seen.has(id)) seen.set(id, name);
  if (!rebuild && seen.size === knownAgents.size) return;
  knownAgents = seen;
  const current = agentSelect.value;
  agentSelect.replaceChildren(new Option('All agents', ''), ...[...seen].map(([id, name]) => new Option(`${name} ${id}`, id)));
  agentSelect.value = current;
}

function showVerify(v: VerifyView): void {
  verify.className = `verify ${v.state}`;
  verify.dataset.state = v.state;
  verify.textContent = v.state === 'running' ? 'Verifying…' : v.state === 'intact' ? '✓ Chain verifies' : v.state === 'broken' ? '✗ Chain broken' : '? Not verified';
  verify.title = v.state === 'running' ? '' : v.message;
}

window.addEventListener('message', (e: MessageEvent) => {
  const parsed = ExtensionToWebview.safeParse(e.data);
  if (!parsed.success) return;
  const msg = parsed.data;
  switch (msg.type) {
    case 'records': {
      // Rendered on the next frame: a burst of messages costs one layout, not one each.
      if (atBottom() || msg.reset) stickToBottom = true;
      if (msg.reset) {
        records = [];
        texts = [];
        shown = [];
      }
      for (const r of msg.records) {
        const t = rowText(r);
        records.push(r);
        texts.push(t);
        if (matchesPanelFilter(r, filter, t)) shown.push(records.length - 1);
      }
      updateAgents(msg.records, msg.reset);
      schedule();
      return;
    }
    case 'agents':
      live = new Set(msg.live);
      schedule();
      return;
    case 'verify':
      showVerify(msg.result);
      return;
  }
});

viewport.addEventListener('scroll', schedule, { passive: true });
window.addEventListener('resize', schedule);
spacer.addEventListener('click', (e) => {
  const id = (e.target as HTMLElement).dataset?.agent;
  if (id) post({ type: 'stopAgent', agentId: id });
});
agentSelect.addEventListener('change', () => ((filter = { ...filter, agent: agentSelect.value }), refilter()));
eventSelect.addEventListener('change', () => ((filter = { ...filter, event: eventSelect.value }), refilter()));
textInput.addEventListener('input', () => ((filter = { ...filter, text: textInput.value }), refilter()));
$('verifyButton').addEventListener('click', () => post({ type: 'verify' }));
$('exportButton').addEventListener('click', () => post({ type: 'export' }));

post({ type: 'ready' });
