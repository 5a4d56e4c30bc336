/**
 * The topology graph's layout, done by hand (no graph library): services in columns by call depth
 * (a caller left of what it calls: the longest path from a service nobody calls), ordered within a
 * column by the barycenter of their neighbours to cut crossings, edges as cubic curves between
 * ports spread along the nodes' sides. Calls that go back (cycles) or stay in a column are drawn as
 * arcs over the nodes. Pure: no DOM.
 */

export interface LayoutInput {
  nodes: readonly string[];
  edges: ReadonlyArray<{ source: string; destination: string }>;
}

export interface NodeBox {
  name: string;
  layer: number;
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface EdgePath {
  source: string;
  destination: string;
  /** SVG path data. */
  d: string;
  /** Where the label goes: its anchor point and the baseline. */
  lx: number;
  ly: number;
  /** How the label hangs from (lx, ly), as SVG text-anchor. */
  anchor: 'start' | 'middle' | 'end';
  kind: 'forward' | 'back' | 'self';
}

export interface Layout {
  width: number;
  height: number;
  nodes: NodeBox[];
  edges: EdgePath[];
}

export const NODE_W = 160;
export const NODE_H = 52;
const GAP_X = 150;
const GAP_Y = 34;
const PAD = 24;

export function layoutGraph(input: LayoutInput): Layout {
  const names = [...new Set([...input.nodes, ...input.edges.flatMap((e) => [e.source, e.destination])])].sort();
  const out = new Map<string, string[]>(names.map((n) => [n, []]));
  const inn = new Map<string, string[]>(names.map((n) => [n, []]));
  const seenPair = new Set<string>();
  for (const e of input.edges) {
    if (e.source === e.destination) continue;
    const k = `${e.source}\u0000${e.destination}`;
    if (seenPair.has(k)) continue;
    seenPair.add(k);
    out.get(e.source)!.push(e.destination);
    inn.get(e.destination)!.push(e.source);
  }

  // Break cycles: a DFS from the roots (then from whatever is left) marks back edges, ignored for layering.
  const back = new Set<string>();
  const state = new Map<string, 1 | 2>();
  const order: string[] = []; // reverse postorder = a topological order of the forward edges
  const visit = (n: string) => {
    state.set(n, 1);
    for (const m of out.get(n)!) {
      const s = state.get(m);
      if (s === 1) back.add(`${n}\u0000${m}`);
      else if (s === undefined) visit(m);
    }
    state.set(n, 2);
    order.push(n);
  };
  for (const n of names) if (inn.get(n)!.length === 0 && !state.has(n)) visit(n);
  for (const n of names) if (!state.has(n)) visit(n);
  order.reverse();

  // Longest path from a root.
  const layer = new Map<string, number>(names.map((n) => [n, 0]));
  for (const n of order) {
    for (const m of out.get(n)!) {
      if (back.has(`${n}\u0000${m}`)) continue;
      layer.set(m, Math.max(layer.get(m)!, layer.get(n)! + 1));
    }
  }
  // A service nobody calls moves right, next to the first service it calls, so a lone caller of a
  // deep service does not draw a long edge across the graph.
  for (const n of [...order].reverse()) {
    const succ = out.get(n)!.filter((m) => !back.has(`${n}\u0000${m}`));
    if (inn.get(n)!.length === 0 && succ.length > 0) layer.set(n, Math.min(...succ.map((m) => layer.get(m)!)) - 1);
  }

  const layerCount = Math.max(0, ...layer.values()) + 1;
  const columns: string[][] = Array.from({ length: layerCount }, () => []);
  for (const n of names) columns[layer.get(n)!]!.push(n);

  // Barycenter ordering, a few sweeps each way.
  const pos = new Map<string, number>();
  const index = () => columns.forEach((col) => col.forEach((n, i) => pos.set(n, i)));
  index();
  const bary = (n: string, nbrs: string[]) => (nbrs.length === 0 ? pos.get(n)! : nbrs.reduce((s, m) => s + pos.get(m)!, 0) / nbrs.length);
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let l = 1; l < layerCount; l++) {
      columns[l]!.sort((a, b) => bary(a, inn.get(a)!) - bary(b, inn.get(b)!) || (a < b ? -1 : 1));
      index();
    }
    for (let l = layerCount - 2; l >= 0; l--) {
      columns[l]!.sort((a, b) => bary(a, out.get(a)!) - bary(b, out.get(b)!) || (a < b ? -1 : 1));
      index();
    }
  }

  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const colHeight = (k: number) => k * NODE_H + (k - 1) * GAP_Y;
  const isBack = (e: { source: string; destination: string }) =>
    e.source === e.destination || back.has(`${e.source}\u0000${e.destination}`) || layer.get(e.destination)! <= layer.get(e.source)!;
  // Room above the nodes for the arcs of calls that go back (and the labels of self-calls).
  const top = PAD + (input.edges.some(isBack) ? 56 : 8);
  const height = top + colHeight(tallest) + PAD;
  const width = PAD * 2 + layerCount * NODE_W + (layerCount - 1) * GAP_X;
  const boxes = new Map<string, NodeBox>();
  columns.forEach((col, l) => {
    const y0 = top + (colHeight(tallest) - colHeight(col.length)) / 2;
    col.forEach((n, i) => boxes.set(n, { name: n, layer: l, x: PAD + l * (NODE_W + GAP_X), y: y0 + i * (NODE_H + GAP_Y), w: NODE_W, h: NODE_H }));
  });

  // Ports: the forward edges leaving a node spread along its right side, those arriving along its
  // left side, each side ordered by where the other end is, so edges out of one node do not cross.
  const forward = uniquePairs(input.edges).filter((e) => boxes.get(e.destination)!.layer > boxes.get(e.source)!.layer);
  const centerY = (n: string) => boxes.get(n)!.y + NODE_H / 2;
  const portY = (n: string, i: number, k: number) => boxes.get(n)!.y + NODE_H * (k === 1 ? 0.5 : 0.3 + (0.4 * i) / (k - 1));
  const outPort = new Map<string, number>();
  const inPort = new Map<string, number>();
  for (const n of names) {
    const outs = forward.filter((e) => e.source === n).sort((a, b) => centerY(a.destination) - centerY(b.destination) || (a.destination < b.destination ? -1 : 1));
    outs.forEach((e, i) => outPort.set(`${e.source}\u0000${e.destination}`, portY(n, i, outs.length)));
    const ins = forward.filter((e) => e.destination === n).sort((a, b) => centerY(a.source) - centerY(b.source) || (a.source < b.source ? -1 : 1));
    ins.forEach((e, i) => inPort.set(`${e.source}\u0000${e.destination}`, portY(n, i, ins.length)));
  }

  const edges: EdgePath[] = [];
  for (const e of uniquePairs(input.edges)) {
    const k = `${e.source}\u0000${e.destination}`;
    const a = boxes.get(e.source)!;
    const b = boxes.get(e.destination)!;
    if (a === b) {
      const x = a.x + a.w - 24;
      const y = a.y;
      edges.push({ source: e.source, destination: e.destination, kind: 'self', d: `M ${x - 20} ${y} C ${x - 20} ${y - 36}, ${x + 20} ${y - 36}, ${x + 20} ${y}`, lx: x, ly: y - 40, anchor: 'middle' });
    } else if (b.layer > a.layer) {
      const x1 = a.x + a.w;
      const y1 = outPort.get(k)!;
      const x2 = b.x;
      const y2 = inPort.get(k)!;
      const dx = (x2 - x1) / 2;
      // The label sits by the arrowhead, on the side the curve does not come from: above an edge
      // that climbs (or runs level), below one that falls.
      const ly = y2 > y1 + 1 ? y2 + 15 : y2 - 7;
      edges.push({ source: e.source, destination: e.destination, kind: 'forward', d: `M ${x1} ${y1} C ${x1 + dx} ${y1}, ${x2 - dx} ${y2}, ${x2} ${y2}`, lx: x2 - 12, ly, anchor: 'end' });
    } else {
      // Back or sideways: from the top of the caller, over the nodes, to the top of the callee.
      const x1 = a.x + a.w / 2 - 12;
      const y1 = a.y;
      const x2 = b.x + b.w / 2 + 12;
      const y2 = b.y;
      const high = top - 48;
      edges.push({ source: e.source, destination: e.destination, kind: 'back', d: `M ${x1} ${y1} C ${x1} ${high}, ${x2} ${high}, ${x2} ${y2}`, lx: (x1 + x2) / 2, ly: 0.75 * high + 0.125 * (y1 + y2) - 2, anchor: 'middle' });
    }
  }
  return { width, height, nodes: [...boxes.values()], edges };
}

/** The edges without repeated caller -> callee pairs, in their first order. */
function uniquePairs<E extends { source: string; destination: string }>(edges: readonly E[]): E[] {
  const seen = new Set<string>();
  return edges.filter((e) => {
    const k = `${e.source}\u0000${e.destination}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
