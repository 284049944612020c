//! Approving an OAuth device code (RFC 8628) with the local key: the user of a
//! TV or a command-line tool reads a code there and approves it here, where the
//! key is (docs/oidc.md, "Device grant").

use ed25519_dalek::SigningKey;
use serde::Deserialize;

use super::{ClientError, origin_of, read_json};
use keygate_core::challenge;
use keygate_core::identity::Identity;
use keygate_core::time::UnixTime;

/// What the provider says a device code asks for, before the key signs.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceRequest {
    pub challenge: String,
    /// The client's name.
    pub client: String,
    pub scope: String,
}

/// The provider's answer to an approval or a denial.
#[derive(Debug, Clone, Deserialize)]
pub struct DeviceDecision {
    pub approved: bool,
    #[serde(default)]
    pub client: Option<String>,
    #[serde(default)]
    pub scope: Option<String>,
}

/// Asks the provider at `issuer` what `user_code` is for, and a challenge for `key`.
pub async fn device_request(
    issuer: &str,
    key: &SigningKey,
    user_code: &str,
) -> Result<DeviceRequest, ClientError> {
    let base = issuer.trim_end_matches('/');
    let res = reqwest::Client::new()
        .post(format!("{base}/oauth/device/challenge"))
        .json(&serde_json::json!({
            "user_code": user_code,
            "pubkey": Identity::from(key).to_string(),
        }))
        .send()
        .await
        .map_err(|_| ClientError::Connect(base.to_owned()))?;
    read_json(res).await
}

/// Signs the challenge of `request` (after checking it names the issuer's origin
/// and this key) and approves (or denies) the device code.
pub async fn device_decide(
    issuer: &str,
    key: &SigningKey,
    user_code: &str,
    request: &DeviceRequest,
    approve: bool,
    now: UnixTime,
) -> Result<DeviceDecision, ClientError> {
    let identity = Identity::from(key);
    let origin = origin_of(issuer)?;
    challenge::check_before_signing(&request.challenge, &origin, &identity, now)
        .map_err(ClientError::Refused)?;
    let base = issuer.trim_end_matches('/');
    let res = reqwest::Client::new()
        .post(format!("{base}/oauth/device/approve"))
        .json(&serde_json::json!({
            "user_code": user_code,
            "pubkey": identity.to_string(),
            "challenge": request.challenge,
            "sig": challenge::sign(key, &request.challenge),
            "approve": approve,
        }))
        .send()
        .await
        .map_err(|_| ClientError::Connect(base.to_owned()))?;
    read_json(res).await
}
