//! RFC 7662 token introspection.

use super::Hub;
use crate::error::Error;
use crate::http::Credential;
use crate::store::ApiKeyRecord;

impl Hub {
    /// RFC 7662 introspection for the app `caller`, answered from live state: a
    /// revoked session is inactive at once. A token issued to another app is
    /// inactive too, unless `caller` may introspect any app's tokens
    /// (docs/tenancy.md). Store failures are errors, never "inactive".
    pub async fn introspect(
        &self,
        caller: &ApiKeyRecord,
        token: &str,
    ) -> Result<serde_json::Value, Error> {
        match self
            .authenticate_user(Credential::for_introspection(token))
            .await
        {
            Ok((c, _)) if c.aud != caller.id && !caller.introspect_any => {
                Ok(serde_json::json!({ "active": false }))
            }
            Ok((c, _)) => {
                if c.aud != caller.id {
                    tracing::info!(key = %caller.id, aud = %c.aud, "introspection of another app's token (introspect_any)");
                }
                let mut v = serde_json::to_value(&c).map_err(|_| Error::Internal)?;
                v["active"] = true.into();
                // RFC 9449 §6.2: a key-bound token's type is DPoP.
                v["token_type"] = if c.cnf.is_some() {
                    keygate_core::dpop::TOKEN_TYPE
                } else {
                    "access_token"
                }
                .into();
                Ok(v)
            }
            Err(e @ (Error::Unavailable | Error::Internal)) => Err(e),
            Err(_) => Ok(serde_json::json!({ "active": false })),
        }
    }
}
