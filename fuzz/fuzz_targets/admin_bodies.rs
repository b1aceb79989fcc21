//! Every admin request body of `cloro_auth_core::wire` on arbitrary bytes,
//! read as the server reads them (`serde_path_to_error` over `serde_json`,
//! then the end of input checked): never a panic; the path-tracking reader
//! accepts exactly what plain `serde_json` accepts, with the same value;
//! and whatever is accepted serialises to JSON that parses back equal and
//! serialises to the same bytes again.

#![no_main]

use std::fmt::Debug;

use cloro_auth_core::wire::{
    CreateKeyRequest, CreateWebhookRequest, RevokeKeyRequest, RevokeLeakedRequest,
    RotateKeyRequest, SetPlanRequest, UpdateKeyRequest,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|body: &[u8]| {
    round_trip::<CreateKeyRequest>(body);
    round_trip::<UpdateKeyRequest>(body);
    round_trip::<RevokeKeyRequest>(body);
    round_trip::<RotateKeyRequest>(body);
    round_trip::<SetPlanRequest>(body);
    round_trip::<RevokeLeakedRequest>(body);
    round_trip::<CreateWebhookRequest>(body);
});

/// The server's `parse_body`: the error's path and message are built too,
/// since the server puts them in `details.field`.
fn server_parse<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut deserializer) {
        Ok(value) => deserializer.end().ok().map(|()| value),
        Err(error) => {
            let _ = (error.path().to_string(), error.inner().to_string());
            None
        }
    }
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + Debug>(body: &[u8]) {
    let parsed = server_parse::<T>(body);
    let plain = serde_json::from_slice::<T>(body).ok();
    assert_eq!(parsed, plain, "serde_path_to_error and serde_json disagree");
    let Some(value) = parsed else {
        return;
    };
    let _ = format!("{value:?}");
    let json = serde_json::to_vec(&value).expect("an accepted body does not serialise");
    let again = server_parse::<T>(&json).unwrap_or_else(|| {
        panic!(
            "{value:?} serialises to {:?}, refused",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(
        again,
        value,
        "{:?} reads back different",
        String::from_utf8_lossy(&json)
    );
    assert_eq!(
        serde_json::to_vec(&again).ok(),
        Some(json),
        "serialising is not stable"
    );
}
