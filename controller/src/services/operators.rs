//! The people who operate the fleet: their accounts (argon2 password hashes in the store),
//! their API tokens for scripts, their console sessions, and the limit on failed logins.
//! Everything here fails closed: what cannot be checked is refused.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use argon2::{
    Argon2,
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
};
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::{
    lock,
    store::{ApiToken, Operator, Role, SharedStore, Store, StoreError},
};

/// How long a console session lasts from its login.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Failed logins allowed per name, and per address, within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: usize = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// The prefix of every API token, so that one pasted where it should not be is recognised.
pub const TOKEN_PREFIX: &str = "vigil_";

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("an operator name is 1 to 64 letters, digits, '.', '_' or '-': {0:?} is not")]
    BadName(String),
    #[error("no operator {0}")]
    Unknown(String),
    #[error("the system's random source failed")]
    Random,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Why a login or a token was refused. Said in the controller's log; the caller hears only
/// that it was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many failed logins; try again later")]
    RateLimited,
    #[error("wrong name or password")]
    BadCredentials,
    #[error("the token is unknown, malformed or revoked")]
    BadToken,
    #[error("the session is unknown or expired")]
    NoSession,
    #[error("the store could not be read")]
    Store,
}

/// Who is calling, once checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// The session's CSRF token (a cookie session); None for an API token.
    pub csrf: Option<String>,
}

fn random_hex(bytes: usize) -> Result<String, OperatorError> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| OperatorError::Random)?;
    Ok(crate::ca::hex(&buf))
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    crate::ca::hex(&sha2::Sha256::digest(text.as_bytes()))
}

/// Whether two secrets are equal, in a time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn check_name(name: &str) -> Result<(), OperatorError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(OperatorError::BadName(name.to_owned()))
    }
}

/// The argon2 hash (PHC string) of `password`, with a fresh salt.
pub fn hash_password(password: &str) -> Result<String, OperatorError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| OperatorError::Random)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| OperatorError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| OperatorError::Hash(e.to_string()))
}

/// Whether `password` is the one `hash` was made from. A hash that does not parse matches
/// nothing.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Makes operator `name` with `role` and a new one-time password, which is returned: the
/// store keeps only its hash.
pub fn add(
    store: &mut dyn Store,
    name: &str,
    role: Role,
) -> Result<(Operator, String), OperatorError> {
    check_name(name)?;
    let password = random_hex(16)?;
    let op = Operator {
        name: name.to_owned(),
        role,
        created_ns: crate::now_ns(),
        password_hash: hash_password(&password)?,
    };
    store.add_operator(&op)?;
    Ok((op, password))
}

/// Issues an API token for operator `name`: `vigil_<id>_<secret>`, shown once.
pub fn issue_token(store: &mut dyn Store, name: &str) -> Result<(ApiToken, String), OperatorError> {
    if store.operator(name)?.is_none() {
        return Err(OperatorError::Unknown(name.to_owned()));
    }
    let (id, secret) = (random_hex(8)?, random_hex(24)?);
    let token = ApiToken {
        id: id.clone(),
        operator: name.to_owned(),
        created_ns: crate::now_ns(),
        revoked: false,
        secret_hash: sha256_hex(&secret),
    };
    store.add_api_token(&token)?;
    Ok((token, format!("{TOKEN_PREFIX}{id}_{secret}")))
}

/// The operator an API token acts for: known, unrevoked, with a matching secret, and an
/// operator who still exists.
pub fn check_token(store: &dyn Store, presented: &str) -> Result<Caller, Refusal> {
    let (id, secret) = presented
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .ok_or(Refusal::BadToken)?;
    let token = store
        .api_token(id)
        .map_err(|_| Refusal::Store)?
        .ok_or(Refusal::BadToken)?;
    let matches = same_secret(&token.secret_hash, &sha256_hex(secret));
    if token.revoked || !matches {
        return Err(Refusal::BadToken);
    }
    let op = store
        .operator(&token.operator)
        .map_err(|_| Refusal::Store)?
        .ok_or(Refusal::BadToken)?;
    Ok(Caller {
        name: op.name,
        role: op.role,
        csrf: None,
    })
}

struct Session {
    name: String,
    role: Role,
    csrf: String,
    expires: Instant,
}

/// Console sessions (by the SHA-256 of their cookie) and recent failed logins. Held in the
/// controller's memory: a restart logs everyone out.
#[derive(Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

/// A new session: its cookie value and CSRF token.
pub struct NewSession {
    pub cookie: String,
    pub caller: Caller,
}

impl Sessions {
    /// Whether `key` (a name or an address) has failed too often of late.
    fn limited(&self, key: &str, now: Instant) -> bool {
        let mut f = lock(&self.failures);
        let Some(q) = f.get_mut(key) else {
            return false;
        };
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) > FAILURE_WINDOW)
        {
            q.pop_front();
        }
        q.len() >= MAX_FAILURES
    }

    fn failed(&self, keys: &[&str], now: Instant) {
        let mut f = lock(&self.failures);
        for k in keys {
            f.entry((*k).to_owned()).or_default().push_back(now);
        }
    }

    /// Checks a name and password (the hash check is slow by design: call it off the async
    /// runtime) and opens a session. Refused while the name or the address has had
    /// [`MAX_FAILURES`] failures within [`FAILURE_WINDOW`], even with the right password.
    pub fn login(
        &self,
        store: &SharedStore,
        name: &str,
        password: &str,
        address: &str,
    ) -> Result<NewSession, Refusal> {
        let now = Instant::now();
        let (name_key, addr_key) = (format!("name:{name}"), format!("addr:{address}"));
        if self.limited(&name_key, now) || self.limited(&addr_key, now) {
            return Err(Refusal::RateLimited);
        }
        let op = lock(store).operator(name).map_err(|_| Refusal::Store)?;
        // An unknown name costs the same hash as a known one.
        const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$\
                             0000000000000000000000000000000000000000000";
        let hash = op.as_ref().map_or(DECOY, |o| o.password_hash.as_str());
        let ok = verify_password(password, hash);
        let Some(op) = op.filter(|_| ok) else {
            self.failed(&[&name_key, &addr_key], now);
            return Err(Refusal::BadCredentials);
        };
        let (cookie, csrf) = (
            random_hex(32).map_err(|_| Refusal::Store)?,
            random_hex(16).map_err(|_| Refusal::Store)?,
        );
        let caller = Caller {
            name: op.name.clone(),
            role: op.role,
            csrf: Some(csrf.clone()),
        };
        let mut by_hash = lock(&self.by_hash);
        by_hash.retain(|_, s| s.expires > now);
        by_hash.insert(
            sha256_hex(&cookie),
            Session {
                name: op.name,
                role: op.role,
                csrf,
                expires: now + SESSION_TTL,
            },
        );
        Ok(NewSession { cookie, caller })
    }

    /// The caller of a session cookie, with the operator's role as the store has it now (an
    /// operator removed since is logged out).
    pub fn check(&self, store: &SharedStore, cookie: &str) -> Result<Caller, Refusal> {
        let key = sha256_hex(cookie);
        let (name, csrf) = {
            let mut by_hash = lock(&self.by_hash);
            match by_hash.get(&key) {
                Some(s) if s.expires > Instant::now() => (s.name.clone(), s.csrf.clone()),
                Some(_) => {
                    by_hash.remove(&key);
                    return Err(Refusal::NoSession);
                }
                None => return Err(Refusal::NoSession),
            }
        };
        match lock(store).operator(&name) {
            Ok(Some(op)) => {
                if let Some(s) = lock(&self.by_hash).get_mut(&key) {
                    s.role = op.role;
                }
                Ok(Caller {
                    name: op.name,
                    role: op.role,
                    csrf: Some(csrf),
                })
            }
            Ok(None) => {
                lock(&self.by_hash).remove(&key);
                Err(Refusal::NoSession)
            }
            Err(_) => Err(Refusal::Store),
        }
    }

    /// Ends a session; ending one that does not exist is not an error.
    pub fn logout(&self, cookie: &str) {
        lock(&self.by_hash).remove(&sha256_hex(cookie));
    }

    /// Ends every session of `name` (the operator was removed).
    pub fn end_all(&self, name: &str) {
        lock(&self.by_hash).retain(|_, s| s.name != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Sqlite;

    fn store() -> (tempfile::TempDir, SharedStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s: Box<dyn Store> = Box::new(Sqlite::open(&dir.path().join("c.db")).expect("open"));
        (dir, std::sync::Arc::new(std::sync::Mutex::new(s)))
    }

    #[test]
    fn a_password_logs_in_once_added_and_a_wrong_one_never() {
        let (_d, store) = store();
        let (op, password) = add(lock(&store).as_mut(), "ana", Role::Responder).expect("add");
        assert_eq!(op.role, Role::Responder);
        assert!(
            !op.password_hash.contains(&password),
            "only the hash is kept"
        );
        let s = Sessions::default();
        let new = s.login(&store, "ana", &password, "a").expect("login");
        assert_eq!(
            s.check(&store, &new.cookie).expect("session").role,
            Role::Responder
        );
        assert_eq!(
            s.login(&store, "ana", "wrong", "a").err(),
            Some(Refusal::BadCredentials)
        );
        assert_eq!(
            s.login(&store, "nobody", &password, "a").err(),
            Some(Refusal::BadCredentials)
        );
        s.logout(&new.cookie);
        assert_eq!(s.check(&store, &new.cookie), Err(Refusal::NoSession));
    }

    #[test]
    fn failed_logins_lock_the_name_even_for_the_right_password() {
        let (_d, store) = store();
        let (_, password) = add(lock(&store).as_mut(), "bo", Role::Viewer).expect("add");
        let s = Sessions::default();
        for i in 0..MAX_FAILURES {
            let addr = format!("10.0.0.{i}");
            assert_eq!(
                s.login(&store, "bo", "guess", &addr).err(),
                Some(Refusal::BadCredentials)
            );
        }
        assert_eq!(
            s.login(&store, "bo", &password, "10.9.9.9").err(),
            Some(Refusal::RateLimited)
        );
    }

    #[test]
    fn a_token_acts_for_its_operator_until_revoked_or_the_operator_is_removed() {
        let (_d, store) = store();
        add(lock(&store).as_mut(), "ci", Role::Admin).expect("add");
        let (t, text) = issue_token(lock(&store).as_mut(), "ci").expect("token");
        assert_eq!(
            check_token(lock(&store).as_ref(), &text).expect("ok").role,
            Role::Admin
        );
        let forged = format!("{TOKEN_PREFIX}{}_{}", t.id, "0".repeat(48));
        assert_eq!(
            check_token(lock(&store).as_ref(), &forged),
            Err(Refusal::BadToken)
        );
        assert!(lock(&store).revoke_api_token(&t.id).expect("revoke"));
        assert_eq!(
            check_token(lock(&store).as_ref(), &text),
            Err(Refusal::BadToken)
        );
        let (_, again) = issue_token(lock(&store).as_mut(), "ci").expect("token");
        assert!(lock(&store).remove_operator("ci").expect("remove"));
        assert_eq!(
            check_token(lock(&store).as_ref(), &again),
            Err(Refusal::BadToken)
        );
        assert!(matches!(
            add(lock(&store).as_mut(), "bad name", Role::Viewer),
            Err(OperatorError::BadName(_))
        ));
    }
}
