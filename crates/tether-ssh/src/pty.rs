//! A client's terminal as `pty-req` and `window-change` describe it; kept by the
//! CLI channels for the portal, and replayed on the upstream session it opens.

use russh::Pty;

/// A terminal's size, as `pty-req` and `window-change` carry it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Size {
    pub(crate) cols: u32,
    pub(crate) rows: u32,
    pub(crate) pix_width: u32,
    pub(crate) pix_height: u32,
}

/// The client's `pty-req`, kept for the upstream.
#[derive(Clone, Debug)]
pub(crate) struct Terminal {
    pub(crate) term: String,
    pub(crate) size: Size,
    pub(crate) modes: Vec<(Pty, u32)>,
}
