//! The gateway's bounded in-memory tables: verified tokens (so that a token's
//! signature is checked once, not on every request), the assertions minted for
//! them (so that one is not signed on every request either), and the values
//! upstreams have exported into sessions. Neither is a source of truth: the revocation feed is
//! checked on every request, cached or not, and a session whose values were evicted
//! just lacks them until an upstream sets them again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use hyper::header::HeaderValue;

use crate::time::UnixTime;
use crate::token::{AccessClaims, MAX_LEEWAY};

/// Longest exported value kept; longer ones are dropped.
pub const MAX_VALUE_LEN: usize = 1024;

/// Tokens that passed full verification, with their claims.
pub struct TokenCache {
    capacity: usize,
    map: RwLock<HashMap<Box<str>, Arc<AccessClaims>>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity: capacity.max(1),
            map: RwLock::default(),
        }
    }

    /// The claims of a cached token still inside its lifetime.
    pub fn get(&self, token: &str, now: UnixTime) -> Option<Arc<AccessClaims>> {
        let map = self.map.read().ok()?;
        map.get(token).filter(|c| now < c.exp + MAX_LEEWAY).cloned()
    }

    pub fn insert(&self, token: &str, claims: Arc<AccessClaims>, now: UnixTime) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if map.len() >= self.capacity {
            map.retain(|_, c| now < c.exp + MAX_LEEWAY);
            if map.len() >= self.capacity {
                // Still full of live tokens: start over rather than track recency on
                // the read path. The cost is one signature check per token.
                map.clear();
            }
        }
        map.insert(token.into(), claims);
    }

    pub fn len(&self) -> usize {
        self.map.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One assertion per (token, route), reused while it has more than half of its
/// lifetime left and the session values it carries have not changed.
pub struct AssertionCache {
    capacity: usize,
    map: RwLock<HashMap<Box<str>, Vec<Option<CachedAssertion>>>>,
}

#[derive(Clone)]
struct CachedAssertion {
    value: HeaderValue,
    fresh_until: UnixTime,
    values_hash: u64,
    expires_at: UnixTime,
}

impl AssertionCache {
    pub fn new(capacity: usize) -> Self {
        AssertionCache {
            capacity: capacity.max(1),
            map: RwLock::default(),
        }
    }

    /// The cached assertion of token `jti` (empty for public routes) on `route`,
    /// if still fresh and minted with the same session values.
    pub fn get(
        &self,
        jti: &str,
        route: usize,
        values_hash: u64,
        now: UnixTime,
    ) -> Option<HeaderValue> {
        let map = self.map.read().ok()?;
        let a = map.get(jti)?.get(route)?.as_ref()?;
        (now < a.fresh_until && a.values_hash == values_hash).then(|| a.value.clone())
    }

    /// Keeps `value` (valid from `iat` to `exp`) for reuse until half its lifetime.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        jti: &str,
        route: usize,
        routes: usize,
        values_hash: u64,
        value: HeaderValue,
        iat: UnixTime,
        exp: UnixTime,
    ) {
        let Ok(mut map) = self.map.write() else {
            return;
        };
        if !map.contains_key(jti) && map.len() >= self.capacity {
            map.retain(|_, slots| slots.iter().flatten().any(|a| iat < a.expires_at));
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        let slots = map.entry(jti.into()).or_insert_with(|| vec![None; routes]);
        if let Some(slot) = slots.get_mut(route) {
            *slot = Some(CachedAssertion {
                value,
                fresh_until: iat + (exp - iat) / 2,
                values_hash,
                expires_at: exp,
            });
        }
    }
}

/// A fingerprint of a session's values, to tell whether an assertion carries the
/// current ones.
pub fn values_hash(values: &[(String, HeaderValue)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (k, v) in values {
        k.hash(&mut h);
        v.as_bytes().hash(&mut h);
    }
    h.finish()
}

struct SessionEntry {
    values: BTreeMap<String, HeaderValue>,
    last_used: u64,
}

/// Values exported by upstreams, per session id; at most `capacity` sessions, the
/// least recently used one evicted first.
pub struct SessionValues {
    capacity: usize,
    inner: Mutex<SessionTable>,
}

#[derive(Default)]
struct SessionTable {
    map: HashMap<String, SessionEntry>,
    tick: u64,
}

impl SessionValues {
    pub fn new(capacity: usize) -> Self {
        SessionValues {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// The session's values (empty when it has none).
    pub fn get(&self, sid: &str) -> Vec<(String, HeaderValue)> {
        let Ok(mut t) = self.inner.lock() else {
            return Vec::new();
        };
        t.tick += 1;
        let tick = t.tick;
        match t.map.get_mut(sid) {
            Some(e) => {
                e.last_used = tick;
                e.values
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// Stores values for `sid`; an empty value removes that name. Values longer
    /// than [`MAX_VALUE_LEN`] are ignored.
    pub fn set(&self, sid: &str, values: Vec<(&str, HeaderValue)>) {
        if values.is_empty() {
            return;
        }
        let Ok(mut t) = self.inner.lock() else {
            return;
        };
        t.tick += 1;
        let tick = t.tick;
        if !t.map.contains_key(sid) && t.map.len() >= self.capacity {
            let oldest = t
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                t.map.remove(&k);
            }
        }
        let entry = t.map.entry(sid.to_owned()).or_insert_with(|| SessionEntry {
            values: BTreeMap::new(),
            last_used: tick,
        });
        entry.last_used = tick;
        for (name, value) in values {
            if value.is_empty() {
                entry.values.remove(name);
            } else if value.len() <= MAX_VALUE_LEN {
                entry.values.insert(name.to_owned(), value);
            }
        }
        if entry.values.is_empty() {
            t.map.remove(sid);
        }
    }

    /// Forgets a session (revoked).
    pub fn remove(&self, sid: &str) {
        if let Ok(mut t) = self.inner.lock() {
            t.map.remove(sid);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|t| t.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: UnixTime) -> Arc<AccessClaims> {
        Arc::new(AccessClaims {
            iss: "i".into(),
            sub: "s".into(),
            aud: "a".into(),
            iat: 0,
            nbf: 0,
            exp,
            jti: "j".into(),
            sid: "sid".into(),
            scope: String::new(),
            client_id: None,
            role: None,
            acct: None,
            acr: None,
            amr: None,
            cnf: None,
        })
    }

    #[test]
    fn token_cache_is_bounded_and_honours_expiry() {
        let c = TokenCache::new(2);
        c.insert("a", claims(100), 0);
        c.insert("b", claims(1000), 0);
        assert!(c.get("a", 100).is_some(), "leeway");
        assert!(c.get("a", 100 + MAX_LEEWAY).is_none());
        c.insert("c", claims(1000), 200);
        assert_eq!(c.len(), 2, "the expired one made room");
        c.insert("d", claims(1000), 200);
        assert_eq!(c.len(), 1, "full of live tokens: cleared");
        assert!(c.get("d", 200).is_some());
    }

    #[test]
    fn assertions_are_reused_for_half_their_life_with_the_same_values() {
        let c = AssertionCache::new(1);
        let v = HeaderValue::from_static("a.b.c");
        c.insert("jti1", 1, 2, 7, v.clone(), 100, 160);
        assert_eq!(c.get("jti1", 1, 7, 129), Some(v.clone()));
        assert_eq!(c.get("jti1", 1, 7, 130), None, "half its life gone");
        assert_eq!(c.get("jti1", 1, 8, 101), None, "other session values");
        assert_eq!(c.get("jti1", 0, 7, 101), None, "other route");
        c.insert("jti2", 0, 2, 7, v.clone(), 100, 160);
        assert_eq!(c.get("jti1", 1, 7, 101), None, "bounded: evicted");
        assert_eq!(c.get("jti2", 0, 7, 101), Some(v));
    }

    #[test]
    fn session_values_evict_the_least_recently_used() {
        let v = SessionValues::new(2);
        let hv = HeaderValue::from_static;
        v.set("s1", vec![("a", hv("1"))]);
        v.set("s2", vec![("a", hv("2"))]);
        assert_eq!(v.get("s1").len(), 1);
        v.set("s3", vec![("a", hv("3"))]);
        assert_eq!(v.len(), 2);
        assert!(v.get("s2").is_empty(), "s2 was the least recently used");
        assert_eq!(v.get("s1")[0].1, "1");
        v.set("s1", vec![("a", hv(""))]);
        assert!(v.get("s1").is_empty(), "an empty value removes it");
        let long = HeaderValue::from_str(&"x".repeat(MAX_VALUE_LEN + 1)).unwrap();
        v.set("s3", vec![("b", long)]);
        assert_eq!(v.get("s3").len(), 1, "too long: ignored");
        v.remove("s3");
        assert!(v.is_empty());
    }
}
