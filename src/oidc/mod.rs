//! roster as an OpenID Connect provider for the people it manages, served by `roster run`
//! under `--issuer-url` on the portal's port: discovery, keys, the authorization endpoint
//! with its sign-in page, the token endpoint and userinfo.

pub mod keys;
