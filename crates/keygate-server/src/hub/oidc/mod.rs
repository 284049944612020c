#[allow(dead_code)] // until the OIDC routes use it
pub(crate) mod keys;
