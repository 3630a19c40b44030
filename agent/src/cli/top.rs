//! `mcpwatch top`: the running agent on one screen, refreshed from its
//! control socket. Sleeps in the terminal's event poll between refreshes (no
//! busy loop); keeps asking when the agent goes away and says so on screen.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use mcpwatch::{
    daemon::control::{self, DEFAULT_SOCKET, Request, SOCKET_ENV},
    view::top::{Model, ui},
};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

#[derive(clap::Args)]
pub struct TopArgs {
    /// The running agent's control socket.
    #[arg(long, value_name = "PATH", env = SOCKET_ENV, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Only servers whose name contains this (`/` or `s` changes it on screen).
    #[arg(long, value_name = "NAME")]
    server: Option<String>,
    /// Time between refreshes.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
}

/// Longest wait for the agent's answer (it answers from its event loop).
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    // Refused (not root) is final: say so on the terminal, not in a screen that retries.
    if let Err(e @ control::ClientError::Refused(_)) = control::call(&args.socket, &Request::Top, ASK_TIMEOUT) {
        anyhow::bail!("{e}");
    }
    let mut term = ratatui::try_init()?;
    let res = show(&mut term, &args);
    ratatui::restore();
    res
}

fn show(term: &mut ratatui::DefaultTerminal, args: &TopArgs) -> anyhow::Result<()> {
    let socket = args.socket.display().to_string();
    let mut m = Model::default();
    m.filter = args.server.clone().unwrap_or_default();
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next {
            match control::call(&args.socket, &Request::Top, ASK_TIMEOUT) {
                Ok(reply) => match reply.top {
                    Some(t) => m.update(*t, now),
                    None => m.lost("the agent does not answer `top` (an older agent?)".into(), now),
                },
                Err(e) => m.lost(e.to_string(), now),
            }
            next = now + args.interval;
        }
        term.draw(|f| ui::draw(f, &m, &socket))?;
        // Keys and resizes wake this early; otherwise it sleeps until the next refresh.
        if event::poll(next.saturating_duration_since(Instant::now()))?
            && let Event::Key(k) = event::read()?
            && k.kind == KeyEventKind::Press
            && key(&mut m, k)
        {
            return Ok(());
        }
    }
}

/// Applies one key; true: quit.
fn key(m: &mut Model, k: KeyEvent) -> bool {
    if k.modifiers.contains(KeyModifiers::CONTROL) && k.code == KeyCode::Char('c') {
        return true;
    }
    if m.editing {
        match k.code {
            KeyCode::Enter => m.editing = false,
            KeyCode::Esc => {
                m.filter.clear();
                m.editing = false;
            }
            KeyCode::Backspace => {
                m.filter.pop();
            }
            KeyCode::Char(c) => m.filter.push(c),
            _ => {}
        }
        m.scroll = [0; 3];
        return false;
    }
    match k.code {
        KeyCode::Char('q') => return true,
        KeyCode::Tab | KeyCode::Right => m.pane = m.pane.next(),
        KeyCode::BackTab | KeyCode::Left => m.pane = m.pane.prev(),
        KeyCode::Up => m.scroll(-1),
        KeyCode::Down => m.scroll(1),
        KeyCode::PageUp => m.scroll(-10),
        KeyCode::PageDown => m.scroll(10),
        KeyCode::Char('/' | 's') => m.editing = true,
        KeyCode::Esc => m.filter.clear(),
        _ => {}
    }
    false
}
