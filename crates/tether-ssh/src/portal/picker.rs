//! The portal's picker without I/O: [`Keys`] turns what a terminal sends into keys,
//! [`Picker`] holds the list, the cursor and a status line and renders the screen
//! as ANSI text for a terminal of a given size.
//!
//! Input is parsed one byte at a time by a small state machine, so nothing a client
//! sends is buffered: an escape sequence longer than [`MAX_SEQUENCE`] bytes is
//! dropped. Recognised: Up / Down (`ESC [ A` / `ESC [ B`, their `ESC O` forms, and
//! `k` / `j`), Home / End (`ESC [ H` / `ESC [ F`, `g` / `G`), Enter (CR, or LF not
//! right after a CR) and quit (`q`, Ctrl-C, Ctrl-D).

use crate::routes::printable;

/// Longest escape sequence parameter run kept track of.
pub(crate) const MAX_SEQUENCE: u8 = 16;
/// Switch to the alternate screen and hide the cursor.
pub(crate) const ENTER_SCREEN: &str = "\x1b[?1049h\x1b[?25l";
/// Show the cursor and return to the normal screen.
pub(crate) const LEAVE_SCREEN: &str = "\x1b[?25h\x1b[?1049l";
/// Terminal size assumed when the client reported none.
const DEFAULT_SIZE: (u32, u32) = (80, 24);
/// Largest size rendered for (bounds the work per frame).
const MAX_SIZE: (u32, u32) = (500, 300);
/// Lines above the list: title, hint, blank.
const HEADER: u32 = 3;
/// Lines below the list: blank, status.
const FOOTER: u32 = 2;

/// A key the picker reacts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Key {
    Up,
    Down,
    Home,
    End,
    Enter,
    Quit,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    /// After ESC.
    Esc,
    /// Inside `ESC [`, with this many parameter bytes so far.
    Csi(u8),
    /// After `ESC O`.
    Ss3,
}

/// The input parser; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Keys {
    state: State,
    after_cr: bool,
}

impl Keys {
    /// Feeds one byte; returns the key it completes, if any.
    pub(crate) fn feed(&mut self, byte: u8) -> Option<Key> {
        let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
        let (next, key) = match (self.state, byte) {
            (State::Ground, 0x1b) => (State::Esc, None),
            (State::Ground, b'\r') => (State::Ground, Some(Key::Enter)),
            (State::Ground, b'\n') if !after_cr => (State::Ground, Some(Key::Enter)),
            (State::Ground, b'k') => (State::Ground, Some(Key::Up)),
            (State::Ground, b'j') => (State::Ground, Some(Key::Down)),
            (State::Ground, b'g') => (State::Ground, Some(Key::Home)),
            (State::Ground, b'G') => (State::Ground, Some(Key::End)),
            (State::Ground, b'q' | b'Q' | 0x03 | 0x04) => (State::Ground, Some(Key::Quit)),
            (State::Ground, _) => (State::Ground, None),
            (State::Esc, b'[') => (State::Csi(0), None),
            (State::Esc, b'O') => (State::Ss3, None),
            (State::Esc, 0x1b) => (State::Esc, None),
            // Alt+key and the like: ignored.
            (State::Esc, _) => (State::Ground, None),
            (State::Csi(_) | State::Ss3, b'A') => (State::Ground, Some(Key::Up)),
            (State::Csi(_) | State::Ss3, b'B') => (State::Ground, Some(Key::Down)),
            (State::Csi(_) | State::Ss3, b'H') => (State::Ground, Some(Key::Home)),
            (State::Csi(_) | State::Ss3, b'F') => (State::Ground, Some(Key::End)),
            (State::Csi(n), 0x20..=0x3f) if n < MAX_SEQUENCE => (State::Csi(n + 1), None),
            // Other final bytes, overlong sequences, stray bytes: dropped.
            (State::Csi(_) | State::Ss3, _) => (State::Ground, None),
        };
        self.state = next;
        key
    }
}

/// The list, the cursor and a status line; see the module docs.
#[derive(Debug)]
pub(crate) struct Picker {
    routes: Vec<String>,
    cursor: usize,
    /// First route shown (the list scrolls when it does not fit).
    top: usize,
    status: Option<String>,
}

impl Picker {
    /// A picker over `routes` with the cursor on the first.
    pub(crate) fn new(routes: Vec<String>) -> Self {
        Picker {
            routes,
            cursor: 0,
            top: 0,
            status: None,
        }
    }

    /// Moves the cursor; `true` if the screen changed.
    pub(crate) fn key(&mut self, key: Key) -> bool {
        let last = self.routes.len().saturating_sub(1);
        let cursor = match key {
            Key::Up => self.cursor.saturating_sub(1),
            Key::Down => (self.cursor + 1).min(last),
            Key::Home => 0,
            Key::End => last,
            Key::Enter | Key::Quit => return false,
        };
        let moved = cursor != self.cursor;
        self.cursor = cursor;
        if moved {
            self.status = None;
        }
        moved
    }

    /// The route under the cursor.
    pub(crate) fn selected(&self) -> Option<&str> {
        self.routes.get(self.cursor).map(String::as_str)
    }

    /// Sets (or clears) the line under the list.
    pub(crate) fn set_status(&mut self, status: Option<String>) {
        self.status = status;
    }

    /// The whole screen for a `cols` × `rows` terminal (0: unknown).
    pub(crate) fn render(&mut self, cols: u32, rows: u32) -> String {
        let cols = if cols == 0 {
            DEFAULT_SIZE.0
        } else {
            cols.min(MAX_SIZE.0)
        };
        let rows = if rows == 0 {
            DEFAULT_SIZE.1
        } else {
            rows.min(MAX_SIZE.1)
        };
        let visible = usize::try_from(rows.saturating_sub(HEADER + FOOTER).max(1)).unwrap_or(1);
        if self.cursor < self.top {
            self.top = self.cursor;
        } else if self.cursor >= self.top + visible {
            self.top = self.cursor + 1 - visible;
        }
        let width = usize::try_from(cols.saturating_sub(1).max(1)).unwrap_or(1);
        let fit = |s: &str| -> String { printable(s).chars().take(width).collect() };

        let mut hint = "up/down: move   enter: connect   q: quit".to_string();
        if self.routes.len() > visible {
            hint.push_str(&format!("   ({}/{})", self.cursor + 1, self.routes.len()));
        }
        let mut lines = vec![
            format!("\x1b[1m{}\x1b[0m", fit("tether: choose a route")),
            fit(&hint),
            String::new(),
        ];
        for (i, name) in self.routes.iter().enumerate().skip(self.top).take(visible) {
            if i == self.cursor {
                lines.push(format!("\x1b[7m{}\x1b[0m", fit(&format!("> {name}"))));
            } else {
                lines.push(fit(&format!("  {name}")));
            }
        }
        if let Some(status) = &self.status {
            lines.push(String::new());
            lines.push(fit(status));
        }
        format!("\x1b[H\x1b[2J{}", lines.join("\r\n"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn keys(input: &[u8]) -> Vec<Key> {
        let mut k = Keys::default();
        input.iter().filter_map(|&b| k.feed(b)).collect()
    }

    #[test]
    fn arrows_letters_enter_and_quit() {
        use Key::*;
        assert_eq!(
            keys(b"\x1b[A\x1b[B\x1bOA\x1bOBkj"),
            [Up, Down, Up, Down, Up, Down]
        );
        assert_eq!(
            keys(b"\x1b[1;5A\x1b[H\x1b[Fg G"),
            [Up, Home, End, Home, End]
        );
        assert_eq!(keys(b"\r\n\n"), [Enter, Enter], "CR LF is one Enter");
        assert_eq!(keys(b"q"), [Quit]);
        assert_eq!(keys(b"\x03\x04"), [Quit, Quit]);
        assert_eq!(keys(b"xyz\x1bx\x1b[5~\x1b[Z"), [], "ignored");
        assert_eq!(keys(b"\x1b\x1b[A"), [Up]);
    }

    #[test]
    fn sequences_split_across_reads_and_overlong_ones() {
        let mut k = Keys::default();
        assert_eq!(k.feed(0x1b), None);
        assert_eq!(k.feed(b'['), None);
        assert_eq!(k.feed(b'B'), Some(Key::Down));
        // A never-ending parameter run is dropped, then parsing recovers.
        let mut long = b"\x1b[".to_vec();
        long.extend(std::iter::repeat_n(b'1', 10_000));
        long.extend(b"A\x1b[A");
        assert_eq!(keys(&long), [Key::Up], "only the second sequence");
    }

    #[test]
    fn cursor_moves_within_the_list() {
        let mut p = Picker::new(vec!["a".into(), "b".into(), "c".into()]);
        assert_eq!(p.selected(), Some("a"));
        assert!(!p.key(Key::Up));
        assert!(p.key(Key::Down));
        assert!(p.key(Key::Down));
        assert!(!p.key(Key::Down));
        assert_eq!(p.selected(), Some("c"));
        assert!(p.key(Key::Home));
        assert_eq!(p.selected(), Some("a"));
        assert!(p.key(Key::End));
        assert_eq!(p.selected(), Some("c"));
        assert!(Picker::new(vec![]).selected().is_none());
    }

    #[test]
    fn renders_title_list_cursor_and_status() {
        let mut p = Picker::new(vec!["prod".into(), "staging".into()]);
        p.key(Key::Down);
        p.set_status(Some(
            "access denied: route \"staging\": not in group sre".into(),
        ));
        let screen = p.render(80, 24);
        assert!(screen.starts_with("\x1b[H\x1b[2J\x1b[1mtether: choose a route\x1b[0m\r\n"));
        assert!(
            screen.contains("\r\n  prod\r\n\x1b[7m> staging\x1b[0m\r\n"),
            "{screen:?}"
        );
        assert!(screen.ends_with("\r\n\r\naccess denied: route \"staging\": not in group sre"));
        assert!(!screen.replace("\r\n", "").contains('\n'), "CR LF only");
        // Moving clears the status.
        p.key(Key::Up);
        assert!(!p.render(80, 24).contains("access denied"));
    }

    #[test]
    fn long_lists_scroll_and_lines_fit_the_width() {
        let names: Vec<String> = (0..50).map(|i| format!("route-{i:02}")).collect();
        let mut p = Picker::new(names);
        for _ in 0..20 {
            p.key(Key::Down);
        }
        let screen = p.render(12, 10);
        assert!(screen.contains("> route-20"), "{screen:?}");
        assert!(!screen.contains("route-00"), "scrolled");
        let shown = screen.matches("route-").count();
        assert_eq!(shown, 5, "rows - header - footer");
        for line in screen.split("\r\n") {
            let plain = line
                .replace("\x1b[7m", "")
                .replace("\x1b[0m", "")
                .replace("\x1b[1m", "");
            let plain = plain.trim_start_matches("\x1b[H\x1b[2J");
            assert!(plain.chars().count() <= 11, "{line:?}");
        }
        // A zero size (not reported) renders with defaults; huge sizes are capped.
        assert!(p.render(0, 0).contains("> route-20"));
        assert!(p.render(u32::MAX, u32::MAX).contains("> route-20"));
    }

    #[test]
    fn control_characters_in_names_are_neutralised() {
        let mut p = Picker::new(vec!["bad\x1b[2Jname".into()]);
        let screen = p.render(80, 24);
        assert!(screen.contains("> bad?[2Jname"), "{screen:?}");
    }
}
