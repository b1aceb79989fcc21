//! Form bodies (`application/x-www-form-urlencoded`), read as strictly as
//! the admin API reads JSON: a bounded size, only the fields a form has,
//! each at most once, UTF-8.

use bytes::Bytes;
use cloro_auth_core::ErrorCode;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::Refused;
use cloro_guard::BoxError;

/// No form of ours is near this; the cap only bounds what a client can
/// make the server hold.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// A form's fields.
#[derive(Debug, Default)]
pub(crate) struct Form {
    fields: Vec<(String, String)>,
}

impl Form {
    /// Reads and parses the body, keeping only `allowed` fields (and the
    /// CSRF token every form has).
    pub(crate) async fn read<B>(body: B, allowed: &[&str]) -> Result<Form, Refused>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(error) if error.is::<LengthLimitError>() => {
                return Err(invalid(format!(
                    "the form is larger than {MAX_FORM_BYTES} bytes"
                )));
            }
            Err(_) => return Err(invalid("the form could not be read; send it again")),
        };
        Self::parse(&bytes, allowed)
    }

    /// Parses a form body (see [`Form::read`]).
    pub(crate) fn parse(bytes: &[u8], allowed: &[&str]) -> Result<Form, Refused> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for (name, value) in form_urlencoded::parse(bytes) {
            if name != "csrf" && !allowed.contains(&name.as_ref()) {
                return Err(invalid(format!(
                    "the form has a field `{}` this page does not take",
                    cloro_auth_core::redact_keys_in(&name)
                )));
            }
            if fields.iter().any(|(seen, _)| *seen == name) {
                return Err(invalid(format!("the field `{name}` was sent twice")));
            }
            fields.push((name.into_owned(), value.into_owned()));
        }
        // form_urlencoded replaces bad UTF-8 by U+FFFD; a form of ours never
        // holds one, so it is refused rather than half-read.
        if fields
            .iter()
            .any(|(name, value)| name.contains('\u{fffd}') || value.contains('\u{fffd}'))
        {
            return Err(invalid("the form is not valid UTF-8"));
        }
        Ok(Form { fields })
    }

    /// A field's value, if the form has it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A field's value with surrounding spaces trimmed; empty counts as
    /// absent.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.get(name)
            .map(str::trim)
            .filter(|text| !text.is_empty())
    }
}

pub(crate) fn invalid(message: impl Into<String>) -> Refused {
    Refused::new(ErrorCode::InvalidRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_read_strictly() {
        let form = Form::parse(b"name=a+b&csrf=x&grace=3600", &["name", "grace"]).unwrap();
        assert_eq!(form.get("name"), Some("a b"));
        assert_eq!(form.get("grace"), Some("3600"));
        assert_eq!(form.get("csrf"), Some("x"));
        assert_eq!(form.text("missing"), None);
        for bad in [
            &b"name=a&name=b"[..],
            b"colour=red",
            b"name=%ff",
            b"name%ff=a",
        ] {
            assert!(Form::parse(bad, &["name"]).is_err(), "{bad:?}");
        }
        let blank = Form::parse(b"name=+++", &["name"]).unwrap();
        assert_eq!(blank.text("name"), None);
    }
}
