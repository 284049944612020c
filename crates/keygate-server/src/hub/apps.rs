//! Apps: authenticating an app by its API-key signature.

use super::Hub;
use crate::apikey::{self, ApiKeyError, ApiSecret};
use crate::error::Error;
use crate::store::ApiKeyRecord;

const DEV_KEY_REFUSED: &str =
    "this is a development key: it works only on a Hub started with --dev (docs/dev-mode.md)";

impl Hub {
    /// Checks an app's API-key signature headers; every failure is the same 401.
    pub async fn authenticate_app(
        &self,
        key_id: Option<&str>,
        msg: Option<&str>,
        sig: Option<&str>,
    ) -> Result<ApiKeyRecord, Error> {
        let (Some(key_id), Some(msg), Some(sig)) = (key_id, msg, sig) else {
            return Err(ApiKeyError.into());
        };
        if !apikey::valid_key_id(key_id) {
            return Err(ApiKeyError.into());
        }
        // The same work whether the key exists or not: one lookup (whose store
        // unseals a dummy secret when it finds none) and one MAC, here against a
        // dummy secret, so that timing does not tell known key ids from unknown.
        let found = self.store.api_key(key_id).await?;
        apikey::work::note(apikey::work::Step::Lookup);
        let live = found.filter(|k| k.revoked_at.is_none());
        let secret = live.as_ref().map_or(&self.dummy_secret, |k| &k.secret);
        let checked = secret.verify(msg, sig, self.now());
        match (live, checked) {
            (Some(key), Ok(())) => self.usable(key),
            _ => Err(ApiKeyError.into()),
        }
    }

    /// Refuses a development key unless this Hub runs with `--dev`; only after
    /// the key has been authenticated, so no one else learns that it is one.
    pub(super) fn usable(&self, key: ApiKeyRecord) -> Result<ApiKeyRecord, Error> {
        if key.dev && !self.config.dev {
            return Err(Error::Forbidden(DEV_KEY_REFUSED.into()));
        }
        Ok(key)
    }

    /// A key that exists and is not revoked.
    pub async fn live_api_key(&self, key_id: &str) -> Result<ApiKeyRecord, Error> {
        match self.store.api_key(key_id).await? {
            Some(k) if k.revoked_at.is_none() => Ok(k),
            _ => Err(ApiKeyError.into()),
        }
    }

    /// Checks that `secret` is the secret of the live key `key_id` (for a Provider
    /// configured from `.env` in the same process).
    pub async fn api_key_with_secret(
        &self,
        key_id: &str,
        secret: &ApiSecret,
    ) -> Result<ApiKeyRecord, Error> {
        let key = self.live_api_key(key_id).await?;
        if bool::from(subtle::ConstantTimeEq::ct_eq(
            &key.secret.as_bytes()[..],
            &secret.as_bytes()[..],
        )) {
            self.usable(key)
        } else {
            Err(ApiKeyError.into())
        }
    }
}
