/**
 * A hand-written SVG bar chart, no dependency: one panel per metric, one horizontal bar
 * per series (tunnel), each panel scaled to its own largest value, values printed at the
 * bar ends. Missing values show as "failed" or "n/a".
 */

export interface ChartSeries {
  name: string;
  color: string;
}

export interface ChartPanel {
  title: string;
  /** One per series, in series order; a string is shown instead of a bar (e.g. "failed"). */
  values: (number | string)[];
  /** Formats a value for its label. */
  format?: (v: number) => string;
  /** Shown after a series' value in grey (e.g. its ratio to a baseline). */
  notes?: (string | undefined)[];
}

export interface Chart {
  title: string;
  subtitle?: string;
  series: ChartSeries[];
  panels: ChartPanel[];
}

/** Escapes text for SVG element content and attribute values. */
export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

const WIDTH = 820;
const LABEL_W = 150;
const BAR_MAX = 480;
const BAR_H = 14;
const GAP = 3;
const PANEL_TITLE_H = 20;
const PANEL_PAD = 10;

/** Renders the chart as a standalone SVG document. */
export function barChart(chart: Chart): string {
  const out: string[] = [];
  let y = 28;
  out.push(`<text x="10" y="${y}" font-size="16" font-weight="bold">${escapeXml(chart.title)}</text>`);
  if (chart.subtitle) {
    y += 18;
    out.push(`<text x="10" y="${y}" font-size="11" fill="#555">${escapeXml(chart.subtitle)}</text>`);
  }
  // legend
  y += 20;
  let x = 10;
  for (const s of chart.series) {
    out.push(`<rect x="${x}" y="${y - 10}" width="12" height="12" fill="${escapeXml(s.color)}"/>`);
    out.push(`<text x="${x + 16}" y="${y}" font-size="12">${escapeXml(s.name)}</text>`);
    x += 24 + s.name.length * 7;
  }
  y += 10;
  for (const panel of chart.panels) {
    y += PANEL_TITLE_H;
    out.push(`<text x="10" y="${y - 5}" font-size="13" font-weight="bold">${escapeXml(panel.title)}</text>`);
    const nums = panel.values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
    const max = Math.max(0, ...nums);
    const fmt = panel.format ?? ((v: number) => String(v));
    chart.series.forEach((s, i) => {
      const v = panel.values[i];
      const top = y + i * (BAR_H + GAP);
      out.push(`<text x="${LABEL_W - 6}" y="${top + BAR_H - 3}" font-size="11" text-anchor="end">${escapeXml(s.name)}</text>`);
      if (typeof v === 'number' && Number.isFinite(v)) {
        const w = max > 0 ? Math.max(1, Math.round((v / max) * BAR_MAX)) : 1;
        out.push(`<rect x="${LABEL_W}" y="${top}" width="${w}" height="${BAR_H}" fill="${escapeXml(s.color)}"/>`);
        const note = panel.notes?.[i] ? `<tspan fill="#777"> ${escapeXml(panel.notes[i]!)}</tspan>` : '';
        out.push(`<text x="${LABEL_W + w + 4}" y="${top + BAR_H - 3}" font-size="11">${escapeXml(fmt(v))}${note}</text>`);
      } else {
        out.push(`<text x="${LABEL_W + 4}" y="${top + BAR_H - 3}" font-size="11" fill="#b00">${escapeXml(typeof v === 'string' ? v : 'n/a')}</text>`);
      }
    });
    y += chart.series.length * (BAR_H + GAP) + PANEL_PAD;
  }
  const height = y + 10;
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...out,
    `</svg>`,
    '',
  ].join('\n');
}
