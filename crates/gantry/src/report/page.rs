//! The HTML both report pages share: the skeleton (styles, the live page's refresh), tables,
//! figures, and the few markdown inlines the experiment's text uses.

use std::fmt::Write as _;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "\
body{font-family:'DejaVu Sans',system-ui,sans-serif;max-width:1180px;margin:1.5em auto;padding:0 1em;color:#222;line-height:1.4}\
h1{font-size:1.5em;margin-bottom:.2em;word-break:break-all}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}\
.status{padding:.5em .8em;border-radius:4px;background:#f1f3f5}.status.live{background:#e7f5ff}.status.finished{background:#ebfbee}.status.stopped{background:#fff4e6}\
table{border-collapse:collapse;margin:.6em 0}th,td{padding:3px 10px;border-bottom:1px solid #e3e3e3;text-align:left}\
th{background:#f6f6f6}td+td{text-align:right;font-variant-numeric:tabular-nums}\
img{max-width:100%;height:auto}img.samples{image-rendering:pixelated;border:1px solid #ddd;max-width:min(100%,440px)}\
.row{display:flex;flex-wrap:wrap;gap:0 3em;align-items:flex-start}\
figure{margin:.8em 0}figcaption{color:#555;font-size:.9em}.grid{display:flex;flex-wrap:wrap;gap:0 1em}.grid figure{flex:0 1 560px;max-width:100%}\
pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:.85em}nav a{margin-right:1em}.path{color:#666;margin-top:0;word-break:break-all}code{background:#f1f3f5;padding:0 .2em}";

/// A whole page. `refresh`: seconds after which the browser reloads it (a live page).
pub fn page(title: &str, refresh: Option<u64>, body: &str) -> String {
    let mut html = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
    );
    if let Some(s) = refresh {
        let _ = writeln!(html, "<meta http-equiv=\"refresh\" content=\"{s}\">");
    }
    let _ = write!(
        html,
        "<title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n",
        escape(title)
    );
    html
}

/// A table: the first row is the header; cells are text (escaped here).
pub fn table(grid: &[Vec<String>]) -> String {
    let mut html = String::from("<table>\n");
    for (i, row) in grid.iter().enumerate() {
        let tag = if i == 0 { "th" } else { "td" };
        html.push_str("<tr>");
        for cell in row {
            let _ = write!(html, "<{tag}>{}</{tag}>", escape(cell));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    html
}

/// Markdown inlines to HTML: `code` and **bold** (the rest is escaped text).
pub fn md_inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while !rest.is_empty() {
        let code = rest.find('`');
        let bold = rest.find("**");
        match (code, bold) {
            (Some(c), b) if b.is_none_or(|b| c < b) => {
                if let Some(end) = rest[c + 1..].find('`') {
                    out.push_str(&escape(&rest[..c]));
                    let _ = write!(out, "<code>{}</code>", escape(&rest[c + 1..c + 1 + end]));
                    rest = &rest[c + 2 + end..];
                    continue;
                }
                out.push_str(&escape(rest));
                break;
            }
            (_, Some(b)) => {
                if let Some(end) = rest[b + 2..].find("**") {
                    out.push_str(&escape(&rest[..b]));
                    let _ = write!(
                        out,
                        "<strong>{}</strong>",
                        escape(&rest[b + 2..b + 2 + end])
                    );
                    rest = &rest[b + 4 + end..];
                    continue;
                }
                out.push_str(&escape(rest));
                break;
            }
            _ => {
                out.push_str(&escape(rest));
                break;
            }
        }
    }
    out
}

/// Now, as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC` (Howard Hinnant's civil_from_days).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A content hash for cache-busting image URLs (`x.png?v=..`): a reloaded live page shows the
/// new picture, an unchanged one stays cached.
pub fn version(bytes: &[u8]) -> String {
    format!("{:08x}", crc32c::crc32c(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_inlines_and_dates() {
        assert_eq!(
            md_inline("Base `gmm-25` with **not significant** <x> & `a`"),
            "Base <code>gmm-25</code> with <strong>not significant</strong> &lt;x&gt; &amp; <code>a</code>"
        );
        assert_eq!(md_inline("a ` b"), "a ` b");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_709_210_096), "2024-02-29 12:34:56 UTC");
    }

    #[test]
    fn tables_escape_their_cells() {
        let t = table(&[vec!["a".into(), "b".into()], vec!["<x>".into(), "1".into()]]);
        assert_eq!(
            t,
            "<table>\n<tr><th>a</th><th>b</th></tr>\n<tr><td>&lt;x&gt;</td><td>1</td></tr>\n</table>\n"
        );
        let p = page("t", Some(5), "<p>x</p>");
        assert!(p.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(!page("t", None, "").contains("refresh"));
    }
}
