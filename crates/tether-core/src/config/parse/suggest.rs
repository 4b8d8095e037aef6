//! "did you mean `X`?" for a key nobody defines: the known key closest in edit
//! distance, when it is close enough to be a typo rather than a different word.

/// Levenshtein distance: insertions, deletions and substitutions, one each (a
/// swap of two neighbours counts two).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let at = |row: &[usize], k: usize| row.get(k).copied().unwrap_or(usize::MAX / 2);
            let substitute = at(&prev, j) + usize::from(ca != *cb);
            let delete = at(&prev, j + 1) + 1;
            let insert = cur.last().copied().unwrap_or(usize::MAX / 2) + 1;
            cur.push(substitute.min(delete).min(insert));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The candidate closest to `unknown`, if it is within a typo's reach: at most 2
/// edits, or a third of the key's length for long keys. Ties go to the earlier
/// candidate.
pub(super) fn closest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    let reach = (unknown.chars().count() / 3).max(2);
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = distance(&unknown, c);
        if d <= reach && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `" (did you mean `X`?)"`, or nothing.
pub(super) fn did_you_mean<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    closest(unknown, candidates)
        .map(|c| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("ssh_adress", "ssh_address"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("cookie_secert", "cookie_secret"), 2, "a swap");
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn closest_is_a_typo_or_nothing() {
        let keys = ["ssh_address", "address", "cookie_secret", "routes"];
        assert_eq!(closest("ssh_adress", keys), Some("ssh_address"));
        assert_eq!(closest("adress", keys), Some("address"));
        assert_eq!(closest("COOKIE_SECRET", keys), Some("cookie_secret"));
        assert_eq!(closest("route", keys), Some("routes"));
        assert_eq!(closest("frobnicate", keys), None);
        assert_eq!(closest("x", keys), None);
        assert_eq!(did_you_mean("frobnicate", keys), "");
        assert_eq!(did_you_mean("rotues", keys), " (did you mean `routes`?)");
    }
}
