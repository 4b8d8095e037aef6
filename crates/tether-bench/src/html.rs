//! Just enough HTML reading for tether's server-rendered pages: the `name` and
//! `value` of `<input>` elements (hidden CSRF tokens, the dev IdP's login form).

/// The value of attribute `attr` (double-quoted, entities decoded) in one tag's text.
fn attribute(tag: &str, attr: &str) -> Option<String> {
    let needle = format!(" {attr}=\"");
    let start = tag.find(&needle)? + needle.len();
    let len = tag[start..].find('"')?;
    Some(html_escape::decode_html_entities(&tag[start..start + len]).into_owned())
}

/// `(name, value)` of every named `<input>` in `page`, in document order; a missing
/// `value` is the empty string.
pub fn inputs(page: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = page;
    while let Some(at) = rest.find("<input") {
        let tag_and_after = &rest[at..];
        let end = tag_and_after.find('>').unwrap_or(tag_and_after.len());
        let tag = &tag_and_after[..end];
        if let Some(name) = attribute(tag, "name") {
            out.push((name, attribute(tag, "value").unwrap_or_default()));
        }
        rest = &tag_and_after[end..];
    }
    out
}

/// The value of the first `<input>` named `name`.
pub fn input_value(page: &str, name: &str) -> Option<String> {
    inputs(page)
        .into_iter()
        .find_map(|(n, v)| (n == name).then_some(v))
}

/// The first `http://` or `https://` URL in `text` (up to whitespace).
pub fn first_url(text: &str) -> Option<&str> {
    let start = text.find("http://").or_else(|| text.find("https://"))?;
    let url = &text[start..];
    Some(url.split_whitespace().next().unwrap_or(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_inputs_and_decodes_entities() {
        let page = "<form><input type=\"hidden\" name=\"redirect_uri\" \
                    value=\"http://x/cb?a=1&amp;b=2\"><input id=\"u\" name=\"username\" value=\"\" \
                    autofocus><input type=\"checkbox\" id=\"remember\"></form>";
        assert_eq!(
            inputs(page),
            vec![
                (
                    "redirect_uri".to_string(),
                    "http://x/cb?a=1&b=2".to_string()
                ),
                ("username".to_string(), String::new()),
            ]
        );
        assert_eq!(input_value(page, "username").as_deref(), Some(""));
        assert_eq!(input_value(page, "csrf_token"), None);
    }

    #[test]
    fn finds_the_sign_in_url_in_an_instruction() {
        let text = "Open http://127.0.0.1:8080/.pomerium/sign_in?user_code=abc \n";
        assert_eq!(
            first_url(text),
            Some("http://127.0.0.1:8080/.pomerium/sign_in?user_code=abc")
        );
        assert_eq!(first_url("no link"), None);
    }
}
