//! JSON Schemas of the wire types (feature `schema`): the OpenAPI
//! document's `components.schemas` are generated from these, so a field's
//! type, its enum, its bounds and whether it is required cannot drift from
//! the code that reads and writes it. `cargo xtask openapi` writes them
//! into `crates/cloro-server/openapi.json`; a server test fails when the
//! committed document differs.
//!
//! Requests are described as the server reads them (serde's deserialize
//! side: a field with a default is optional), answers as the server writes
//! them (every field it always sends is required). A type that appears on
//! both sides must come out the same, or generation fails.

use alloc::borrow::Cow;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};

use super::*;
use crate::error::ErrorCode;
use crate::key::{KEY_LEN, PREFIX_LEN, REDACTED_RANDOM_DIGITS};

/// The schema of a `jiff::Timestamp` on the wire: an RFC 3339 string. (The
/// orphan rule keeps us from implementing `JsonSchema` for jiff's type, so
/// fields name this one with `schemars(with = …)`.)
pub(crate) struct Rfc3339;

impl JsonSchema for Rfc3339 {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Rfc3339".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "An RFC 3339 timestamp."
        })
    }
}

impl<T: JsonSchema> JsonSchema for Patch<T> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        format!("Patch_{}", T::schema_name()).into()
    }

    /// A merge-patch field is `null` or a value; absence is the field's
    /// `default`, so it is never required.
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        <Option<T>>::json_schema(generator)
    }
}

impl JsonSchema for ErrorCode {
    fn schema_name() -> Cow<'static, str> {
        "ErrorCode".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        json_schema!({
            "type": "string",
            "enum": codes,
            "description": "The SPEC §4 error code: the stable, machine-readable part of an error."
        })
    }
}

/// A key's `name`: no control character (C0, DEL or C1), as
/// `char::is_control` has them.
pub(crate) const NO_CONTROL_CHARACTERS: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";

/// A key's `metadata`: at most 32 labels of 1 to 64 characters, each
/// with a value of at most 512.
pub(crate) fn metadata(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": limits::MAX_METADATA_ENTRIES,
        "propertyNames": {"minLength": 1, "maxLength": limits::MAX_METADATA_KEY_CHARS},
        "additionalProperties": {"type": "string", "maxLength": limits::MAX_METADATA_VALUE_CHARS},
    })
}

/// `metadata` in a merge patch: `null` clears all labels and a `null`
/// value removes its label; how many labels remain is known only after
/// the merge, so no `maxProperties` here.
pub(crate) fn metadata_patch(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["object", "null"],
        "propertyNames": {"minLength": 1, "maxLength": limits::MAX_METADATA_KEY_CHARS},
        "additionalProperties": {
            "type": ["string", "null"],
            "maxLength": limits::MAX_METADATA_VALUE_CHARS,
        },
    })
}

/// A plaintext key, as `ApiKey` makes them.
pub(crate) fn plaintext_key_pattern() -> String {
    format!("^sk_(live|test)_[0-9a-f]{{{}}}$", KEY_LEN - PREFIX_LEN)
}

/// A key's redacted start, as `ApiKey::redacted` shows it.
pub(crate) fn redacted_key_pattern() -> String {
    format!(r"^sk_(live|test)_[0-9a-f]{{{REDACTED_RANDOM_DIGITS}}}\.\.\.$")
}

/// Why the schemas could not be generated.
#[derive(Debug)]
pub struct SchemaError(String);

impl core::error::Error for SchemaError {}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Every named schema of the API, by name, as `components.schemas` holds
/// them (references point at `#/components/schemas/…`).
///
/// # Errors
/// When a type shared by requests and answers comes out differently on
/// the two sides (the document could not say which it means).
pub fn openapi_schemas() -> Result<Map<String, Value>, SchemaError> {
    let mut requests = generator(Contract::Deserialize);
    requests.subschema_for::<CreateKeyRequest>();
    requests.subschema_for::<UpdateKeyRequest>();
    requests.subschema_for::<RevokeKeyRequest>();
    requests.subschema_for::<RotateKeyRequest>();
    requests.subschema_for::<CreditsRequest>();
    requests.subschema_for::<SetPlanRequest>();
    requests.subschema_for::<RevokeLeakedRequest>();
    requests.subschema_for::<LeakedToken>();
    requests.subschema_for::<CreateWebhookRequest>();
    requests.subschema_for::<CreateAdminTokenRequest>();

    let mut answers = generator(Contract::Serialize);
    answers.subschema_for::<ErrorBody>();
    answers.subschema_for::<KeyInfo>();
    answers.subschema_for::<CreateKeyResponse>();
    answers.subschema_for::<RotateKeyResponse>();
    answers.subschema_for::<ListKeysResponse>();
    answers.subschema_for::<ListAuditResponse>();
    answers.subschema_for::<PlansResponse>();
    answers.subschema_for::<AccountInfo>();
    answers.subschema_for::<HealthResponse>();
    answers.subschema_for::<AccountQuotaResponse>();
    answers.subschema_for::<RevokeLeakedResponse>();
    answers.subschema_for::<LeakFeedback>();
    answers.subschema_for::<WebhookInfo>();
    answers.subschema_for::<CreateWebhookResponse>();
    answers.subschema_for::<ListWebhooksResponse>();
    answers.subschema_for::<ListDeliveriesResponse>();
    answers.subschema_for::<KeyUsageResponse>();
    answers.subschema_for::<AccountUsageResponse>();
    answers.subschema_for::<ListAdminTokensResponse>();
    answers.subschema_for::<CreateAdminTokenResponse>();
    answers.subschema_for::<PortalSessionResponse>();

    let mut schemas = answers.take_definitions(true);
    for (name, schema) in requests.take_definitions(true) {
        match schemas.get(&name) {
            Some(answer) if *answer != schema => {
                return Err(SchemaError(format!(
                    "`{name}` is read differently from how it is written; give one side \
                     a type of its own"
                )));
            }
            _ => {
                schemas.insert(name, schema);
            }
        }
    }
    for schema in schemas.values_mut() {
        tidy(schema);
    }
    Ok(schemas)
}

fn generator(contract: Contract) -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas/".into();
            settings.meta_schema = None;
            settings.contract = contract;
        })
        .into_generator()
}

/// Rewrites what schemars writes in a form JSON Schema tools read more
/// simply, everywhere in `value`: integer widths as bounds, documented
/// unit variants as one `enum`.
fn tidy(value: &mut Value) {
    match value {
        Value::Object(object) => {
            plain_integer(object);
            enum_of_constants(object);
            if let Some(Value::String(description)) = object.get_mut("description") {
                *description = unwrapped(description);
            }
            object.values_mut().for_each(tidy);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy),
        _ => {}
    }
}

/// A doc comment as one line per paragraph (list items keep theirs): the
/// line breaks are only where the source wrapped, and a reader of the
/// document should not see them.
fn unwrapped(text: &str) -> String {
    let paragraphs: Vec<String> = text
        .split("\n\n")
        .map(|paragraph| {
            let mut joined = String::new();
            for line in paragraph.lines() {
                if !joined.is_empty() {
                    joined.push(if line.starts_with("- ") { '\n' } else { ' ' });
                }
                joined.push_str(line.trim());
            }
            joined
        })
        .collect();
    paragraphs.join("\n\n")
}

/// schemars marks Rust integer widths with formats JSON Schema does not
/// define (`uint32`, `int64`, …). Each becomes the bound it implies, where
/// no tighter bound was given, and the format goes.
fn plain_integer(object: &mut Map<String, Value>) {
    let format = object.get("format").and_then(Value::as_str);
    let maximum: Option<u64> = match format {
        Some("uint8") => Some(u8::MAX.into()),
        Some("uint16") => Some(u16::MAX.into()),
        Some("uint32") => Some(u32::MAX.into()),
        _ => None,
    };
    if matches!(
        format,
        Some("uint8" | "uint16" | "uint32" | "uint64" | "uint" | "int32" | "int64")
    ) {
        object.remove("format");
        if let Some(maximum) = maximum {
            object.entry("maximum").or_insert(maximum.into());
        }
    }
}

/// An enum whose unit variants have doc comments comes out as a `oneOf`
/// of one `const` each; this makes it `"enum": [...]` and moves the
/// variants' descriptions into a list in the enum's own.
fn enum_of_constants(object: &mut Map<String, Value>) {
    let Some(Value::Array(variants)) = object.get("oneOf") else {
        return;
    };
    let mut names = Vec::new();
    let mut lines = Vec::new();
    for variant in variants {
        let Some(variant) = variant.as_object() else {
            return;
        };
        let only_a_constant = variant
            .keys()
            .all(|key| matches!(key.as_str(), "type" | "const" | "description"));
        let (Some(Value::String(name)), true) = (variant.get("const"), only_a_constant) else {
            return;
        };
        if let Some(Value::String(description)) = variant.get("description") {
            lines.push(format!("- `{name}`: {description}"));
        }
        names.push(Value::String(name.clone()));
    }
    object.remove("oneOf");
    object.insert("type".into(), "string".into());
    object.insert("enum".into(), Value::Array(names));
    if !lines.is_empty() {
        let mut description = object
            .get("description")
            .and_then(Value::as_str)
            .map(|text| format!("{text}\n\n"))
            .unwrap_or_default();
        description.push_str(&lines.join("\n"));
        object.insert("description".into(), description.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_is_generated_and_consistent() {
        let schemas = openapi_schemas().unwrap();
        for name in [
            "CreateKeyRequest",
            "KeyInfo",
            "ErrorBody",
            "ErrorCode",
            "KeyStatus",
        ] {
            assert!(schemas.contains_key(name), "{name}");
        }
        // Answers: every field the server always writes is required.
        let required = schemas["KeyInfo"]["required"].as_array().unwrap();
        assert!(required.contains(&"expires_at".into()));
        // Requests: a field with a default is not.
        assert!(
            schemas["CreateKeyRequest"]["required"] == serde_json::json!(["account_id", "name"])
        );
        // The bounds come from the constants the admin API checks.
        let name = &schemas["CreateKeyRequest"]["properties"]["name"];
        assert_eq!(name["maxLength"], limits::MAX_NAME_CHARS);
        let grace = &schemas["RotateKeyRequest"]["properties"]["grace_period_seconds"];
        assert_eq!(grace["maximum"], limits::MAX_GRACE_SECONDS);
        // A merge patch may not clear `name`, so `null` is not offered.
        assert_eq!(
            schemas["UpdateKeyRequest"]["properties"]["name"]["type"],
            "string"
        );
    }

    #[test]
    fn tidying_leaves_plain_json_schema() {
        let mut schema = serde_json::json!({
            "oneOf": [
                {"type": "string", "const": "a", "description": "First."},
                {"type": "string", "const": "b"}
            ],
            "description": "Two\nlines.",
            "properties": {"n": {"type": "integer", "format": "uint32", "minimum": 0}}
        });
        tidy(&mut schema);
        assert_eq!(
            schema,
            serde_json::json!({
                "type": "string",
                "enum": ["a", "b"],
                "description": "Two lines.\n\n- `a`: First.",
                "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 4294967295_u32}}
            })
        );
    }
}
