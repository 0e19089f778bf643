//! Who may do what: access tokens, client secrets, and the rules that bind an agent's
//! credentials to its own Agents.
//!
//! Everything here works on values handed in (a token, a `ClientApplication` resource); nothing
//! reads the store, so the store can use the secret hashing without a circle.

mod access;
mod key;
mod logins;
mod secrets;
mod throttle;
mod tokens;

pub use access::{ALLOWED_AGENT_EXTENSION, TENANT_SCOPE_EXTENSION};
pub(crate) use access::{agent_may, bound_agents, may_act_as, tenant_scope, tenant_sees};
pub use key::KeyError;
pub(crate) use key::{decode_key, load_or_create_key, random_key};
pub(crate) use logins::{LoginError, Logins};
pub use secrets::{MIN_SECRET_LEN, PBKDF2_ITERATIONS};
pub(crate) use secrets::{generate_secret, hash_secret, is_hashed};
pub use throttle::LoginLimits;
pub use tokens::{Claims, TOKEN_TTL_SECS, TokenError, Tokens};
