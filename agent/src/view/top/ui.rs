//! Draws a [`Model`]: a status line, the servers and their tools side by side,
//! the alerts (newest first, coloured by severity), loss and sinks, the keys.
//! Every pane clips to what fits, so any terminal size draws (80x24 shows all
//! panes).

use std::time::{SystemTime, UNIX_EPOCH};

use ratatui::{
    Frame,
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Block, Paragraph, Row, Table},
};

use super::{Link, Model, Pane};

pub fn draw(f: &mut Frame, m: &Model, socket: &str) {
    let [head, body, loss, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(4),
        Constraint::Length(1),
    ])
    .areas(f.area());
    let [top, alerts] = Layout::vertical([Constraint::Percentage(45), Constraint::Min(3)]).areas(body);
    let [servers, tools] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    f.render_widget(header(m, socket), head);
    draw_servers(f, m, servers);
    draw_tools(f, m, tools);
    draw_alerts(f, m, alerts);
    f.render_widget(loss_and_sinks(m), loss);
    f.render_widget(footer(m), keys);
}

fn header(m: &Model, socket: &str) -> Paragraph<'static> {
    let line = match (&m.link, &m.snapshot) {
        (Link::Down { error, since }, _) => Line::from(Span::styled(
            format!(
                "agent unreachable for {}s ({error}): reconnecting to {socket}",
                since.elapsed().as_secs()
            ),
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        )),
        (Link::Up, Some(s)) => {
            let mut spans = vec![
                Span::styled("mcpwatch top", Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(format!(
                    "  servers {} · events {} · alerts {}",
                    s.servers.len(),
                    s.status.events,
                    s.alerts_total
                )),
            ];
            if m.reconnects > 0 {
                spans.push(Span::styled(
                    format!("  · reconnected ({}x)", m.reconnects),
                    Style::new().fg(Color::Yellow),
                ));
            }
            Line::from(spans)
        }
        _ => Line::from(format!("connecting to {socket}...")),
    };
    Paragraph::new(line)
}

fn pane(m: &Model, p: Pane, title: String) -> Block<'static> {
    let style = match m.pane == p {
        true => Style::new().fg(Color::Yellow),
        false => Style::new(),
    };
    Block::bordered().title(title).border_style(style)
}

/// A pane of four columns, scrolled (never past its last row).
fn table<'a>(
    m: &Model,
    p: Pane,
    title: String,
    header: [&'static str; 4],
    widths: [Constraint; 4],
    rows: Vec<Row<'a>>,
) -> Table<'a> {
    let skip = m.scroll[p as usize].min(rows.len().saturating_sub(1));
    Table::new(rows.into_iter().skip(skip), widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::BOLD)))
        .block(pane(m, p, title))
}

fn draw_servers(f: &mut Frame, m: &Model, area: Rect) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let rows: Vec<Row> = m
        .snapshot
        .iter()
        .flat_map(|s| {
            s.servers.iter().filter(|i| m.shows(&i.name)).map(|i| {
                let pids = s
                    .status
                    .servers
                    .iter()
                    .find(|st| st.name == i.name)
                    .map(|st| st.pids.as_slice())
                    .unwrap_or_default();
                let pid = match pids {
                    [] => "-".to_owned(),
                    [p] => p.to_string(),
                    [p, rest @ ..] => format!("{p} +{}", rest.len()),
                };
                let up = i.started.map(|t| uptime(now.saturating_sub(t))).unwrap_or_default();
                Row::new([i.name.clone(), pid, i.mode.clone(), up])
            })
        })
        .collect();
    let n = m.snapshot.as_ref().map_or(0, |s| s.servers.len());
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(7),
    ];
    let title = format!(" servers ({n}) ");
    let header = ["server", "pid", "mode", "up"];
    f.render_widget(table(m, Pane::Servers, title, header, widths, rows), area);
}

fn draw_tools(f: &mut Frame, m: &Model, area: Rect) {
    let rows: Vec<Row> = m
        .tool_rates()
        .into_iter()
        .map(|r| Row::new([r.server, r.tool, format!("{:.1}", r.per_s), r.calls.to_string()]))
        .collect();
    let widths = [
        Constraint::Fill(1),
        Constraint::Fill(2),
        Constraint::Length(7),
        Constraint::Length(7),
    ];
    let title = format!(" tools (calls/s over {}s) ", super::RATE_WINDOW.as_secs());
    let header = ["server", "tool", "calls/s", "calls"];
    f.render_widget(table(m, Pane::Tools, title, header, widths, rows), area);
}

fn severity_style(sev: &str) -> Style {
    match sev {
        "critical" => Style::new()
            .fg(Color::White)
            .bg(Color::Red)
            .add_modifier(Modifier::BOLD),
        "high" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        "medium" => Style::new().fg(Color::Yellow),
        "low" => Style::new().fg(Color::Cyan),
        _ => Style::new().fg(Color::DarkGray),
    }
}

fn draw_alerts(f: &mut Frame, m: &Model, area: Rect) {
    let n = m.shown_alerts().count();
    let lines: Vec<Line> = m
        .shown_alerts()
        .skip(m.scroll[Pane::Alerts as usize].min(n.saturating_sub(1)))
        .take(area.height as usize)
        .map(|a| {
            // RFC 3339: the time of day is enough on a live screen.
            let time = a.ts.get(11..19).unwrap_or(&a.ts);
            let mut spans = vec![
                Span::raw(format!("{time} ")),
                Span::styled(
                    format!("{:<8} ", a.severity.to_uppercase()),
                    severity_style(&a.severity),
                ),
                Span::styled(a.rule.clone(), Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(format!(" {}", a.server.as_deref().unwrap_or("-"))),
            ];
            if let Some(t) = &a.tool {
                spans.push(Span::raw(format!(" [{t}]")));
            }
            spans.push(Span::raw(format!(" {}", a.summary)));
            Line::from(spans)
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(pane(m, Pane::Alerts, format!(" alerts ({n}, newest first) "))),
        area,
    );
}

fn loss_and_sinks(m: &Model) -> Paragraph<'static> {
    let Some(s) = &m.snapshot else {
        return Paragraph::new("").block(Block::bordered().title(" loss and sinks "));
    };
    let probe_errors: u64 = s.status.probe_errors.values().sum();
    let dropped: u64 = s.sinks.iter().map(|k| k.dropped).sum();
    let refused: u64 = s.sinks.iter().map(|k| k.refused).sum();
    let any = s.status.lost + probe_errors + s.events_dropped + dropped + refused > 0;
    let loss = Line::from(Span::styled(
        format!(
            "loss: ring {} · probe errors {probe_errors} · event lines {} · sink drops {dropped} · refused {refused}",
            s.status.lost, s.events_dropped
        ),
        match any {
            true => Style::new().fg(Color::Red),
            false => Style::new(),
        },
    ));
    let sinks = match s.sinks.is_empty() {
        true => Line::from("sinks: none configured"),
        false => Line::from(format!(
            "sinks: {}",
            s.sinks
                .iter()
                .map(|k| format!(
                    "{} backlog {} ({} B) delivered {}",
                    k.name, k.backlog, k.spool_bytes, k.delivered
                ))
                .collect::<Vec<_>>()
                .join(" · ")
        )),
    };
    Paragraph::new(vec![loss, sinks]).block(Block::bordered().title(" loss and sinks "))
}

fn footer(m: &Model) -> Paragraph<'static> {
    let text = match (m.editing, m.filter.is_empty()) {
        (true, _) => format!("server filter: {}_   (enter: apply, esc: clear)", m.filter),
        (false, true) => "q quit · tab/←→ pane · ↑↓ scroll · / or s filter by server".to_owned(),
        (false, false) => format!(
            "q quit · tab/←→ pane · ↑↓ scroll · / or s filter · showing servers with \"{}\"",
            m.filter
        ),
    };
    Paragraph::new(Line::from(Span::styled(text, Style::new().fg(Color::DarkGray))))
}

/// 42s, 5m10s, 3h02m, 4d05h.
fn uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::{
        control::ServerStatus,
        top::{RecentAlert, ServerInfo, ToolCount, TopSnapshot},
    };
    use ratatui::{Terminal, backend::TestBackend};
    use std::time::Instant;

    fn screen(w: u16, h: u16, m: &Model) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, m, "/run/mcpwatch/control.sock")).unwrap();
        let buf = t.backend().buffer();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
            .collect()
    }

    #[test]
    fn every_pane_draws_at_80x24_and_nothing_panics_when_tiny() {
        let mut s = TopSnapshot::default();
        s.status.servers.push(ServerStatus {
            name: "filesystem".into(),
            pids: vec![4242],
        });
        s.servers.push(ServerInfo {
            name: "filesystem".into(),
            mode: "audit".into(),
            started: None,
        });
        s.tool_calls.push(ToolCount {
            server: "filesystem".into(),
            tool: "read_text_file".into(),
            calls: 3,
        });
        s.alerts.push(RecentAlert {
            id: "1".into(),
            ts: "2026-12-01T10:00:00.000Z".into(),
            rule: "cred.ssh".into(),
            severity: "high".into(),
            server: Some("filesystem".into()),
            tool: Some("read_text_file".into()),
            summary: "read an SSH key".into(),
        });
        let mut m = Model::default();
        m.update(s, Instant::now());
        let text = screen(80, 24, &m);
        for want in [
            "filesystem",
            "4242",
            "audit",
            "read_text_file",
            "cred.ssh",
            "HIGH",
            "loss: ring 0",
            "q quit",
        ] {
            assert!(text.contains(want), "{want:?} missing from\n{text}");
        }
        for (w, h) in [(1, 1), (10, 3), (20, 8), (300, 100)] {
            screen(w, h, &m);
        }
        // Scrolled far past the end: the last row stays in sight.
        m.pane = Pane::Alerts;
        m.scroll(1000);
        assert!(screen(80, 24, &m).contains("cred.ssh"));
    }

    #[test]
    fn uptime_reads_as_a_person_would() {
        assert_eq!(
            [
                uptime(42),
                uptime(310),
                uptime(3 * 3600 + 120),
                uptime(86400 * 4 + 5 * 3600)
            ],
            ["42s", "5m10s", "3h02m", "4d05h"]
        );
    }
}
